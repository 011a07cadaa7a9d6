"""Write a :class:`FusionReport` as a self-contained HTML page, Markdown and metrics.json.

Every file is written atomically (a temporary file in the same folder, then
:func:`os.replace`), so a reader never sees half a report and an interrupted run leaves
the previous one intact.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from modelfusion.columns import format_bytes, format_value, header, is_missing
from modelfusion.errors import ArgumentTypeError
from modelfusion.evaluation.comparison import comparison_sentence
from modelfusion.evaluation.diversity import diversity_summary
from modelfusion.files import write_bytes_atomic
from modelfusion.report import plots
from modelfusion.report.data import FusionReport

__all__ = ["format_value", "render_markdown_table", "summary_sentence", "write_report"]

_MEMBER_ORDER = [
    "name",
    "framework",
    "cv_mean",
    "cv_std",
    "accuracy",
    "nll",
    "ece",
    "brier",
    "macro_f1",
    "top5",
    "rmse",
    "mae",
    "r2",
    "weight",
    "latency_ms",
    "n_parameters",
    "file_size",
]
_STRATEGY_ORDER = [
    "name",
    "cv_mean",
    "cv_std",
    "accuracy",
    "nll",
    "ece",
    "brier",
    "macro_f1",
    "top5",
    "rmse",
    "mae",
    "r2",
    "latency_ms",
    "n_members_used",
]
_DEPLOYMENT_ORDER = [
    "name",
    "file",
    "file_size",
    "size_ratio",
    "accuracy",
    "delta_pp",
    "delta_pp_validation",
    "nll",
    "rmse",
    "latency_ms",
    "speedup",
]
_DISTILLATION_ORDER = [
    "name",
    "accuracy",
    "nll",
    "ece",
    "latency_b1_ms",
    "latency_b256_ms",
    "engine",
    "n_parameters",
    "file_size",
    "pareto",
]
_DISTILLATION_SENTENCE = (
    "One row per model on the test split: the best member, the fused ensemble (the teacher), the student "
    "trained on labels alone, the distilled student, the pruned and distilled student, and the distilled "
    "student's int8 graph. Latency is per sample, each model on the fastest of its engines at batch 256; "
    "'Pareto' marks the models no other model beats on both accuracy and batch-256 latency. The distilled "
    "student is the bundle in student/."
)
_HIDDEN = {"kind", "status"}  # bookkeeping columns of search rows, the same in every row
# (key, caption) in the order the figures appear
FIGURES = [
    ("strategy_comparison", "Test metric of every fused strategy and member, with 95% bootstrap intervals"),
    ("cv_scores", "Validation cross-validation scores of each strategy (bars: mean ± std, dots: folds)"),
    ("reliability", "Reliability diagram: best member vs the chosen fused model"),
    ("error_correlation", "How correlated the members' errors are on the test split"),
    ("weights", "How the chosen strategy relies on each member (see the notes for what the numbers are)"),
    ("deployment", "Exported graphs: file size and CPU throughput (ONNX Runtime), test accuracy"),
    ("deployment_breakdown", "Where each exported graph's bytes and kernel time go, member by member"),
    (
        "distillation",
        "Distillation: test accuracy against latency per sample, each model on its fastest engine "
        "(dashed: the Pareto front at batch 256)",
    ),
    ("confusion", "Confusion matrix of the chosen model on the test split (rows: true class)"),
    ("regression_fit", "The chosen model on the test split: predicted vs actual, and the residuals"),
]
#: The files :func:`write_report` writes besides ``figures/``.
REPORT_FILES = ("report.html", "report.md", "metrics.json")
_FIGURE_FUNCTIONS = {
    "strategy_comparison": plots.strategy_comparison_figure,
    "cv_scores": plots.cv_figure,
    "reliability": plots.reliability_figure,
    "error_correlation": plots.error_correlation_figure,
    "weights": plots.weights_figure,
    "deployment": plots.deployment_figure,
    "deployment_breakdown": plots.deployment_breakdown_figure,
    "distillation": plots.distillation_figure,
    "confusion": plots.confusion_figure,
    "regression_fit": plots.regression_fit_figure,
}


def _columns(rows: Sequence[Mapping[str, Any]], preferred: Sequence[str]) -> list[str]:
    """Preferred columns that some row has, then any other scalar columns, in first-seen order."""
    present = [k for k in preferred if any(k in r for r in rows)]
    extra = dict.fromkeys(
        k
        for r in rows
        for k, v in r.items()
        if k not in preferred
        and k not in _HIDDEN
        and (v is None or isinstance(v, (str, int, float, bool, np.generic)))
    )
    return present + list(extra)


_BREAKDOWN_SENTENCE = (
    "Each member's share of every exported graph: the bytes its weights and tree attributes take "
    "in the file, and the time its kernels take on ONNX Runtime CPU (at the latency batch size). "
    "int8 shrinks and speeds up the members whose weights sit in MatMul, Gemm and Conv; tree "
    "ensembles, k-NN and the other scikit-learn members keep their precision."
)


def _breakdown_table(deployment: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, str]], list[str]]:
    """One row per member, one column per exported graph: "size (share) · time (share)"."""
    graphs = [r for r in deployment if r.get("breakdown")]
    if not graphs:
        return [], []
    rows: dict[str, dict[str, str]] = {}
    for graph in graphs:
        for part in graph["breakdown"]:
            cell = f"{format_bytes(part['bytes'])} ({100 * part['bytes_share']:.0f}%)"
            if part.get("ms") is not None:
                cell += f" · {format_value('latency_ms', part['ms'])} ms ({100 * part['time_share']:.0f}%)"
            rows.setdefault(part["member"], {"member": part["member"]})[graph["name"]] = cell
    return list(rows.values()), ["member", *(g["name"] for g in graphs)]


def _is_numeric_column(rows: Sequence[Mapping[str, Any]], key: str) -> bool:
    values = [r.get(key) for r in rows if not is_missing(r.get(key))]
    return bool(values) and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values
    )


def render_markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str | tuple[str, str]] | None = None,
    *,
    metric: str | None = None,
) -> str:
    """A GitHub-flavoured Markdown table of ``rows``, cells formatted by :func:`format_value`.

    columns : keys, or ``(key, header)`` pairs; default every key, in first-seen order.
    Numeric columns are right-aligned.

    Examples
    --------
    >>> print(render_markdown_table([{"name": "a", "accuracy": 0.91}], ["name", "accuracy"]))
    | name | accuracy |
    | :--- | ---: |
    | a | 91.00% |
    """
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    spec = [(c, header(c, metric=metric)) if isinstance(c, str) else (c[0], c[1]) for c in columns]

    def cell(text: str) -> str:
        return _md_text(text).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for _, h in spec) + " |",
        "| " + " | ".join("---:" if _is_numeric_column(rows, k) else ":---" for k, _ in spec) + " |",
    ]
    for r in rows:
        lines.append(
            "| " + " | ".join(cell(format_value(k, r.get(k), metric=metric)) for k, _ in spec) + " |"
        )
    return "\n".join(lines)


def _md_text(text: str) -> str:
    """Text safe inside Markdown: no raw HTML tags from member or strategy names."""
    return str(text).replace("<", "&lt;").replace(">", "&gt;")


# -- content shared by HTML and Markdown ---------------------------------------------------------
def summary_sentence(report: FusionReport) -> str:
    """One plain-text sentence: the chosen model against the member best at each headline metric."""

    return comparison_sentence(report.task, report.chosen, report.summary()["chosen_test"], report.members)


def _member_rows(report: FusionReport) -> list[dict[str, Any]]:
    rows = [dict(r) for r in report.members]
    if report.weights:
        for r in rows:
            r["weight"] = report.weights.get(r["name"])
    return rows


def _render_figures(report: FusionReport) -> list[tuple[str, str, bytes]]:
    """``(key, caption, png bytes)`` for every figure the report's data allows."""
    out = []
    for key, caption in FIGURES:
        fig = _FIGURE_FUNCTIONS[key](report)
        if fig is not None:
            out.append((key, caption, _png_bytes(fig)))
    return out


