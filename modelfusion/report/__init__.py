"""Fusion reports: the data they show, their figures, and HTML/Markdown/JSON output."""

from modelfusion.report.data import FusionReport
from modelfusion.report.plots import (
    cv_figure,
    deployment_breakdown_figure,
    deployment_figure,
    error_correlation_figure,
    plot_fusion_comparison,
    reliability_figure,
    strategy_comparison_figure,
    weights_figure,
)
from modelfusion.report.render import format_value, render_markdown_table, summary_sentence, write_report

__all__ = [
    "FusionReport",
    "cv_figure",
    "deployment_breakdown_figure",
    "deployment_figure",
    "error_correlation_figure",
    "format_value",
    "plot_fusion_comparison",
    "reliability_figure",
    "render_markdown_table",
    "strategy_comparison_figure",
    "summary_sentence",
    "weights_figure",
    "write_report",
]
