"""Metrics, diversity measures and latency timing for members and fused models."""

from modelfusion.evaluation.diversity import (
    diversity_summary,
    error_correlation,
    oracle_accuracy,
    pairwise_disagreement,
)
from modelfusion.evaluation.metrics import (
    METRICS,
    Metric,
    accuracy,
    bootstrap_ci,
    brier,
    calibration_bins,
    default_metrics,
    ece,
    evaluate,
    get_metric,
    macro_f1,
    mae,
    nll,
    r2,
    rmse,
    score_to_loss,
    top_k_accuracy,
)
from modelfusion.evaluation.timing import measure_latency

__all__ = [
    "METRICS",
    "Metric",
    "accuracy",
    "bootstrap_ci",
    "brier",
    "calibration_bins",
    "default_metrics",
    "diversity_summary",
    "ece",
    "error_correlation",
    "evaluate",
    "get_metric",
    "macro_f1",
    "mae",
    "measure_latency",
    "nll",
    "oracle_accuracy",
    "pairwise_disagreement",
    "r2",
    "rmse",
    "score_to_loss",
    "top_k_accuracy",
]