def _png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def _diversity(report: FusionReport) -> dict[str, Any] | None:
    if not report.has_scores:
        return None
    return diversity_summary(report.member_scores, report.y_test, task=report.task, names=report.member_names)


# -- JSON ------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _metrics_document(report: FusionReport, diversity: dict[str, Any] | None) -> dict[str, Any]:
    return _jsonable(
        {
            "title": report.title,
            "task": report.task,
            "metric": report.metric,
            "chosen": report.chosen,
            "weights": report.weights,
            "summary": report.summary(),
            "members": report.members,
            "strategies": report.strategies,
            "fold_scores": report.fold_scores,
            "diversity": diversity,
            "class_names": report.class_names,
            "n_test_samples": None if report.y_test is None else len(report.y_test),
            "deployment": report.deployment,
            "distillation": report.distillation,
            "student_deployment": report.student_deployment,
            "details": report.details(),
            "data": report.data_summary,
            "notes": report.notes,
            "config": report.config,
            "versions": report.versions,
            "created": report.created,
        }
    )


# -- HTML ----------------------------------------------------------------------------------------
_CSS = """
body{font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:#1a202c;background:#f7f8fa;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
.meta{color:#4a5568;font-size:13px;margin:0 0 16px}
.summary{font-size:17px;background:#fff7ed;border-left:4px solid #ff7f0e;padding:12px 16px;margin:16px 0}
table{border-collapse:collapse;width:100%;font-size:13.5px;margin:8px 0 16px}
th,td{padding:6px 10px;border-bottom:1px solid #e2e8f0;white-space:nowrap}
th{background:#edf2f7;text-align:left;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}th.num{text-align:right}
tr.chosen td{background:#fff7ed;font-weight:600}
.badge{display:inline-block;background:#ff7f0e;color:#fff;border-radius:8px;font-size:11px;padding:0 6px;margin-left:6px}
figure{margin:16px 0;text-align:center}figure img{max-width:100%;height:auto;border:1px solid #e2e8f0}
figcaption{color:#4a5568;font-size:13px;margin-top:4px}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:12px;overflow:auto;font-size:12.5px}
.scroll{overflow-x:auto}
"""


