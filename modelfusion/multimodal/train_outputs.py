"""What ``modelfusion train`` writes: ``metrics.json``, ``report.md``, ``report.html`` (a comparison
figure of every candidate) and the best fused model as a bundle; each file written atomically.

Examples
--------
>>> files = write_outputs(plan, rows, best, model)
>>> files["report"]
PosixPath('runs/train/report.html')
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelfusion.files import write_bytes_atomic, write_text_atomic
from modelfusion.multimodal.train_rows import Candidate, ModelRow, modality_view, row_dict

if TYPE_CHECKING:
    from modelfusion.multimodal.train_job import TrainPlan

COLUMNS = ("model", "accuracy", "nll", "latency_ms", "parameters", "train_seconds", "epochs")
HEADERS = {
    "model": "model",
    "accuracy": "accuracy",
    "nll": "NLL",
    "latency_ms": "latency (ms / batch)",
    "parameters": "parameters",
    "train_seconds": "train (s)",
    "epochs": "epochs",
}


def write_outputs(plan: TrainPlan, rows: Sequence[ModelRow], best: ModelRow, model: Any) -> dict[str, Path]:
    """Write every output of the job into ``plan.output_dir``; returns their paths by name."""
    out = plan.output_dir
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "name": plan.config.name,
        "data": {"source": plan.config.data.source, "train": len(plan.train), "test": len(plan.test)},
        "classes": [str(c) for c in plan.classes],
        "best": best.model,
        "rows": [row_dict(r) for r in rows],
    }
    files = {"metrics": write_text_atomic(out / "metrics.json", json.dumps(document, indent=2) + "\n")}
    figure = comparison_png(rows)
    files["report_md"] = write_text_atomic(out / "report.md", markdown_report(plan, rows, best))
    files["report"] = write_text_atomic(out / "report.html", html_report(plan, rows, best, figure))
    files["comparison"] = write_bytes_atomic(out / "comparison.png", figure)
    if plan.config.export:
        example = _example(plan, best)
        files["model"] = model.save(out / "model", classes=[str(c) for c in plan.classes], example=example)
    return files


def comparison_png(rows: Sequence[ModelRow]) -> bytes:
    """Accuracy of every candidate (fused in blue, single modalities in grey) beside its latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.model for r in rows]
    colors = ["#2f6db5" if r.fusion else "#a3a3a3" for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.6), sharey=True)
    left.barh(names, [100 * r.accuracy for r in rows], color=colors)
    for y, r in enumerate(rows):
        left.text(100 * r.accuracy + 1, y, f"{100 * r.accuracy:.1f}%", va="center", fontsize=9)
    left.set_xlim(0, 110)
    left.set_xlabel("held-out accuracy (%)")
    left.invert_yaxis()
    right.barh(names, [r.latency_ms for r in rows], color=colors)
    right.set_xlabel("eager latency (ms per batch)")
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle("Fusion operators and single modalities", x=0.01, ha="left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def markdown_report(plan: TrainPlan, rows: Sequence[ModelRow], best: ModelRow) -> str:
    lines = [
        f"# {plan.config.name}",
        "",
        _summary(plan, rows, best),
        "",
        "| " + " | ".join(HEADERS[c] for c in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_cell(c, getattr(r, c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n\n![comparison](comparison.png)\n"


def html_report(plan: TrainPlan, rows: Sequence[ModelRow], best: ModelRow, figure: bytes) -> str:
    head = "".join(f"<th>{html.escape(HEADERS[c])}</th>" for c in COLUMNS)
    body = "".join(
        f"<tr{' class=best' if r.model == best.model else ''}>"
        + "".join(f"<td>{html.escape(_cell(c, getattr(r, c)))}</td>" for c in COLUMNS)
        + "</tr>"
        for r in rows
    )
    image = base64.b64encode(figure).decode("ascii")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(plan.config.name)}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ padding: .35rem .8rem; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
tr.best {{ background: #eaf2fb; font-weight: 600; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(plan.config.name)}</h1>
<p>{html.escape(_summary(plan, rows, best))}</p>
<figure><img src="data:image/png;base64,{image}" alt="accuracy and latency of every candidate"></figure>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</body></html>
"""


def _summary(plan: TrainPlan, rows: Sequence[ModelRow], best: ModelRow) -> str:
    singles = [r for r in rows if not r.fusion and len(plan.encoders) > 1]
    text = (
        f"{len(plan.train)} training rows, {len(plan.test)} held out ({plan.config.data.source}). "
        f"Best fused model: {best.model}, {best.accuracy:.2%} accuracy (NLL {best.nll:.4f})."
    )
    if singles:
        top = max(singles, key=lambda r: r.accuracy)
        text += f" Best single modality: {top.model}, {top.accuracy:.2%}."
    return text


def _cell(column: str, value: Any) -> str:
    if column == "accuracy":
        return f"{100 * value:.2f}%"
    if column in ("nll",):
        return f"{value:.4f}"
    if column in ("latency_ms", "train_seconds"):
        return f"{value:.2f}"
    if column == "parameters":
        return f"{value:,}"
    return str(value)


def _example(plan: TrainPlan, best: ModelRow) -> dict[str, Any]:
    """Two held-out rows of the best model's modalities (the export's parity check)."""
    view = modality_view(plan.test, Candidate(best.model, best.fusion or "concat", best.modalities))
    batch = {m: view.inputs[m][:2] for m in best.modalities}
    if view.present:
        batch["present"] = {m: flags[:2] for m, flags in view.present.items()}
    return batch


__all__ = ["comparison_png", "html_report", "markdown_report", "write_outputs"]
