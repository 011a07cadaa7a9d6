import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelfusion.evaluation import (
    diversity_summary,
    error_correlation,
    oracle_accuracy,
    pairwise_disagreement,
)
from modelfusion.predictions import PredictionSet


def one_hot_scores(predictions, classes=3):
    """[members, samples] class predictions -> [members, samples, classes] scores."""
    return np.eye(classes)[np.asarray(predictions)] * 0.8 + 0.2 / classes


def random_members(m=4, n=300, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    scores = rng.dirichlet(np.ones(classes), size=(m, n))
    scores[:, np.arange(n), y] += rng.random((m, 1)) * 0.5
    return y, scores / scores.sum(axis=2, keepdims=True)


def test_identical_members_never_disagree_and_errors_correlate_fully():
    y, scores = random_members(m=1)
    same = np.repeat(scores, 3, axis=0)
    np.testing.assert_array_equal(pairwise_disagreement(same, y), np.zeros((3, 3)))
    np.testing.assert_allclose(error_correlation(same, y), np.ones((3, 3)))


def test_hand_computed_small_case():
    y = np.array([0, 1, 2, 0])
    preds = [
        [0, 1, 2, 1],  # wrong on sample 3
        [0, 1, 1, 0],  # wrong on sample 2
        [1, 1, 2, 1],  # wrong on samples 0 and 3
    ]
    scores = one_hot_scores(preds)
    d = pairwise_disagreement(scores, y)
    np.testing.assert_allclose(d, [[0, 0.5, 0.25], [0.5, 0, 0.75], [0.25, 0.75, 0]])
    # errors: a=[0,0,0,1], b=[0,0,1,0], c=[1,0,0,1]
    corr = error_correlation(scores, y)
    assert corr[0, 1] == pytest.approx(-1 / 3)
    assert corr[0, 2] == pytest.approx(np.corrcoef([0, 0, 0, 1], [1, 0, 0, 1])[0, 1])
    assert oracle_accuracy(scores, y) == 1.0


def test_oracle_accuracy_is_at_least_the_best_members():
    y, scores = random_members()
    best = (scores.argmax(axis=2) == y).mean(axis=1).max()
    assert oracle_accuracy(scores, y) >= best


def test_a_member_that_is_always_right_is_uncorrelated_with_everyone():
    y = np.array([0, 1, 2, 0, 1])
    preds = [[0, 1, 2, 0, 1], [0, 2, 2, 1, 1], [1, 2, 2, 0, 1]]
    corr = error_correlation(one_hot_scores(preds), y)
    np.testing.assert_array_equal(corr[0], [1.0, 0.0, 0.0])
    assert np.isfinite(corr).all()


def test_prediction_set_labels_are_encoded():
    y, scores = random_members(m=3)
    names = ["a", "b", "c"]
    classes = np.array(["ant", "bee", "cat", "dog", "eel"])
    preds = PredictionSet(scores, names=names, classes=classes, labels=classes[y])
    summary = diversity_summary(preds)
    assert summary == diversity_summary(scores, y, names=names)
    assert set(summary["member_accuracy"]) == set(names)
    assert summary["best_member"] in names


def test_summary_reports_means_over_member_pairs():
    y, scores = random_members(m=3)
    summary = diversity_summary(scores, y)
    d = pairwise_disagreement(scores, y)
    assert summary["mean_disagreement"] == pytest.approx(d[np.triu_indices(3, 1)].mean())
    assert summary["oracle_accuracy"] == oracle_accuracy(scores, y)
    assert summary["n_members"] == 3


def test_regression_correlates_residuals_and_has_an_oracle_rmse():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    noise = rng.normal(size=(3, 200))
    noise[1] = noise[0] * 2.0  # same errors, twice as large
    preds = y[None] + noise
    corr = error_correlation(preds[:, :, None], y, task="regression")
    assert corr[0, 1] == pytest.approx(1.0)
    summary = diversity_summary(preds[:, :, None], y, task="regression")
    assert summary["oracle_rmse"] <= min(summary["member_rmse"].values())
    with pytest.raises(ValueError, match="regression"):
        pairwise_disagreement(preds[:, :, None], y, task="regression")
    with pytest.raises(ValueError, match="regression"):
        oracle_accuracy(preds[:, :, None], y, task="regression")


def test_multilabel_compares_label_by_label():
    y = np.array([[1, 0], [0, 1]])
    scores = np.array(
        [
            [[0.9, 0.1], [0.2, 0.8]],  # all right
            [[0.9, 0.9], [0.2, 0.8]],  # one label wrong
        ]
    )
    assert pairwise_disagreement(scores, y)[0, 1] == pytest.approx(0.25)
    assert diversity_summary(scores, y)["member_accuracy"]["member_1"] == pytest.approx(0.75)


def test_labels_are_required_for_error_measures():
    _, scores = random_members()
    with pytest.raises(ValueError, match="needs true labels"):
        error_correlation(scores)


@settings(max_examples=25, deadline=None)
@given(st.permutations(range(4)), st.integers(0, 1000))
def test_permuting_members_permutes_the_matrices(order, seed):
    y, scores = random_members(m=4, n=60, seed=seed)
    order = list(order)
    for fn in (pairwise_disagreement, error_correlation):
        full = fn(scores, y)
        np.testing.assert_allclose(fn(scores[order], y), full[np.ix_(order, order)], atol=1e-12)
        np.testing.assert_allclose(full, full.T, atol=1e-12)
