"""Rich tables printed at the end of a run and by ``evaluate``."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "ms":
        return f"{value:.3f}"
    if kind == "int":
        return (
            f"{value / 1e6:.2f}M" if value >= 1e6 else (f"{value / 1e3:.1f}K" if value >= 1e3 else str(value))
        )
    if kind == "bytes":
        return f"{value / 2**20:.2f} MB" if value >= 2**20 else f"{value / 2**10:.1f} KB"
    return f"{value:.4f}"


def results_table(
    members: list[dict[str, Any]], strategies: list[dict[str, Any]], chosen: str, task: str = "classification"
) -> Table:
    """Members and strategies side by side, test-split metrics; the chosen strategy in bold."""
    cls = task != "regression"
    cols = (
        [("accuracy", "pct", "test acc"), ("nll", "f", "NLL"), ("ece", "f", "ECE")]
        if cls
        else [("rmse", "f", "RMSE"), ("mae", "f", "MAE"), ("r2", "f", "R²")]
    )
    table = Table(title="Members and fusion strategies (test split)", box=box.SIMPLE_HEAD)
    table.add_column("model", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("val CV", justify="right", no_wrap=True)
    for _, _, title in cols:
        table.add_column(title, justify="right", no_wrap=True)
    table.add_column("ms/smp", justify="right", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    for r in members:
        table.add_row(
            r["name"],
            r.get("framework") or "member",
            _fmt(r.get("cv_mean"), "f"),
            *(_fmt(r.get(k), f) for k, f, _ in cols),
            _fmt(r.get("latency_ms"), "ms"),
            _fmt(r.get("n_parameters"), "int"),
        )
    for r in sorted(strategies, key=lambda r: r.get("cv_mean", 0)):
        style = "bold green" if r["name"] == chosen else None
        name = f"{r['name']} ★" if r["name"] == chosen else r["name"]
        table.add_row(
            name,
            "fusion",
            _fmt(r.get("cv_mean"), "f"),
            *(_fmt(r.get(k), f) for k, f, _ in cols),
            _fmt(r.get("latency_ms"), "ms"),
            "-",
            style=style,
        )
    return table


def metrics_table(metrics: dict[str, float], title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, _fmt(v, "pct" if k in ("accuracy", "top5") else "f"))
    return table


def deployment_table(rows: list[dict[str, Any]]) -> Table:
    """The exported graphs of a run: size, test accuracy (or RMSE), latency and the ratios vs fp32."""
    table = Table(title="Exported graphs (test split, ONNX Runtime CPU)", box=box.SIMPLE_HEAD)
    quality = ("rmse", "f", "RMSE") if any("rmse" in r for r in rows) else ("accuracy", "pct", "test acc")
    for col in ("graph", "size", "smaller", quality[2], "ms/smp", "speed"):
        table.add_column(col, justify="left" if col == "graph" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["name"],
            _fmt(r.get("file_size"), "bytes"),
            f"{r['size_ratio']:.2f}x" + (" (larger)" if r["size_ratio"] < 1.0 else ""),
            _fmt(r.get(quality[0]), quality[1]),
            _fmt(r.get("latency_ms"), "ms"),
            f"{r['speedup']:.2f}x",
        )
    return table
