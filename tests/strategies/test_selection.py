"""GreedySelection: Caruana et al. (2004) forward selection with replacement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modelfusion.errors import StrategyError
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.selection import GreedySelection


def member_nlls(preds: PredictionSet, y: np.ndarray) -> np.ndarray:
    p_true = preds.proba[:, np.arange(len(y)), y].astype(np.float64)
    return -np.log(np.clip(p_true, 1e-12, None)).mean(axis=1)


def naive_caruana(
    proba: np.ndarray, y: np.ndarray, ensemble_size: int, loss
) -> tuple[list[int], list[float]]:
    """Textbook loop: rebuild the candidate average for every member in every round."""
    proba = proba.astype(np.float64)
    picks: list[int] = []
    history: list[float] = []
    for _ in range(ensemble_size):
        losses = np.array([loss(proba[picks + [j]].mean(axis=0), y) for j in range(len(proba))])
        tied = np.flatnonzero(np.isclose(losses, losses.min(), rtol=1e-12, atol=0.0))
        used = [j for j in tied if j in picks]
        j = int(used[0] if used else tied[0])
        picks.append(j)
        history.append(float(losses[j]))
    return picks, history


def nll_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def brier_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(((p - np.eye(p.shape[1])[y]) ** 2).sum(axis=1).mean())


def error_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float((p.argmax(axis=1) != y).mean())


def test_greedy_selection_never_worse_than_best_member_on_validation(digits_predictions):
    val, y_val, _, _ = digits_predictions
    greedy = GreedySelection(ensemble_size=30).fit(val, y_val)
    assert greedy.loss_ <= member_nlls(val, y_val).min() + 1e-12


@pytest.mark.parametrize(
    ("metric", "loss"), [("nll", nll_loss), ("brier", brier_loss), ("error", error_loss)]
)
def test_greedy_selection_vectorised_losses_pick_the_same_sequence_as_a_naive_loop(
    random_predictions, metric, loss
):
    y = random_predictions.labels
    greedy = GreedySelection(ensemble_size=15, metric=metric).fit(random_predictions, y)
    picks, history = naive_caruana(random_predictions.proba, y, 15, loss)
    np.testing.assert_allclose(greedy.history_, history, rtol=1e-6, atol=1e-9)
    assert greedy.indices_ == picks[: greedy.best_round_ + 1]


def test_greedy_selection_keeps_the_prefix_with_the_lowest_history_loss(digits_predictions):
    # Caruana's rounds may go up and come back down below an earlier loss (the counts can
    # approach the best weights only in steps of 1/t), so the history is not monotone; what
    # holds is that the kept prefix is the argmin and the weights reproduce its loss.
    val, y_val, _, _ = digits_predictions
    greedy = GreedySelection(ensemble_size=40).fit(val, y_val)
    assert len(greedy.history_) == 40
    assert greedy.best_round_ == int(np.argmin(greedy.history_))
    assert len(greedy.indices_) == greedy.best_round_ + 1
    assert greedy.history_[1] <= greedy.history_[0]  # round two can always re-pick the first member
    assert greedy.loss_ == pytest.approx(greedy.history_[greedy.best_round_], rel=1e-6)  # history is float32


@settings(max_examples=25, deadline=None)
@given(
    members=st.integers(1, 5),
    samples=st.integers(2, 30),
    classes=st.integers(2, 4),
    ensemble_size=st.integers(1, 12),
    metric=st.sampled_from(["nll", "brier", "accuracy"]),
    seed=st.integers(0, 2**16),
)
def test_greedy_selection_weights_are_on_the_simplex(members, samples, classes, ensemble_size, metric, seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(classes), size=(members, samples)).astype(np.float32)
    y = rng.integers(0, classes, samples)
    greedy = GreedySelection(ensemble_size=ensemble_size, metric=metric).fit(PredictionSet(p), y)
    assert greedy.weights_.shape == (members,)
    assert (greedy.weights_ >= 0).all()
    assert greedy.weights_.sum() == pytest.approx(1.0)


def test_greedy_selection_gives_identical_members_one_share_of_the_weight(random_predictions):
    p = random_predictions.proba
    doubled = PredictionSet(np.concatenate([p, p[:1]]), names=["a", "b", "c", "d", "a_copy"])
    greedy = GreedySelection(ensemble_size=20).fit(doubled, random_predictions.labels)
    assert greedy.weights_[4] == 0.0


def test_greedy_selection_bagging_is_reproducible_with_the_same_random_state(digits_predictions):
    val, y_val, _, _ = digits_predictions
    a = GreedySelection(ensemble_size=10, bagging=True, n_bags=8, random_state=3).fit(val, y_val)
    b = GreedySelection(ensemble_size=10, bagging=True, n_bags=8, random_state=3).fit(val, y_val)
    np.testing.assert_array_equal(a.weights_, b.weights_)


def test_greedy_selection_bagging_changes_with_another_seed(digits_predictions):
    val, y_val, _, _ = digits_predictions
    a = GreedySelection(ensemble_size=10, bagging=True, n_bags=8, random_state=3).fit(val, y_val)
    b = GreedySelection(ensemble_size=10, bagging=True, n_bags=8, random_state=4).fit(val, y_val)
    assert not np.array_equal(a.weights_, b.weights_)
    assert len(a.history_) == 8 and len(a.best_round_) == 8
    assert a.weights_.sum() == pytest.approx(1.0)


def test_greedy_selection_sorted_initialisation_starts_with_the_best_members(digits_predictions):
    val, y_val, _, _ = digits_predictions
    greedy = GreedySelection(ensemble_size=3, init_size=3).fit(val, y_val)
    order = np.argsort(member_nlls(val, y_val))
    for t in range(3):  # round t's loss is that of the mean of the t + 1 best members
        expected = nll_loss(val.proba[order[: t + 1]].astype(np.float64).mean(axis=0), y_val)
        assert greedy.history_[t] == pytest.approx(expected, rel=1e-7)  # candidates are scored in float32


def test_greedy_selection_multilabel_nll_not_worse_than_best_member():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=(200, 4))
    logits = rng.normal(scale=1.5, size=(3, 200, 4)) + np.array([1.0, 2.0, 0.5])[:, None, None] * (2 * y - 1)
    preds = PredictionSet(1 / (1 + np.exp(-logits)), task="multilabel")
    greedy = GreedySelection(ensemble_size=20).fit(preds, y)
    p = preds.proba.astype(np.float64)
    member_bce = -np.where(y == 1, np.log(p), np.log(1 - p)).mean(axis=(1, 2))
    assert greedy.combine(preds).shape == (200, 4)
    assert greedy.loss_ <= member_bce.min() + 1e-12


def test_greedy_selection_regression_rmse_not_worse_than_best_member(regression_predictions):
    preds, y = regression_predictions
    greedy = GreedySelection(ensemble_size=20, metric="rmse").fit(preds, y)
    member_rmse = np.sqrt(((preds.outputs[:, :, 0] - y) ** 2).mean(axis=1))
    fused = greedy.combine(preds)[:, 0]
    assert greedy.loss_ == pytest.approx(np.sqrt(((fused - y) ** 2).mean()))
    assert greedy.loss_ <= member_rmse.min()


def test_greedy_selection_to_torch_matches_combine(digits_predictions):
    _, _, test, _ = digits_predictions
    val, y_val, _, _ = digits_predictions
    greedy = GreedySelection(ensemble_size=20).fit(val, y_val)
    with torch.no_grad():
        out = greedy.to_torch()(torch.from_numpy(test.proba)).numpy()
    np.testing.assert_allclose(out, greedy.combine(test), atol=1e-6)


def test_greedy_selection_rejects_a_metric_for_another_task(regression_predictions):
    preds, y = regression_predictions
    with pytest.raises(StrategyError, match="rmse"):
        GreedySelection(metric="brier").fit(preds, y)


def test_greedy_selection_needs_labels(random_predictions):
    unlabeled = PredictionSet(random_predictions.proba)
    with pytest.raises(StrategyError, match="pass y"):
        GreedySelection().fit(unlabeled)
