"""MajorityVote: hard votes on top-1 classes, ties broken by the mean probability."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelfusion.errors import StrategyError
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.voting import TIE_BREAK_SCALE, MajorityVote


def _proba(*rows_per_member: list[list[float]]) -> PredictionSet:
    return PredictionSet(np.array(rows_per_member, dtype=np.float32))


def test_output_is_the_share_of_top1_votes():
    preds = _proba([[0.6, 0.3, 0.1]], [[0.2, 0.7, 0.1]], [[0.5, 0.4, 0.1]])
    fused = MajorityVote(tie_break="first").fit(preds).combine(preds)
    np.testing.assert_allclose(fused, [[2 / 3, 1 / 3, 0.0]])


def test_tied_votes_go_to_the_class_with_higher_mean_probability():
    # One vote each for class 0 and class 1; class 1 is more likely on average.
    preds = _proba([[0.51, 0.49]], [[0.05, 0.95]])
    fused = MajorityVote().fit(preds).combine(preds)
    assert fused.argmax(axis=1).tolist() == [1]
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)


def test_tie_break_shifts_vote_shares_by_at_most_the_scale():
    preds = _proba([[0.51, 0.49]], [[0.05, 0.95]])
    fused = MajorityVote().fit(preds).combine(preds)
    np.testing.assert_allclose(fused, [[0.5, 0.5]], atol=TIE_BREAK_SCALE)


def test_member_weighting_decides_between_disagreeing_members():
    preds = _proba([[0.9, 0.1]], [[0.2, 0.8]], [[0.3, 0.7]])
    fused = MajorityVote(weights=[0.6, 0.2, 0.2]).fit(preds).combine(preds)
    assert fused.argmax(axis=1).tolist() == [0]


def test_weighting_can_be_given_by_member_name():
    preds = PredictionSet(np.array([[[0.9, 0.1]], [[0.2, 0.8]]], dtype=np.float32), names=["a", "b"])
    vote = MajorityVote(weights={"a": 3.0, "b": 1.0}).fit(preds)
    np.testing.assert_allclose(vote.weights_, [0.75, 0.25])


def test_multilabel_votes_per_label_at_one_half():
    p = np.array([[[0.9, 0.2, 0.6]], [[0.7, 0.4, 0.1]], [[0.4, 0.1, 0.55]]], dtype=np.float32)
    preds = PredictionSet(p, task="multilabel")
    vote = MajorityVote(tie_break="first").fit(preds)
    np.testing.assert_allclose(vote.combine(preds), [[2 / 3, 0.0, 2 / 3]])
    assert vote.predict(preds).tolist() == [[1, 0, 1]]


def test_multilabel_tie_follows_the_mean_probability():
    p = np.array([[[0.6]], [[0.1]]], dtype=np.float32)  # one vote for, one against; mean 0.35
    preds = PredictionSet(p, task="multilabel")
    assert MajorityVote().fit(preds).predict(preds).tolist() == [[0]]


def test_multilabel_to_torch_matches_combine():
    rng = np.random.default_rng(0)
    preds = PredictionSet(rng.random((4, 50, 3)).astype(np.float32), task="multilabel")
    vote = MajorityVote().fit(preds)
    with torch.no_grad():
        out = vote.to_torch()(torch.tensor(preds.scores)).numpy()
    np.testing.assert_allclose(out, vote.combine(preds), atol=1e-5)


def test_regression_is_rejected(regression_predictions):
    preds, y = regression_predictions
    with pytest.raises(StrategyError, match="does not support regression"):
        MajorityVote().fit(preds, y)


def test_negative_weight_is_rejected_with_its_value(random_predictions):
    with pytest.raises(StrategyError, match=r"-1\.0"):
        MajorityVote(weights=[1.0, -1.0, 1.0, 1.0]).fit(random_predictions)


def test_wrong_number_of_weight_values_is_rejected(random_predictions):
    with pytest.raises(StrategyError, match="got 2 weights for 4 members"):
        MajorityVote(weights=[1.0, 1.0]).fit(random_predictions)


def test_unknown_tie_break_is_rejected_with_its_name(random_predictions):
    with pytest.raises(StrategyError, match="'random'"):
        MajorityVote(tie_break="random").fit(random_predictions)


def test_vote_is_at_least_as_accurate_as_the_worst_member_on_digits(digits_predictions):
    val, y_val, test, y_test = digits_predictions
    worst = min((test.proba[m].argmax(axis=1) == y_test).mean() for m in range(test.n_members))
    accuracy = (MajorityVote().fit(val, y_val).predict(test) == y_test).mean()
    assert accuracy >= worst