def _html_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    metric: str | None,
    chosen: str | None = None,
) -> str:
    numeric = {k: _is_numeric_column(rows, k) for k in columns}
    head = "".join(
        f"<th{' class=num' if numeric[k] else ''}>{html.escape(header(k, metric=metric))}</th>"
        for k in columns
    )
    body = []
    for r in rows:
        is_chosen = chosen is not None and r.get("name") == chosen
        cells = []
        for k in columns:
            text = html.escape(format_value(k, r.get(k), metric=metric))
            if k == "name" and is_chosen:
                text += '<span class="badge">chosen</span>'
            cells.append(f"<td{' class=num' if numeric[k] else ''}>{text}</td>")
        body.append(f"<tr{' class=chosen' if is_chosen else ''}>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _html_figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    alt = html.escape(caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'
    )


def _render_html(
    report: FusionReport, figures: list[tuple[str, str, bytes]], diversity: dict[str, Any] | None
) -> str:
    e = html.escape
    figs = {key: (caption, png) for key, caption, png in figures}
    meta = [f"task: {report.task}", f"selection metric: {report.metric}"]
    if report.y_test is not None:
        meta.append(f"{len(report.y_test)} test samples")
    meta.append(f"{len(report.member_names) or len(report.members)} members")
    if report.class_names and report.task != "regression":
        meta.append(f"{len(report.class_names)} classes")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(report.title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{e(report.title)}</h1>",
        f'<p class="meta">{e(" · ".join(meta))}</p>',
        f'<p class="summary">{e(summary_sentence(report))}</p>',
        "<h2>Fusion strategies</h2>",
        _html_table(
            report.strategies,
            _columns(report.strategies, _STRATEGY_ORDER),
            metric=report.metric,
            chosen=report.chosen,
        ),
    ]
    parts += [_html_figure(figs[k][1], figs[k][0]) for k in ("strategy_comparison", "cv_scores") if k in figs]
    members = _member_rows(report)
    parts += [
        "<h2>Members</h2>",
        _html_table(members, _columns(members, _MEMBER_ORDER), metric=report.metric),
    ]
    parts += [_html_figure(figs[k][1], figs[k][0]) for k in ("weights", "reliability") if k in figs]
    details = report.details()
    if details is not None or "regression_fit" in figs:
        parts.append(f"<h2>{e(report.chosen)} in detail</h2>")
        if details is not None:
            parts.append(f"<p>{e(details_sentence(details))}</p>")
            parts.append(_html_table(details["classes"], _DETAIL_COLUMNS, metric=None))
        parts += [_html_figure(figs[k][1], figs[k][0]) for k in ("confusion", "regression_fit") if k in figs]
    if report.data_summary:
        parts += ["<h2>Data</h2>", f"<p>{e(data_sentence(report.data_summary))}</p>"]
    if diversity is not None or "error_correlation" in figs:
        parts.append("<h2>Diversity</h2>")
        if diversity is not None:
            parts.append(f"<p>{e(_diversity_sentence(diversity))}</p>")
        if "error_correlation" in figs:
            parts.append(_html_figure(figs["error_correlation"][1], figs["error_correlation"][0]))
    if report.deployment:
        parts += [
            "<h2>Deployment</h2>",
            _html_table(
                report.deployment, _columns(report.deployment, _DEPLOYMENT_ORDER), metric=report.metric
            ),
        ]
        if "deployment" in figs:
            parts.append(_html_figure(figs["deployment"][1], figs["deployment"][0]))
        breakdown, columns = _breakdown_table(report.deployment)
        if breakdown:
            parts += [
                "<h3>Where the bytes and the time go</h3>",
                f"<p>{e(_BREAKDOWN_SENTENCE)}</p>",
                _html_table(breakdown, columns, metric=None),
            ]
            if "deployment_breakdown" in figs:
                parts.append(_html_figure(figs["deployment_breakdown"][1], figs["deployment_breakdown"][0]))
    if report.distillation:
        parts += [
            "<h2>Distillation</h2>",
            f"<p>{e(_DISTILLATION_SENTENCE)}</p>",
            _html_table(report.distillation, _columns(report.distillation, _DISTILLATION_ORDER), metric=None),
        ]
        if "distillation" in figs:
            parts.append(_html_figure(figs["distillation"][1], figs["distillation"][0]))
        if report.student_deployment:
            rows = report.student_deployment
            parts += [
                "<h3>The student's graphs</h3>",
                _html_table(rows, _columns(rows, _DEPLOYMENT_ORDER), metric=report.metric),
            ]
    if report.notes:
        parts += ["<h2>Notes</h2>", "<ul>", *(f"<li>{e(str(n))}</li>" for n in report.notes), "</ul>"]
    if report.config is not None:
        config = json.dumps(_jsonable(report.config), indent=2)
        parts += [
            "<h2>Configuration</h2>",
            f"<details><summary>show</summary><pre>{e(config)}</pre></details>",
        ]
    if provenance_line(report):
        parts.append(f'<p class="meta">{e(provenance_line(report))}</p>')
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


