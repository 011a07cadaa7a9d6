"""Figures of a fusion report, and the tutorial's :func:`plot_fusion_comparison`.

The ``*_figure`` functions build a standalone :class:`matplotlib.figure.Figure` and never
touch pyplot, so rendering a report works headless and leaves the caller's figures and
backend alone (saving a bare Figure renders with Agg). Only :func:`plot_fusion_comparison`
uses pyplot, and only when no ``ax`` is given, to draw on the current axes like any
pyplot call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from modelfusion.errors import ArgumentTypeError, InputError
from modelfusion.evaluation.diversity import error_correlation
from modelfusion.evaluation.metrics import bootstrap_ci, calibration_bins, ece, get_metric
from modelfusion.report.data import FusionReport

__all__ = [
    "bootstrap_ci",
    "cv_figure",
    "deployment_breakdown_figure",
    "deployment_figure",
    "distillation_figure",
    "error_correlation_figure",
    "plot_fusion_comparison",
    "reliability_figure",
    "strategy_comparison_figure",
    "weights_figure",
]

FUSED_COLOR = "#1f77b4"
MEMBER_COLOR = "#9aa5b1"
CHOSEN_COLOR = "#ff7f0e"
_PERCENT_METRICS = {"accuracy", "top5", "macro_f1"}


# -- the tutorial's plot -------------------------------------------------------------------
def _fold_scores(results: Any) -> dict[str, np.ndarray]:
    if isinstance(results, Mapping):
        raw = results
    elif isinstance(getattr(results, "fold_scores", None), Mapping):
        raw = results.fold_scores
    else:
        raise ArgumentTypeError(
            "plot_fusion_comparison expects {strategy_name: [fold scores]} or a search result "
            f"with a fold_scores dict, got {type(results).__name__}"
        )
    if not raw:
        raise InputError("plot_fusion_comparison got no strategies; pass {strategy_name: [fold scores]}")
    out = {}
    for name, values in raw.items():
        if isinstance(values, (str, bytes)):
            raise InputError(f"scores for {name!r} must be numbers, got the string {values!r}")
        try:
            arr = np.asarray(values if np.ndim(values) else [values], dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise InputError(f"scores for {name!r} must be numbers, got {values!r}") from None
        if arr.size == 0:
            raise InputError(f"strategy {name!r} has no scores")
        if not np.isfinite(arr).all():
            raise InputError(f"scores for {name!r} contain NaN or infinity: {arr.tolist()}")
        out[str(name)] = arr
    return out


def _greater_is_better(metric: str | None, results: Any) -> bool:
    flag = getattr(results, "greater_is_better", None)
    if isinstance(flag, bool):
        return flag
    if metric is None:
        return True
    try:
        return get_metric(metric).greater_is_better
    except ValueError:
        name = metric.lower()
        if name.startswith("neg_"):  # scikit-learn's negated losses
            return True
        return not any(word in name for word in ("loss", "error", "nll"))


def plot_fusion_comparison(
    results: Any,
    ax: Axes | None = None,
    metric: str | None = None,
    *,
    highlight: str | None = None,
) -> Axes:
    """Bar chart of fusion strategies' cross-validation scores, best first.

    Parameters
    ----------
    results : ``{strategy_name: [fold scores]}``, or a strategy-search result with a
        ``fold_scores`` dict (and optionally ``metric``)
    ax : axes to draw on; default the current pyplot axes (``plt.gca()``)
    metric : name for the y axis and for ranking (losses rank lowest first); default
        ``results.metric`` if present, else "score" ranked highest first
    highlight : a strategy to colour differently (e.g. the chosen one)

    Returns
    -------
    The Axes, so ``plt.show()`` or ``plt.savefig(...)`` work as usual afterwards.

    Raises
    ------
    ValueError for no strategies, an empty score list, or scores that are not numbers.

    Examples
    --------
    >>> results = {"weighted_avg": [0.85, 0.88, 0.83], "voting": [0.82, 0.86, 0.84]}
    >>> ax = plot_fusion_comparison(results, metric="accuracy")
    >>> plt.savefig("comparison.png")
    """
    scores = _fold_scores(results)
    if metric is None:
        metric = getattr(results, "metric", None)
    metric = getattr(metric, "name", metric)
    metric = None if metric is None else str(metric)
    greater = _greater_is_better(metric, results)
    means = {name: float(v.mean()) for name, v in scores.items()}
    names = sorted(scores, key=lambda n: -means[n] if greater else means[n])
    mean = np.array([means[n] for n in names])
    std = np.array([scores[n].std() for n in names])

    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    x = np.arange(len(names))
    colors = [CHOSEN_COLOR if n == highlight else FUSED_COLOR for n in names]
    ax.bar(
        x,
        mean,
        yerr=std,
        width=0.6,
        color=colors,
        alpha=0.85,
        capsize=5,
        zorder=2,
        error_kw={"elinewidth": 1.2, "zorder": 3},
    )
    rng = np.random.default_rng(0)  # fixed jitter: the same input draws the same figure
    for i, n in enumerate(names):
        jitter = rng.uniform(-0.12, 0.12, size=scores[n].size) if scores[n].size > 1 else np.zeros(1)
        ax.scatter(x[i] + jitter, scores[n], s=16, color="black", alpha=0.7, zorder=4, linewidths=0)

    # A loss far worse than the rest (rank averaging's NLL, say) would flatten every other bar:
    # the axis is cut above the others and the taller bars are marked with their value.
    median = float(np.median(mean))
    outliers = {n for n in names if not greater and median > 0 and len(names) >= 3 and means[n] > 3 * median}
    shown = [n for n in names if n not in outliers]
    all_values = np.concatenate([scores[n] for n in shown])
    lo = min(all_values.min(), min(mean[i] - std[i] for i, n in enumerate(names) if n in shown))
    hi = max(all_values.max(), max(mean[i] + std[i] for i, n in enumerate(names) if n in shown))
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    # Zoom on the data: fold scores often differ in the second decimal, invisible from 0.
    bottom = lo - 0.6 * span
    if lo >= 0 and bottom < 0:
        bottom = 0.0
    top_limit = hi + 0.35 * span
    ax.set_ylim(bottom, top_limit)
    for i, n in enumerate(names):
        if n in outliers:
            ax.text(
                x[i],
                top_limit - 0.02 * span,
                f"↑ {_format_score(mean[i])}",
                ha="center",
                va="top",
                fontsize=8,
            )
            continue
        top = max(mean[i] + std[i], scores[n].max())  # above the error bar and every dot
        ax.text(x[i], top + 0.05 * span, _format_score(mean[i]), ha="center", va="bottom", fontsize=8)
    notes = []
    if bottom > 0:
        notes.append(f"axis starts at {_format_score(bottom)}, not 0")
    if outliers:
        notes.append(f"cut at {_format_score(top_limit)}: taller bars marked ↑")

    long_labels = len(names) > 4 or max(len(n) for n in names) > 12
    ax.set_xticks(x)
    ax.set_xticklabels(
        [_label(n) for n in names], rotation=30 if long_labels else 0, ha="right" if long_labels else "center"
    )
    ax.set_xlabel("strategy")
    ax.set_ylabel(_label(metric or "score"))
    if notes:  # said on the axes, where the eye reads the scale
        ax.text(
            0.01,
            0.98,
            "; ".join(notes),
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=7,
            color="#555",
        )
    direction = "higher" if greater else "lower"
    n_folds = max(v.size for v in scores.values())
    ax.set_title(f"Fusion strategies across {n_folds} folds ({direction} is better)")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)
    return ax


def _format_score(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.4g}"


def _label(text: str) -> str:
    """Text for matplotlib: a '$' in a name must not start mathtext."""
    return str(text).replace("$", r"\$")


# -- report figures --------------------------------------------------------------------------
def cv_figure(report: FusionReport) -> Figure | None:
    """The validation cross-validation scores per strategy (None without fold scores)."""
    if not report.fold_scores or not any(report.fold_scores.values()):
        return None
    folds = {k: v for k, v in report.fold_scores.items() if v}
    fig = Figure(figsize=(max(5.0, 1.1 * len(folds) + 2.5), 4.0), layout="constrained")
    plot_fusion_comparison(folds, ax=fig.add_subplot(), metric=report.metric, highlight=report.chosen)
    return fig


def strategy_comparison_figure(report: FusionReport, n_boot: int = 1000, seed: int = 0) -> Figure | None:
    """Test metric of every strategy and member with 95% bootstrap intervals.

    Fused strategies and members are drawn in different colours (the chosen strategy in a
    third); the best member's value is a dashed reference line. None without test scores.
    """
    if not report.has_scores:
        return None
    member_scores = report.member_scores
    assert member_scores is not None  # has_scores
    metric = get_metric(report.primary_metric)
    y = report.y_test
    rows: list[tuple[str, str, np.ndarray]] = [
        (name, "fused", np.asarray(s)) for name, s in report.strategy_scores.items()
    ]
    rows += [(name, "member", member_scores[i]) for i, name in enumerate(report.member_names)]
    values = []
    for name, kind, scores in rows:
        v = metric(y, scores)
        lo, hi = bootstrap_ci(y, scores, metric, n_boot=n_boot, seed=seed)
        values.append((name, kind, v, lo, hi))
    values.sort(key=lambda r: r[2], reverse=not metric.greater_is_better)  # best last = top row

    fig = Figure(figsize=(7.5, 0.38 * len(values) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    y_pos = np.arange(len(values))
    val = np.array([r[2] for r in values])
    err = np.array([[max(r[2] - r[3], 0.0), max(r[4] - r[2], 0.0)] for r in values]).T
    colors = [
        CHOSEN_COLOR
        if (k == "fused" and n == report.chosen)
        else (FUSED_COLOR if k == "fused" else MEMBER_COLOR)
        for n, k, *_ in values
    ]
    # Points with their intervals, not bars: the axis is zoomed on the values, and a bar's
    # length from a cut axis would exaggerate small differences.
    ax.errorbar(val, y_pos, xerr=err, fmt="none", ecolor="black", elinewidth=1.0, capsize=3, zorder=2)
    ax.scatter(val, y_pos, s=70, c=colors, edgecolors="black", linewidths=0.6, zorder=3)
    ax.set_yticks(y_pos)
    ax.set_yticklabels([_label(n) for n, *_ in values])
    for label, (n, k, *_) in zip(ax.get_yticklabels(), values, strict=True):
        if k == "fused" and n == report.chosen:
            label.set_fontweight("bold")
    best = report.best_member
    if best is not None and best in report.member_names:
        ref = metric(y, member_scores[report.member_names.index(best)])
        ax.axvline(
            ref, color="black", linestyle="--", linewidth=1, zorder=4, label=_label(f"best member ({best})")
        )
    lo = min(r[3] for r in values)
    hi = max(r[4] for r in values)
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    left = lo - 0.4 * span
    if lo >= 0 and left < 0:
        left = 0.0
    ax.set_xlim(left, hi + 0.2 * span)
    if metric.name in _PERCENT_METRICS:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    start = (
        ""
        if left <= 0
        else f"; axis starts at {f'{100 * left:.0f}%' if metric.name in _PERCENT_METRICS else _format_score(left)}, not 0"
    )
    ax.set_xlabel(
        f"test {metric.name} ({'higher' if metric.greater_is_better else 'lower'} is better), 95% CI{start}"
    )
    ax.set_title("Fused strategies vs members on the test split")
    handles: list[Any] = [
        Patch(color=CHOSEN_COLOR, label=_label(f"chosen ({report.chosen})")),
        Patch(color=FUSED_COLOR, label="fused strategy"),
        Patch(color=MEMBER_COLOR, label="member"),
    ]
    handles += ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
    ax.grid(axis="x", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)
    return fig


def reliability_figure(report: FusionReport, n_bins: int = 15) -> Figure | None:
    """Reliability diagram of the best member and the chosen fused model.

    Top: mean confidence vs accuracy per bin, with the diagonal of perfect calibration and
    each curve's ECE in the legend; bottom: how many samples fall in each bin. None for
    regression or without test scores.
    """
    if report.task == "regression" or not report.has_scores:
        return None
    member_scores = report.member_scores
    assert member_scores is not None  # has_scores
    curves: list[tuple[str, np.ndarray, str]] = []
    best = report.best_member
    if best is not None and best in report.member_names:
        curves.append((f"best member: {best}", member_scores[report.member_names.index(best)], MEMBER_COLOR))
    if report.chosen in report.strategy_scores:
        curves.append((f"fused: {report.chosen}", report.strategy_scores[report.chosen], CHOSEN_COLOR))
    if not curves:
        return None
    fig = Figure(figsize=(6.0, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1, label="perfect calibration")
    width = 1.0 / n_bins
    for i, (label, scores, color) in enumerate(curves):
        bins = calibration_bins(report.y_test, scores, n_bins=n_bins)
        filled = bins["count"] > 0
        error = ece(report.y_test, scores, n_bins=n_bins)
        top.plot(
            bins["confidence"][filled],
            bins["accuracy"][filled],
            marker="o",
            markersize=4,
            color=color,
            linewidth=1.8,
            label=_label(f"{label} (ECE {error:.4f})"),
        )
        offset = (i - (len(curves) - 1) / 2) * width / len(curves)
        centres = bins["edges"][:-1] + width / 2 + offset
        bottom.bar(centres, bins["count"], width=width / len(curves), color=color, alpha=0.85)
    multilabel = report.task == "multilabel"
    top.set_ylabel("fraction positive" if multilabel else "accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_title("Reliability: does confidence match accuracy?")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.set_xlabel("predicted probability" if multilabel else "top-1 confidence")
    bottom.set_ylabel("samples")
    bottom.grid(axis="y", alpha=0.3)
    return fig


def error_correlation_figure(report: FusionReport) -> Figure | None:
    """Heatmap of the Pearson correlation of members' errors (None without test scores)."""
    if not report.has_scores:
        return None
    corr = error_correlation(report.member_scores, report.y_test, task=report.task)
    names = report.member_names
    m = len(names)
    side = min(max(4.5, 0.6 * m + 2.5), 14.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(corr, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    ax.set_xticks(np.arange(m))
    ax.set_yticks(np.arange(m))
    ax.set_xticklabels([_label(n) for n in names], rotation=45, ha="right")
    ax.set_yticklabels([_label(n) for n in names])
    if m <= 20:  # beyond that the numbers no longer fit in the cells
        for i in range(m):
            for j in range(m):
                ax.text(
                    j,
                    i,
                    f"{corr[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if abs(corr[i, j]) > 0.6 else "black",
                )
    fig.colorbar(image, ax=ax, label="error correlation", shrink=0.8)
    ax.set_title("Member error correlation (lower = more complementary)")
    return fig


def weights_figure(report: FusionReport) -> Figure | None:
    """Bar chart of the chosen strategy's weight per member (None if it has no weights)."""
    if not report.weights:
        return None
    names = list(report.weights)
    w = np.array([report.weights[n] for n in names])
    fig = Figure(figsize=(max(4.5, 0.8 * len(names) + 2.0), 3.6), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(names))
    ax.bar(x, w, color=CHOSEN_COLOR, width=0.6, zorder=2)
    for i, v in enumerate(w):
        ax.text(x[i], v, f"{v:.3f}", ha="center", va="bottom" if v >= 0 else "top", fontsize=8)
    ax.set_xticks(x)
    long_labels = len(names) > 5 or max(len(n) for n in names) > 12
    ax.set_xticklabels(
        [_label(n) for n in names], rotation=30 if long_labels else 0, ha="right" if long_labels else "center"
    )
    ax.set_ylabel("weight")
    ax.set_ylim(min(0.0, w.min() * 1.15), max(w.max() * 1.15, 1e-9))
    ax.set_title(_label(f"Member weights of {report.chosen}"))
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)
    return fig


def deployment_figure(report: FusionReport) -> Figure | None:
    """File size and CPU throughput of each exported graph, labelled with its accuracy (None without any)."""
    rows = [r for r in report.deployment if r.get("file_size") and r.get("latency_ms")]
    if not rows:
        return None
    names = [str(r["name"]) for r in rows]
    size_mb = np.array([r["file_size"] / 2**20 for r in rows])
    throughput = np.array([1000.0 / r["latency_ms"] for r in rows])
    colors = [MEMBER_COLOR] + [CHOSEN_COLOR] * (len(rows) - 1)
    fig = Figure(figsize=(max(7.0, 1.6 * len(rows) + 4.0), 3.4), layout="constrained")
    size_ax, speed_ax = fig.subplots(1, 2)
    x = np.arange(len(rows))
    for ax, values, unit, title in (
        (size_ax, size_mb, "MB", "File size (smaller is better)"),
        (speed_ax, throughput, "samples/s", "CPU throughput (higher is better)"),
    ):
        ax.bar(x, values, color=colors, width=0.6, zorder=2)
        for i, v in enumerate(values):
            label = f"{v:.2f}" if unit == "MB" else f"{v:,.0f}"
            ax.text(x[i], v, label, ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x)
        ax.set_xticklabels([_label(n) for n in names])
        ax.set_ylabel(unit)
        ax.set_ylim(0, values.max() * 1.2)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3, zorder=0)
        ax.set_axisbelow(True)
    accuracy = [r.get("accuracy") for r in rows]
    if all(a is not None for a in accuracy):
        speed_ax.set_xticklabels(
            [f"{_label(n)}\n{100 * float(a or 0):.2f}%" for n, a in zip(names, accuracy)]
        )
    return fig


