"""Gating: a small network that weights the members per sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelfusion.errors import StrategyError
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.averaging import Mean
from modelfusion.strategies.gating import Gating


@pytest.fixture(scope="module")
def digits_gate(digits_predictions):
    val, y_val, _, _ = digits_predictions
    return Gating(epochs=60).fit(val, y_val)


def _torch_out(strategy, preds: PredictionSet) -> np.ndarray:
    with torch.no_grad():
        return strategy.to_torch()(torch.tensor(preds.scores)).numpy()


def test_gating_is_at_least_as_accurate_as_the_mean_on_digits(digits_predictions, digits_gate):
    val, _, test, y_test = digits_predictions
    mean_accuracy = (Mean().fit(val).predict(test) == y_test).mean()
    assert (digits_gate.predict(test) == y_test).mean() >= mean_accuracy


def test_fused_output_is_the_gated_mixture(digits_predictions, digits_gate):
    _, _, test, _ = digits_predictions
    gates = digits_gate.sample_weights(test)
    np.testing.assert_allclose(
        digits_gate.combine(test), (gates[..., None] * test.proba).sum(axis=0), atol=1e-5
    )


def test_gates_are_members_by_samples_and_sum_to_one(digits_predictions, digits_gate):
    _, _, test, _ = digits_predictions
    gates = digits_gate.sample_weights(test)
    assert gates.shape == (test.n_members, test.n_samples)
    np.testing.assert_allclose(gates.sum(axis=0), 1.0, atol=1e-6)


def test_fitted_member_share_is_the_mean_gate(digits_predictions, digits_gate):
    val, _, _, _ = digits_predictions
    np.testing.assert_allclose(digits_gate.weights_, digits_gate.sample_weights(val).mean(axis=1), atol=1e-6)


def test_network_is_left_in_eval_mode(digits_gate):
    assert not digits_gate.network_.training


def test_training_stops_within_the_epoch_budget(digits_gate):
    assert 1 <= digits_gate.n_epochs_ <= 60


def test_an_untrained_gate_is_the_mean(random_predictions):
    # lr so small that nothing moves: the gate stays at its uniform start, i.e. the mean.
    gate = Gating(epochs=2, lr=1e-12).fit(random_predictions)
    np.testing.assert_allclose(gate.weights_, 1.0 / random_predictions.n_members, atol=1e-6)
    np.testing.assert_allclose(
        gate.combine(random_predictions), random_predictions.proba.mean(axis=0), atol=1e-6
    )


def test_saved_state_is_numpy_and_restores_the_same_output(digits_predictions, digits_gate):
    _, _, test, _ = digits_predictions
    state = digits_gate.fitted_state()
    assert "network_" not in state
    assert all(isinstance(v, np.ndarray) for v in state["network_state_"].values())
    assert state["n_features_"] == test.n_members * test.n_outputs
    restored = Gating(epochs=60).set_fitted_state(state)
    np.testing.assert_allclose(restored.combine(test), digits_gate.combine(test), atol=1e-7)


def test_different_random_states_train_different_gates(digits_predictions, digits_gate):
    val, y_val, _, _ = digits_predictions
    other = Gating(epochs=60, random_state=1).fit(val, y_val)
    assert not np.allclose(other.weights_, digits_gate.weights_)


def test_global_torch_random_state_is_left_alone(random_predictions):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Gating(epochs=2).fit(random_predictions)
    assert torch.equal(torch.rand(3), expected)


def test_multilabel_gate_matches_its_export():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 3))
    logits = np.where(y == 1, 1.0, -1.0)[None] + rng.normal(scale=[[[0.5]], [[1.5]]], size=(2, 200, 3))
    preds = PredictionSet((1 / (1 + np.exp(-logits))).astype(np.float32), task="multilabel")
    gate = Gating(epochs=20).fit(preds, y)
    assert gate.combine(preds).shape == (200, 3)
    np.testing.assert_allclose(_torch_out(gate, preds), gate.combine(preds), atol=1e-5)


def test_regression_gate_favours_the_more_accurate_member(regression_predictions):
    preds, y = regression_predictions
    gate = Gating(epochs=80).fit(preds, y)
    assert gate.weights_.argmax() == 0  # r1 has the least noise
    np.testing.assert_allclose(_torch_out(gate, preds), gate.combine(preds), atol=1e-5)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"hidden": 0}, "hidden must be an integer >= 1, got 0"),
        ({"epochs": 2.5}, "epochs must be an integer >= 1, got 2.5"),
        ({"lr": -1.0}, r"lr must be > 0, got -1\.0"),
        ({"weight_decay": -0.1}, r"weight_decay must be >= 0, got -0\.1"),
        ({"features": "logits"}, "'logits'"),
    ],
    ids=["hidden", "epochs", "lr", "weight_decay", "features"],
)
def test_bad_parameters_are_rejected_with_their_value(random_predictions, params, match):
    with pytest.raises(StrategyError, match=match):
        Gating(**params).fit(random_predictions)


def test_labels_are_required(random_predictions):
    unlabeled = PredictionSet(random_predictions.outputs, names=random_predictions.names)
    with pytest.raises(StrategyError, match="pass y"):
        Gating().fit(unlabeled)


def test_gating_reports_the_average_gate_per_member(digits_predictions):
    from modelfusion.strategies.gating import Gating

    val, y_val, _, _ = digits_predictions
    gating = Gating(hidden=4, epochs=5, random_state=0).fit(val, y_val)
    weights, meaning = gating.member_weights(val)
    assert list(weights) == list(val.names) and sum(weights.values()) == pytest.approx(1.0)
    assert gating.member_weights() is None and "average gate" in meaning