_DETAIL_COLUMNS = ["class", "precision", "recall", "f1", "support", "roc_auc", "pr_auc"]


def details_sentence(d: Mapping[str, Any]) -> str:
    """Balanced accuracy, macro AUCs and the paired test, in one sentence."""
    text = f"Balanced accuracy {100 * d['balanced_accuracy']:.2f}%"
    if d.get("macro_roc_auc") is not None:
        text += f", macro ROC-AUC {d['macro_roc_auc']:.4f}, macro PR-AUC {d['macro_pr_auc']:.4f}"
    test = d.get("paired_test")
    if test:
        text += (
            f". Against the best member ({test['against']}): right where it is wrong on {test['a_only']} samples, "
            f"wrong where it is right on {test['b_only']}; {test['test']} p = {test['p_value']:.3g}"
            + (
                " (a difference this large is unlikely by chance)"
                if test["p_value"] < 0.05
                else " (not significant at 5%)"
            )
        )
    return text + "."


def data_sentence(d: Mapping[str, Any]) -> str:
    """Rows per split, features, dropped columns and class balance."""
    parts = [f"{d.get('validation_rows', '?')} validation and {d.get('test_rows', '?')} test rows"]
    if d.get("features"):
        parts.append(f"{d['features']} features")
    if d.get("dropped_columns"):
        parts.append(f"columns left out: {', '.join(map(str, d['dropped_columns']))}")
    counts = d.get("class_counts")
    if counts:
        low, high = min(counts.values()), max(counts.values())
        parts.append(f"{len(counts)} classes in validation, {low} to {high} rows each")
    return "; ".join(parts) + "."


