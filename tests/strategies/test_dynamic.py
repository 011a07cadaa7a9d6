"""MaxConfidence and DynamicWeighting: member weights that change per sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelfusion.errors import StrategyError
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.dynamic import DynamicWeighting, MaxConfidence


def _two_members() -> PredictionSet:
    # Sample 0: member a is surer; sample 1: member b is surer.
    p = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.3, 0.7], [0.05, 0.95]]], dtype=np.float32)
    return PredictionSet(p, names=["a", "b"])


def _multilabel(seed: int = 0) -> PredictionSet:
    rng = np.random.default_rng(seed)
    return PredictionSet(rng.random((3, 40, 4)).astype(np.float32), task="multilabel")


# -- MaxConfidence ------------------------------------------------------------------------------


def test_maxconf_takes_the_most_confident_member_per_sample():
    preds = _two_members()
    fused = MaxConfidence().fit(preds).combine(preds)
    np.testing.assert_allclose(fused, [[0.9, 0.1], [0.05, 0.95]], atol=1e-7)


def test_maxconf_averages_equally_confident_members():
    preds = PredictionSet(np.array([[[0.8, 0.2]], [[0.2, 0.8]]], dtype=np.float32))
    np.testing.assert_allclose(MaxConfidence().fit(preds).combine(preds), [[0.5, 0.5]])


def test_maxconf_share_is_how_often_each_member_decides():
    preds = _two_members()
    np.testing.assert_allclose(MaxConfidence().fit(preds).weights_, [0.5, 0.5])


def test_maxconf_multilabel_takes_each_label_from_the_member_farthest_from_half():
    p = np.array([[[0.9, 0.45]], [[0.3, 0.05]]], dtype=np.float32)
    preds = PredictionSet(p, task="multilabel")
    np.testing.assert_allclose(MaxConfidence().fit(preds).combine(preds), [[0.9, 0.05]], atol=1e-7)


def test_maxconf_multilabel_to_torch_matches_combine():
    preds = _multilabel()
    strategy = MaxConfidence().fit(preds)
    with torch.no_grad():
        out = strategy.to_torch()(torch.tensor(preds.scores)).numpy()
    np.testing.assert_allclose(out, strategy.combine(preds), atol=1e-5)


# -- DynamicWeighting ---------------------------------------------------------------------------


def test_confidence_weighting_follows_top1_probability_to_the_power():
    preds = _two_members()
    w = DynamicWeighting(measure="confidence", power=2.0).sample_weights(preds)
    expected = np.array([[0.9, 0.6], [0.7, 0.95]]) ** 2
    np.testing.assert_allclose(w, expected / expected.sum(axis=0), rtol=1e-6)


def test_entropy_weighting_follows_exp_of_minus_power_times_entropy():
    preds = _two_members()
    p = preds.proba.astype(np.float64)
    h = -(p * np.log(p)).sum(axis=2)
    expected = np.exp(-1.5 * h)
    w = DynamicWeighting(measure="entropy", power=1.5).sample_weights(preds)
    np.testing.assert_allclose(w, expected / expected.sum(axis=0), rtol=1e-6)


def test_combine_is_the_per_sample_weighted_average():
    preds = _two_members()
    dyn = DynamicWeighting().fit(preds)
    w = dyn.sample_weights(preds)
    np.testing.assert_allclose(dyn.combine(preds), (w[..., None] * preds.proba).sum(axis=0), rtol=1e-6)


def test_power_zero_gives_the_plain_mean(random_predictions):
    fused = DynamicWeighting(power=0.0).fit(random_predictions).combine(random_predictions)
    np.testing.assert_allclose(fused, random_predictions.proba.mean(axis=0), atol=1e-6)


def test_sample_weighting_is_members_by_samples_and_sums_to_one(random_predictions):
    w = DynamicWeighting(measure="entropy").fit(random_predictions).sample_weights(random_predictions)
    assert w.shape == (random_predictions.n_members, random_predictions.n_samples)
    np.testing.assert_allclose(w.sum(axis=0), 1.0)


def test_fitted_member_share_is_the_mean_sample_weighting(random_predictions):
    dyn = DynamicWeighting().fit(random_predictions)
    np.testing.assert_allclose(dyn.weights_, dyn.sample_weights(random_predictions).mean(axis=1))


def test_explicit_confidences_weight_by_their_share():
    scores = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    confidences = np.array([[3.0], [1.0]])
    fused = DynamicWeighting().combine_with_confidences(scores, confidences)
    np.testing.assert_allclose(fused, [[0.75, 0.25]])
    np.testing.assert_allclose(DynamicWeighting().sample_weights(confidences=confidences), [[0.75], [0.25]])


def test_multilabel_to_torch_matches_combine():
    preds = _multilabel()
    for measure in ("confidence", "entropy"):
        strategy = DynamicWeighting(measure=measure).fit(preds)
        with torch.no_grad():
            out = strategy.to_torch()(torch.tensor(preds.scores)).numpy()
        np.testing.assert_allclose(out, strategy.combine(preds), atol=1e-5)


# -- bad input ----------------------------------------------------------------------------------


def test_unknown_measure_is_rejected_with_its_name(random_predictions):
    with pytest.raises(StrategyError, match="'variance'"):
        DynamicWeighting(measure="variance").fit(random_predictions)


def test_negative_power_is_rejected_with_its_value(random_predictions):
    with pytest.raises(StrategyError, match="-2"):
        DynamicWeighting(power=-2).fit(random_predictions)


def test_negative_confidences_are_rejected():
    with pytest.raises(StrategyError, match=r"-0\.5"):
        DynamicWeighting().sample_weights(confidences=np.array([[1.0, -0.5], [1.0, 1.0]]))


def test_confidences_of_the_wrong_shape_are_rejected():
    scores = np.ones((2, 3, 2)) / 2
    with pytest.raises(StrategyError, match=r"\(2, 4\)"):
        DynamicWeighting().combine_with_confidences(scores, np.ones((2, 4)))


@pytest.mark.parametrize("strategy", [MaxConfidence(), DynamicWeighting()], ids=["maxconf", "dynamic"])
def test_regression_is_rejected(regression_predictions, strategy):
    preds, y = regression_predictions
    with pytest.raises(StrategyError, match="does not support regression"):
        strategy.fit(preds, y)


@pytest.mark.parametrize(
    "strategy",
    [MaxConfidence(), DynamicWeighting(), DynamicWeighting(measure="entropy", power=2.0)],
    ids=["maxconf", "dynamic-confidence", "dynamic-entropy"],
)
def test_at_least_as_accurate_as_the_worst_member_on_digits(digits_predictions, strategy):
    val, y_val, test, y_test = digits_predictions
    worst = min((test.proba[m].argmax(axis=1) == y_test).mean() for m in range(test.n_members))
    assert (strategy.fit(val, y_val).predict(test) == y_test).mean() >= worst
