"""Rich tables printed at the end of a run and by ``evaluate``: the report's rows, cells from :mod:`modelfusion.columns`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table

from modelfusion.columns import format_value, header

CLASSIFICATION_METRICS = ("accuracy", "nll", "ece")
REGRESSION_METRICS = ("rmse", "mae", "r2")


def results_table(
    members: Sequence[Mapping[str, Any]],
    strategies: Sequence[Mapping[str, Any]],
    chosen: str,
    task: str = "classification",
    *,
    metric: str | None = None,
) -> Table:
    """Members and strategies side by side, test-split metrics; the chosen strategy in bold."""
    metrics = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    keys = ("name", "framework", "cv_mean", *metrics, "latency_ms", "n_parameters")
    table = Table(title="Members and fusion strategies (test split)", box=box.SIMPLE_HEAD)
    for key in keys:
        table.add_column(
            header(key, short=True), justify="left" if key in ("name", "framework") else "right", no_wrap=True
        )
    for r in members:
        table.add_row(*(format_value(k, r.get(k), metric=metric) for k in keys))
    for r in sorted(strategies, key=lambda r: r.get("cv_mean", 0)):
        picked = r["name"] == chosen
        cells = {**r, "name": f"{r['name']} ★" if picked else r["name"], "framework": "fusion"}
        table.add_row(
            *(format_value(k, cells.get(k), metric=metric) for k in keys),
            style="bold green" if picked else None,
        )
    return table


def metrics_table(metrics: Mapping[str, float], title: str) -> Table:
    """One model's metrics, one per row."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, format_value(k, v))
    return table


def deployment_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """The exported graphs of a run: size, test accuracy (or RMSE), latency and the ratios vs fp32."""
    quality = "rmse" if any("rmse" in r for r in rows) else "accuracy"
    keys = ("name", "file_size", "size_ratio", quality, "latency_ms", "speedup")
    table = Table(title="Exported graphs (test split, ONNX Runtime CPU)", box=box.SIMPLE_HEAD)
    for key in keys:
        title = "graph" if key == "name" else header(key, short=True)
        table.add_column(title, justify="left" if key == "name" else "right", no_wrap=True)
    for r in rows:
        table.add_row(*(format_value(k, r.get(k)) for k in keys))
    return table


def variant_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """The distillation table: test accuracy and NLL, latency at batch 1 and 256, parameters; Pareto
    rows starred (ECE and size on disk are in the report: this fits 80 columns)."""
    keys = ("name", "accuracy", "nll", "latency_b1_ms", "latency_b256_ms", "engine", "n_parameters")
    table = Table(
        title="Distillation (test split; ★ on the accuracy-latency Pareto front)", box=box.SIMPLE_HEAD
    )
    for key in keys:
        table.add_column(
            header(key, short=True),
            justify="left" if key in ("name", "engine") else "right",
            no_wrap=key != "name",
        )
    for r in rows:
        cells = {**r, "name": f"{r['name']} ★" if r.get("pareto") else r["name"]}
        table.add_row(*(format_value(k, cells.get(k)) for k in keys))
    return table


def training_table(rows: Sequence[Any], *, best: str) -> Table:
    """``modelfusion train``'s candidates: accuracy, NLL, latency, parameters (the best in bold)."""
    table = Table(title="Feature-level fusion (held-out rows)")
    for name in ("model", "accuracy", "NLL", "latency ms/batch", "parameters", "train s"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for r in rows:
        style = "bold" if r.model == best else None
        table.add_row(
            r.model,
            f"{100 * r.accuracy:.2f}%",
            f"{r.nll:.4f}",
            f"{r.latency_ms:.2f}",
            f"{r.parameters:,}",
            f"{r.train_seconds:.1f}",
            style=style,
        )
    return table