def deployment_breakdown_figure(report: FusionReport) -> Figure | None:
    """Each exported graph as one bar of file size and one of kernel time, split by member (None without breakdowns)."""
    graphs = [r for r in report.deployment if r.get("breakdown")]
    if not graphs:
        return None
    members = list(dict.fromkeys(p["member"] for g in graphs for p in g["breakdown"]))
    timed = all(p.get("ms") is not None for g in graphs for p in g["breakdown"])
    palette = [tuple(c) for c in _member_colors(len(members))]
    fig = Figure(figsize=(9.0, 1.2 + 0.55 * len(graphs) + 0.2 * len(members) / 3), layout="constrained")
    axes = fig.subplots(1, 2 if timed else 1, sharey=True, squeeze=False)[0]
    panels = [("bytes", 1 / 1024, "KB in the file")] + (
        [("ms", 1.0, "ms of kernel time per batch")] if timed else []
    )
    y = np.arange(len(graphs))[::-1]
    for ax, (key, scale, unit) in zip(axes, panels):
        left = np.zeros(len(graphs))
        for color, member in zip(palette, members):
            values = np.array(
                [next((p[key] for p in g["breakdown"] if p["member"] == member), 0.0) * scale for g in graphs]
            )
            ax.barh(y, values, left=left, color=color, height=0.6, label=member, zorder=2)
            left += values
        for yi, total in zip(y, left):
            ax.text(
                total, yi, f" {total:,.0f}" if key == "bytes" else f" {total:.2f}", va="center", fontsize=8
            )
        ax.set_xlim(0, max(float(left.max()), 1e-9) * 1.15)
        ax.set_xlabel(unit)
        ax.grid(axis="x", alpha=0.3, zorder=0)
        ax.set_axisbelow(True)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([_label(str(g["name"])) for g in graphs])
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncol=min(len(members), 6),
        fontsize=8,
        frameon=False,
    )
    return fig


