"""Calibrated: per-member temperature scaling, then a base strategy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from modelfusion.errors import StrategyError
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.averaging import Mean, WeightedAverage
from modelfusion.strategies.calibration import TEMPERATURE_BOUNDS, Calibrated, fit_temperature
from modelfusion.strategies.rank import RankAverage


def _nll(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))))


def _sharpen(p: np.ndarray, power: float) -> np.ndarray:
    q = p.astype(np.float64) ** power
    return (q / q.sum(axis=-1, keepdims=True)).astype(np.float32)


def test_calibrated_mean_has_lower_validation_nll_than_mean_on_digits(digits_predictions):
    val, y_val, _, _ = digits_predictions
    plain = Mean().fit(val).combine(val)
    calibrated = Calibrated().fit(val, y_val).combine(val)
    assert _nll(calibrated, y_val) < _nll(plain, y_val)


def test_calibrated_mean_has_lower_test_nll_than_mean_on_digits(digits_predictions):
    val, y_val, test, y_test = digits_predictions
    plain = Mean().fit(val).combine(test)
    calibrated = Calibrated().fit(val, y_val).combine(test)
    assert _nll(calibrated, y_test) < _nll(plain, y_test)


def test_oversharpened_member_gets_a_temperature_above_one(digits_predictions):
    val, y_val, _, _ = digits_predictions
    outputs = val.outputs.copy()
    outputs[0] = _sharpen(outputs[0], 4.0)  # logreg, made overconfident
    sharpened = PredictionSet(outputs, names=val.names)
    plain_t = Calibrated().fit(val, y_val).temperatures_[0]
    sharp_t = Calibrated().fit(sharpened, y_val).temperatures_[0]
    assert sharp_t > 1.0
    assert sharp_t > 2.0 * plain_t


def test_temperature_of_a_calibrated_member_is_near_one():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(4000, 5))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])  # labels drawn from p: calibrated by construction
    assert fit_temperature(p, y) == pytest.approx(1.0, abs=0.1)


def test_temperatures_stay_within_bounds():
    p = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = np.array([1, 0, 1])  # always confidently wrong: wants an infinite temperature
    t = fit_temperature(p, y)
    assert TEMPERATURE_BOUNDS[0] <= t <= TEMPERATURE_BOUNDS[1]


def test_calibrate_returns_the_members_as_a_prediction_set(digits_predictions):
    val, y_val, test, _ = digits_predictions
    calibrated = Calibrated().fit(val, y_val).calibrate(test)
    assert isinstance(calibrated, PredictionSet)
    assert calibrated.names == test.names
    assert calibrated.proba.shape == test.proba.shape
    np.testing.assert_allclose(calibrated.proba.sum(axis=2), 1.0, atol=1e-5)


def test_combine_applies_the_base_to_the_calibrated_members(digits_predictions):
    val, y_val, test, _ = digits_predictions
    cal = Calibrated().fit(val, y_val)
    np.testing.assert_allclose(cal.combine(test), cal.calibrate(test).proba.mean(axis=0), atol=1e-6)


def test_calibrated_exposes_the_base_strategys_member_weighting(digits_predictions):
    val, y_val, _, _ = digits_predictions
    cal = Calibrated(base=WeightedAverage(weights="validation")).fit(val, y_val)
    np.testing.assert_array_equal(cal.weights_, cal.base_.weights_)
    assert cal.weights_.sum() == pytest.approx(1.0)


def test_calibrated_has_no_member_weighting_when_the_base_has_none(random_predictions):
    cal = Calibrated(base=RankAverage()).fit(random_predictions)
    assert not hasattr(cal, "weights_")


def test_base_can_be_named_by_its_registry_alias(random_predictions):
    cal = Calibrated(base="weighted").fit(random_predictions)
    assert isinstance(cal.base_, WeightedAverage)


def test_base_is_cloned_and_left_unfitted(random_predictions):
    base = Mean()
    cal = Calibrated(base=base).fit(random_predictions)
    assert cal.base_ is not base
    assert not hasattr(base, "names_")


def test_classes_are_kept_when_labels_are_strings():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=(2, 60)).astype(np.float32)
    classes = np.array(["cat", "dog", "owl"])
    preds = PredictionSet(p, classes=classes)
    y = classes[rng.integers(0, 3, 60)]
    cal = Calibrated().fit(preds, y)
    assert set(cal.predict(preds)) <= set(classes)


def test_multilabel_members_get_one_temperature_each_and_export_matches():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (300, 3))
    logits = np.where(y == 1, 1.0, -1.0) + rng.normal(size=(2, 300, 3))
    preds = PredictionSet((1 / (1 + np.exp(-4.0 * logits))).astype(np.float32), task="multilabel")
    cal = Calibrated().fit(preds, y)
    assert cal.temperatures_.shape == (2,)
    assert (cal.temperatures_ > 1.0).all()  # the logits were scaled up by 4
    with torch.no_grad():
        out = cal.to_torch()(torch.tensor(preds.scores)).numpy()
    np.testing.assert_allclose(out, cal.combine(preds), atol=1e-5)


def test_labels_are_required(random_predictions):
    unlabeled = PredictionSet(random_predictions.outputs, names=random_predictions.names)
    with pytest.raises(StrategyError, match="pass y"):
        Calibrated().fit(unlabeled)


def test_unknown_method_is_rejected_with_its_name(random_predictions):
    with pytest.raises(StrategyError, match="'isotonic'"):
        Calibrated(method="isotonic").fit(random_predictions)


def test_a_base_that_is_not_a_strategy_is_rejected(random_predictions):
    with pytest.raises(StrategyError, match="LogisticRegression"):
        Calibrated(base=LogisticRegression()).fit(random_predictions)


def test_regression_is_rejected(regression_predictions):
    preds, y = regression_predictions
    with pytest.raises(StrategyError, match="does not support regression"):
        Calibrated().fit(preds, y)
