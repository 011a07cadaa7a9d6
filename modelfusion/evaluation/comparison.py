"""The headline of a run: the chosen model against the member best at each metric, by name.

A member that is best by accuracy is often not best by NLL; comparing the fused NLL with the
accuracy winner's NLL flatters the fusion. Each metric is compared with the member that is
best at that metric, and that member is named. The CLI and the report print this sentence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Per task: (metric key, label, higher is better, format).
HEADLINE_METRICS = {
    "regression": [("rmse", "test RMSE", False, "{:.4f}"), ("r2", "R²", True, "{:.4f}")],
    "classification": [("accuracy", "test accuracy", True, "pct"), ("nll", "NLL", False, "{:.4f}")],
    "multilabel": [("accuracy", "test accuracy", True, "pct"), ("nll", "NLL", False, "{:.4f}")],
}


def best_member_at(
    members: Sequence[Mapping[str, Any]], key: str, higher_is_better: bool
) -> Mapping[str, Any] | None:
    """The member row best at ``key`` (None when no member has the metric)."""
    rows = [r for r in members if r.get(key) is not None]
    if not rows:
        return None
    pick = max if higher_is_better else min
    return pick(rows, key=lambda r: r[key])


def comparison_sentence(
    task: str, chosen: str, chosen_metrics: Mapping[str, Any], members: Sequence[Mapping[str, Any]]
) -> str:
    """``Fused stacking: test accuracy 97.77% vs 96.66% for the best member at it (knn); NLL ...``.

    Examples
    --------
    >>> comparison_sentence("classification", "stacking", {"accuracy": 0.98, "nll": 0.09},
    ...                     [{"name": "knn", "accuracy": 0.97, "nll": 0.26}, {"name": "gb", "accuracy": 0.93, "nll": 0.25}])
    'Fused stacking: test accuracy 98.00% vs 97.00% for the member best at it (knn); NLL 0.0900 vs 0.2500 (gb).'
    """
    parts: list[str] = []
    for key, label, higher, fmt in HEADLINE_METRICS.get(task, HEADLINE_METRICS["classification"]):
        best = best_member_at(members, key, higher)
        value = chosen_metrics.get(key)
        if best is None or value is None:
            continue
        show = (lambda v: f"{100 * v:.2f}%") if fmt == "pct" else fmt.format
        who = f"for the member best at it ({best['name']})" if not parts else f"({best['name']})"
        parts.append(f"{label} {show(value)} vs {show(best[key])} {who}")
    if not parts:
        return f"Chosen: {chosen}."
    return f"Fused {chosen}: " + "; ".join(parts) + "."