_KIND_COLORS = {
    "member": MEMBER_COLOR,
    "ensemble": FUSED_COLOR,
    "labels_only": "#b0a0d0",
    "distilled": CHOSEN_COLOR,
    "pruned": "#2ca02c",
    "int8": "#d62728",
}


def distillation_figure(report: FusionReport) -> Figure | None:
    """Test accuracy against latency per sample at batch 1 and 256, the Pareto front marked (None without rows)."""
    rows = [r for r in report.distillation if r.get("accuracy") is not None and r.get("latency_b256_ms")]
    if not rows:
        return None
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, title in (
        (axes[0], "latency_b256_ms", "batch 256 (throughput)"),
        (axes[1], "latency_b1_ms", "batch 1 (one request)"),
    ):
        points = [(float(r[key]), 100 * float(r["accuracy"]), r) for r in rows if r.get(key)]
        if key == "latency_b256_ms":
            front = sorted((x, y) for x, y, r in points if r.get("pareto"))
            ax.step(
                [x for x, _ in front],
                [y for _, y in front],
                where="post",
                color="#4a5568",
                linestyle="--",
                linewidth=1,
                zorder=1,
                label="Pareto front",
            )
        for (x, y, r), offset in zip(points, _label_offsets([(x, y) for x, y, _ in points]), strict=True):
            edge = "#1a202c" if r.get("pareto") and key == "latency_b256_ms" else "white"
            ax.scatter(
                x, y, s=70, color=_KIND_COLORS.get(str(r.get("kind")), MEMBER_COLOR), edgecolor=edge, zorder=3
            )
            ax.annotate(
                _label(str(r["name"])), (x, y), textcoords="offset points", xytext=offset, fontsize=7.5
            )
        ax.set_xscale("log")
        ax.set_xlabel("ms per sample (log scale; left is faster)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(loc="lower right", fontsize=8, frameon=False)
    return fig


def _label_offsets(points: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """Label offsets (points) for a log-x scatter: a label that would sit on an earlier one (within
    0.3 decades and 4% of the accuracy range) goes below its point, then further down."""
    ys = [y for _, y in points]
    near_y = 0.04 * (max(ys) - min(ys) or 1.0)
    placed: list[tuple[float, float, int]] = []
    offsets = []
    for x, y in points:
        lx = float(np.log10(x))
        crowd = sum(1 for px, py, _ in placed if abs(px - lx) < 0.3 and abs(py - y) < near_y)
        dy = 4 if crowd == 0 else -11 * crowd
        placed.append((lx, y, dy))
        offsets.append((6, dy))
    return offsets


def _member_colors(n: int) -> np.ndarray:
    """``n`` distinct colours (tab10, tab20, then evenly spaced) for stacked member segments."""
    from matplotlib import colormaps

    if n > 20:  # past tab20, evenly spaced hues: no two members share a colour
        return colormaps["turbo"](np.linspace(0.05, 0.95, n))
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return cmap(np.arange(n))


def confusion_figure(report: FusionReport) -> Figure | None:
    """The chosen model's confusion matrix on test, counts in the cells (None outside classification)."""
    details = report.details()
    if details is None:
        return None
    matrix = np.asarray(details["confusion"])
    names = [_label(c) for c in report.class_names] or [str(i) for i in range(len(matrix))]
    side = max(3.5, 0.45 * len(matrix) + 1.8)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8, label="test samples")
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    limit = matrix.max() / 2 if matrix.size else 0
    for i in range(len(matrix)):
        for j in range(len(matrix)):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] > limit else "black",
                )
    ax.set_title(f"{_label(report.chosen)}: confusion matrix (test)")
    return fig


