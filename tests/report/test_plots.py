from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from modelfusion.report import (
    cv_figure,
    error_correlation_figure,
    plot_fusion_comparison,
    reliability_figure,
    strategy_comparison_figure,
    weights_figure,
)

TUTORIAL = {"weighted_avg": [0.85, 0.88, 0.83], "voting": [0.82, 0.86, 0.84]}


@pytest.fixture
def fresh_figure():
    fig = plt.figure()
    yield fig
    plt.close(fig)


def test_plot_fusion_comparison_on_the_tutorial_dict(fresh_figure, tmp_path):
    ax = plot_fusion_comparison(TUTORIAL)
    assert isinstance(ax, Axes)
    assert ax.figure is fresh_figure  # drew on the current pyplot axes
    assert len(ax.patches) == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["weighted_avg", "voting"]
    assert ax.get_ylabel() == "score"
    assert ax.get_title()
    plt.savefig(tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").stat().st_size > 1000


def test_plot_fusion_comparison_ranks_losses_lowest_first():
    fig = Figure()
    ax = plot_fusion_comparison({"a": [0.5, 0.6], "b": [0.3, 0.35]}, ax=fig.add_subplot(), metric="nll")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "a"]
    assert ax.get_ylabel() == "nll"


def test_plot_fusion_comparison_on_a_search_result():
    result = SimpleNamespace(
        fold_scores={"stacking": [0.9, 0.91], "mean": [0.88, 0.89], "vote": [0.8, 0.82]}, metric="accuracy"
    )
    fig = Figure()
    ax = plot_fusion_comparison(result, ax=fig.add_subplot())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["stacking", "mean", "vote"]
    assert ax.get_ylabel() == "accuracy"
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.905, 0.885, 0.81])


@pytest.mark.parametrize(
    "bad, message",
    [
        ({}, "no strategies"),
        ({"a": []}, "no scores"),
        ({"a": ["x", "y"]}, "must be numbers"),
        ({"a": "0.85"}, "must be numbers"),
        ({"a": [0.8, float("nan")]}, "NaN"),
    ],
)
def test_plot_fusion_comparison_rejects_bad_scores(bad, message):
    with pytest.raises(ValueError, match=message):
        plot_fusion_comparison(bad, ax=Figure().add_subplot())


def test_plot_fusion_comparison_rejects_other_objects():
    with pytest.raises(TypeError, match="fold_scores"):
        plot_fusion_comparison([0.8, 0.9], ax=Figure().add_subplot())


def test_report_figures_never_touch_pyplot(report):
    before = plt.get_fignums()
    for make in (
        cv_figure,
        strategy_comparison_figure,
        reliability_figure,
        error_correlation_figure,
        weights_figure,
    ):
        assert isinstance(make(report), Figure)
    assert plt.get_fignums() == before


def test_strategy_comparison_shows_every_strategy_and_member(report):
    fig = strategy_comparison_figure(report, n_boot=200)
    ax = fig.axes[0]
    labels = {t.get_text() for t in ax.get_yticklabels()}
    assert labels == set(report.strategy_scores) | set(report.member_names)
    assert any(line.get_linestyle() == "--" for line in ax.get_lines())  # best member reference


def test_weights_figure_is_skipped_without_weights(make_report):
    assert weights_figure(make_report(weights=None)) is None


def test_regression_report_has_no_reliability_diagram(regression_report):
    assert reliability_figure(regression_report) is None
    assert isinstance(strategy_comparison_figure(regression_report, n_boot=100), Figure)
    assert isinstance(error_correlation_figure(regression_report), Figure)


def test_error_correlation_heatmap_is_annotated(report):
    ax = error_correlation_figure(report).axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("1.00") >= 3
    assert np.asarray(ax.images[0].get_array()).shape == (3, 3)


def _variant(name, kind, accuracy, b1, b256, pareto):
    return {
        "name": name,
        "kind": kind,
        "accuracy": accuracy,
        "latency_b1_ms": b1,
        "latency_b256_ms": b256,
        "pareto": pareto,
    }


def test_the_distillation_figure_draws_every_variant_and_the_pareto_front(make_report):
    from modelfusion.report.plots import distillation_figure

    rows = [
        _variant("ensemble (7)", "ensemble", 0.978, 0.1, 0.02, True),
        _variant("distilled", "distilled", 0.966, 0.012, 0.001, False),
        _variant("distilled int8", "int8", 0.966, 0.013, 0.0007, True),
        _variant("50% pruned", "pruned", 0.962, 0.009, 0.0004, True),
    ]
    report = make_report()
    assert distillation_figure(report) is None  # a fusion run without distillation: no figure
    report.distillation = rows
    fig = distillation_figure(report)
    throughput, single = fig.axes[:2]
    assert len(throughput.collections) == 4 and len(single.collections) == 4
    front = throughput.lines[0]
    assert list(front.get_xdata()) == [0.0004, 0.0007, 0.02]
    labels = {t.get_text(): t for t in throughput.texts}
    assert set(labels) == {"ensemble (7)", "distilled", "distilled int8", "50% pruned"}
    # two models at the same accuracy, close in latency: their labels do not sit on each other
    assert labels["distilled"].xyann != labels["distilled int8"].xyann