def provenance_line(report: FusionReport) -> str:
    """When the report was made and with which libraries."""
    versions = ", ".join(f"{k} {v}" for k, v in (report.versions or {}).items())
    return " · ".join(p for p in (f"made {report.created}" if report.created else "", versions) if p)


def _diversity_sentence(d: Mapping[str, Any]) -> str:
    text = f"Mean pairwise error correlation {d['mean_error_correlation']:.3f}"
    if "mean_disagreement" in d:
        text += f", mean disagreement {100 * d['mean_disagreement']:.2f}%"
    if "oracle_accuracy" in d:
        text += (
            f"; oracle accuracy (some member is right) {100 * d['oracle_accuracy']:.2f}%, "
            "an upper bound for picking one member per sample"
        )
    if "oracle_rmse" in d:
        text += f"; oracle RMSE (closest member per sample) {d['oracle_rmse']:.4f}"
    return text + "."


# -- Markdown -------------------------------------------------------------------------------------
def _render_markdown(
    report: FusionReport, figure_files: list[tuple[str, str, str]], diversity: dict[str, Any] | None
) -> str:
    links = {key: (caption, rel) for key, caption, rel in figure_files}

    def figure(key: str) -> list[str]:
        if key not in links:
            return []
        caption, rel = links[key]
        return [f"![{caption}]({rel})", ""]

    strategies = [
        dict(r, name=f"**{r['name']}** (chosen)" if r["name"] == report.chosen else r["name"])
        for r in report.strategies
    ]
    members = _member_rows(report)
    lines = [
        f"# {_md_text(report.title)}",
        "",
        f"Task: {report.task} · selection metric: {report.metric}"
        + ("" if report.y_test is None else f" · {len(report.y_test)} test samples"),
        "",
        f"**{_md_text(summary_sentence(report))}**",
        "",
        "## Fusion strategies",
        "",
        render_markdown_table(strategies, _columns(report.strategies, _STRATEGY_ORDER), metric=report.metric),
        "",
        *figure("strategy_comparison"),
        *figure("cv_scores"),
        "## Members",
        "",
        render_markdown_table(members, _columns(members, _MEMBER_ORDER), metric=report.metric),
        "",
        *figure("weights"),
        *figure("reliability"),
    ]
    details = report.details()
    if details is not None or "regression_fit" in links:
        lines += [f"## {_md_text(report.chosen)} in detail", ""]
        if details is not None:
            lines += [
                details_sentence(details),
                "",
                render_markdown_table(details["classes"], _DETAIL_COLUMNS),
                "",
            ]
        lines += figure("confusion") + figure("regression_fit")
    if report.data_summary:
        lines += ["## Data", "", data_sentence(report.data_summary), ""]
    if diversity is not None or "error_correlation" in links:
        lines += ["## Diversity", ""]
        if diversity is not None:
            lines += [_diversity_sentence(diversity), ""]
        lines += figure("error_correlation")
    if report.deployment:
        columns = _columns(report.deployment, _DEPLOYMENT_ORDER)
        lines += [
            "## Deployment",
            "",
            render_markdown_table(report.deployment, columns, metric=report.metric),
            "",
        ]
        lines += figure("deployment")
        breakdown, columns = _breakdown_table(report.deployment)
        if breakdown:
            lines += [
                "### Where the bytes and the time go",
                "",
                _BREAKDOWN_SENTENCE,
                "",
                render_markdown_table(breakdown, columns),
                "",
            ]
            lines += figure("deployment_breakdown")
    if report.distillation:
        lines += [
            "## Distillation",
            "",
            _DISTILLATION_SENTENCE,
            "",
            render_markdown_table(report.distillation, _columns(report.distillation, _DISTILLATION_ORDER)),
            "",
        ]
        lines += figure("distillation")
        if report.student_deployment:
            rows = report.student_deployment
            lines += [
                "### The student's graphs",
                "",
                render_markdown_table(rows, _columns(rows, _DEPLOYMENT_ORDER), metric=report.metric),
                "",
            ]
    if report.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in report.notes), ""]
    if report.config is not None:
        lines += [
            "## Configuration",
            "",
            "```json",
            json.dumps(_jsonable(report.config), indent=2),
            "```",
            "",
        ]
    provenance = provenance_line(report)
    if provenance:
        lines += [f"_{provenance}_", ""]
    return "\n".join(lines).rstrip() + "\n"