def regression_fit_figure(report: FusionReport) -> Figure | None:
    """Predicted vs actual and residuals of the chosen model on test (regression only)."""
    scores = report.strategy_scores.get(report.chosen)
    if report.task != "regression" or scores is None or report.y_test is None:
        return None
    y = np.asarray(report.y_test, dtype=np.float64).reshape(len(report.y_test), -1)[:, 0]
    pred = np.asarray(scores, dtype=np.float64).reshape(len(y), -1)[:, 0]
    fig = Figure(figsize=(9.0, 4.0), layout="constrained")
    left, right = fig.subplots(1, 2)
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    left.scatter(y, pred, s=12, alpha=0.6, color=CHOSEN_COLOR, linewidths=0)
    left.plot([lo, hi], [lo, hi], color="black", linestyle="--", linewidth=1, label="perfect")
    left.set_xlabel("actual")
    left.set_ylabel("predicted")
    left.legend(loc="upper left", fontsize=8)
    left.set_title("predicted vs actual")
    right.scatter(pred, y - pred, s=12, alpha=0.6, color=FUSED_COLOR, linewidths=0)
    right.axhline(0, color="black", linewidth=1)
    right.set_xlabel("predicted")
    right.set_ylabel("residual (actual − predicted)")
    right.set_title("residuals")
    return fig
