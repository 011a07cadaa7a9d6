"""The tutorial's ``modelfusion.eval``: metrics from :mod:`modelfusion.evaluation`, plots from
:mod:`modelfusion.report`, re-exported.

Examples
--------
>>> from modelfusion.eval import plot_fusion_comparison
>>> ax = plot_fusion_comparison({"weighted_avg": [0.85, 0.88, 0.83], "voting": [0.82, 0.86, 0.84]})
>>> plt.savefig("comparison.png")
"""

from modelfusion.evaluation import (
    METRICS,
    accuracy,
    bootstrap_ci,
    brier,
    diversity_summary,
    ece,
    evaluate,
    get_metric,
    macro_f1,
    mae,
    nll,
    r2,
    rmse,
    top_k_accuracy,
)
from modelfusion.report import plot_fusion_comparison

__all__ = [
    "METRICS",
    "accuracy",
    "bootstrap_ci",
    "brier",
    "diversity_summary",
    "ece",
    "evaluate",
    "get_metric",
    "macro_f1",
    "mae",
    "nll",
    "plot_fusion_comparison",
    "r2",
    "rmse",
    "top_k_accuracy",
]