# -- files ----------------------------------------------------------------------------------------


def write_report(report: FusionReport, output_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and ``metrics.json`` into ``output_dir``.

    - ``report.html`` is self-contained: CSS inline, figures embedded as base64 PNG;
    - ``report.md`` links the same figures, saved under ``output_dir/figures/``;
    - ``metrics.json`` holds the tables, the chosen strategy, its weights, the summary
      deltas and diversity numbers, for machines.

    Figures that the report's data does not allow (no weights, regression has no
    reliability diagram, no per-sample scores) are left out. Every file is written
    atomically.

    Returns
    -------
    ``{"html": ..., "markdown": ..., "metrics": ..., "figure_<key>": ...}``, the paths written.

    Examples
    --------
    >>> paths = write_report(report, "runs/cifar10/report")
    >>> paths["html"]
    PosixPath('runs/cifar10/report/report.html')
    """
    if not isinstance(report, FusionReport):
        raise ArgumentTypeError(f"write_report expects a FusionReport, got {type(report).__name__}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = _render_figures(report)
    diversity = _diversity(report)
    paths: dict[str, Path] = {}

    figure_files = []
    produced = set()
    for key, caption, png in figures:
        rel = f"figures/{key}.png"
        paths[f"figure_{key}"] = write_bytes_atomic(out / rel, png)
        figure_files.append((key, caption, rel))
        produced.add(key)
    for key, _ in FIGURES:  # a figure from an earlier run that this report no longer has
        stale = out / "figures" / f"{key}.png"
        if key not in produced and stale.exists():
            stale.unlink()

    paths["html"] = write_bytes_atomic(
        out / "report.html", _render_html(report, figures, diversity).encode("utf-8")
    )
    paths["markdown"] = write_bytes_atomic(
        out / "report.md", _render_markdown(report, figure_files, diversity).encode("utf-8")
    )
    document = json.dumps(_metrics_document(report, diversity), indent=2, allow_nan=False)
    paths["metrics"] = write_bytes_atomic(out / "metrics.json", (document + "\n").encode("utf-8"))
    return paths
