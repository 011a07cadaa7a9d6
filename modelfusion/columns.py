"""How each result column is named and printed: one spec for the CLI tables, the report and ``evaluate``.

A column is a key of a result row (``accuracy``, ``latency_ms``, ``file_size``...), a header
for the report, a short header for the terminal, and one formatter. The CLI and the report
both format through :func:`format_value`, so the same value prints as the same text
everywhere (``711.8 KB``, ``97.77%``, ``0.115 ms``, ``—`` for a missing value).

Examples
--------
>>> format_value("file_size", 728_883), format_value("accuracy", 0.9777), format_value("nll", None)
('711.8 KB', '97.77%', '—')
>>> COLUMNS["latency_ms"].short
'ms/smp'
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: What a missing value (None, NaN) prints as.
MISSING = "—"


@dataclass(frozen=True)
class Column:
    """One result column: ``header`` in the report, ``short`` in terminal tables, ``format`` for a present value."""

    key: str
    header: str
    short: str
    format: Callable[[Any], str]


def _percent(v: float) -> str:
    return f"{100 * v:.2f}%"


def _decimals(v: float) -> str:
    return f"{v:.4f}"


def _count(n: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{suffix}"
    return f"{int(n)}"


def format_bytes(n: float) -> str:
    """``n`` bytes as ``711.8 KB`` / ``3.3 MB`` (binary units, one decimal)."""
    for scale, suffix in ((1024**3, "GB"), (1024**2, "MB"), (1024, "KB")):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {suffix}"
    return f"{int(n)} B"


def format_ms(ms: float) -> str:
    """Milliseconds to three decimals (``0.115``), five below 0.01 (``0.00031``), whole above 100 (``320``);
    the header carries the unit."""
    if ms < 0.01:  # a small student at batch 256: 0.00031, not 0.000
        return f"{ms:.5f}"
    return f"{ms:.3f}" if ms < 100 else f"{ms:.0f}"


def _ratio(v: float) -> str:
    return f"{v:.2f}×" + (" (larger)" if v < 1.0 else "")


def _times(v: float) -> str:
    return f"{v:.2f}×"


def _points(v: float) -> str:
    return f"{v:+.2f} pp"


def _spec(*columns: tuple[str, str, str, Callable[[Any], str]]) -> dict[str, Column]:
    return {key: Column(key, header, short, fmt) for key, header, short, fmt in columns}


COLUMNS: dict[str, Column] = _spec(
    ("name", "name", "model", str),
    ("framework", "framework", "type", str),
    ("cv_mean", "CV mean", "val CV", _decimals),
    ("cv_std", "CV std", "CV std", _decimals),
    ("accuracy", "accuracy", "test acc", _percent),
    ("top5", "top-5", "top-5", _percent),
    ("macro_f1", "macro F1", "macro F1", _percent),
    ("nll", "NLL", "NLL", _decimals),
    ("ece", "ECE", "ECE", _decimals),
    ("brier", "Brier", "Brier", _decimals),
    ("rmse", "RMSE", "RMSE", _decimals),
    ("mae", "MAE", "MAE", _decimals),
    ("r2", "R²", "R²", _decimals),
    ("weight", "weight", "weight", _decimals),
    ("latency_ms", "latency (ms/sample)", "ms/smp", format_ms),
    ("n_parameters", "parameters", "params", _count),
    ("file_size", "size", "size", format_bytes),
    ("n_members_used", "members used", "members", str),
    ("file", "file", "file", str),
    ("size_ratio", "smaller by", "smaller", _ratio),
    ("speedup", "speed vs fp32", "speed", _times),
    ("delta_pp", "accuracy change", "Δ acc", _points),
    ("delta_pp_validation", "change on validation", "Δ val", _points),
    ("engine", "engine", "engine", str),
    ("latency_b1_ms", "ms/sample at batch 1", "ms@1", format_ms),
    ("latency_b256_ms", "ms/sample at batch 256", "ms@256", format_ms),
    ("pareto", "Pareto", "Pareto", str),
)
#: Metrics shown as percentages; a CV score of one of them prints as a percentage too.
PERCENT_METRICS = frozenset(k for k, c in COLUMNS.items() if c.format is _percent)


def is_missing(value: Any) -> bool:
    """None or NaN (numpy scalars included; numpy is not imported, so the CLI starts fast)."""
    return value is None or (isinstance(value, numbers.Real) and value != value)


def format_value(key: str, value: Any, *, metric: str | None = None) -> str:
    """The text of one cell: accuracy as %, losses to 4 decimals, parameters K/M, sizes KB/MB.

    ``metric`` is the selection metric, which decides how ``cv_mean``/``cv_std`` print (a CV
    accuracy is a percentage, its std in percentage points). Missing values print as
    :data:`MISSING`; a column not in :data:`COLUMNS` prints ints as is and floats to 4 digits.
    """
    if is_missing(value):
        return MISSING
    if isinstance(value, bool) or type(value).__name__ == "bool":  # numpy's bool is no numbers.Number
        return "yes" if value else "no"
    if not isinstance(value, numbers.Real):
        return str(value)
    value = int(value) if isinstance(value, numbers.Integral) else float(value)
    if key in ("cv_mean", "cv_std") and metric is not None and _metric_key(metric) in PERCENT_METRICS:
        return f"{100 * value:.2f}" + ("%" if key == "cv_mean" else " pp")
    column = COLUMNS.get(key)
    if column is not None and column.format is not str:
        return column.format(value)
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def header(key: str, *, metric: str | None = None, short: bool = False) -> str:
    """The header of column ``key`` (``short`` for terminal tables); CV columns name the metric."""
    if key in ("cv_mean", "cv_std") and metric and not short:
        return f"CV {metric} {'mean' if key == 'cv_mean' else 'std'}"
    column = COLUMNS.get(key)
    if column is None:
        return key.replace("_", " ")
    return column.short if short else column.header


def _metric_key(metric: str) -> str | None:
    # Imported here: the CLI's tables import this module, and `modelfusion --help` must not load
    # scikit-learn (see benchmarks/startup.py).
    from modelfusion.evaluation.metrics import METRICS

    key = str(metric).strip().lower()
    return METRICS[key].name if key in METRICS else None
