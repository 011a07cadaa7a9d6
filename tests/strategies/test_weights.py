"""OptimizedWeights: simplex weights minimising a validation loss."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from scipy.optimize import approx_fprime, check_grad

from modelfusion.errors import MissingDependencyError, StrategyError
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.averaging import Mean
from modelfusion.strategies.weights import MixtureLoss, OptimizedWeights


def nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(y)), y].astype(np.float64), 1e-12, None)).mean())


def test_optimized_weights_loss_not_worse_than_mean_or_best_member_on_digits_validation(digits_predictions):
    val, y_val, _, _ = digits_predictions
    opt = OptimizedWeights().fit(val, y_val)
    assert opt.loss_ == pytest.approx(nll(opt.combine(val), y_val), rel=1e-5)
    assert opt.loss_ <= nll(Mean().fit(val).combine(val), y_val)
    assert opt.loss_ <= min(nll(val.proba[m], y_val) for m in range(val.n_members)) + 1e-9
    assert opt.weights_.sum() == pytest.approx(1.0) and (opt.weights_ >= 0).all()


@pytest.mark.parametrize("metric", ["nll", "brier"])
def test_optimized_weights_analytic_gradient_matches_finite_differences(random_predictions, metric):
    loss = MixtureLoss(random_predictions, random_predictions.labels, metric)
    rng = np.random.default_rng(0)
    for _ in range(3):
        theta = rng.normal(size=random_predictions.n_members)
        err = check_grad(
            lambda t: loss.theta_value_and_grad(t)[0], lambda t: loss.theta_value_and_grad(t)[1], theta
        )
        assert err < 1e-5
        w = rng.dirichlet(np.ones(random_predictions.n_members))
        numeric = approx_fprime(w, loss.value, 1e-7)
        np.testing.assert_allclose(loss.value_and_grad(w)[1], numeric, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("metric", ["mse", "rmse"])
def test_optimized_weights_regression_gradient_matches_finite_differences(regression_predictions, metric):
    preds, y = regression_predictions
    loss = MixtureLoss(preds, y, metric)
    w = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(
        loss.value_and_grad(w)[1], approx_fprime(w, loss.value, 1e-7), rtol=1e-4, atol=1e-6
    )


def test_optimized_weights_bayes_not_worse_than_a_20_point_grid_with_two_members(digits_predictions):
    val, y_val, _, _ = digits_predictions
    pair = val.subset(["logreg", "knn"])
    p = pair.proba
    grid = min(nll(w * p[0] + (1 - w) * p[1], y_val) for w in np.linspace(0.0, 1.0, 20))
    opt = OptimizedWeights(method="bayes", n_calls=20).fit(pair, y_val)
    assert opt.n_evaluations_ == 20
    assert opt.loss_ <= grid * (1 + 1e-3)


def test_optimized_weights_slsqp_reaches_the_softmax_optimum(digits_predictions):
    val, y_val, _, _ = digits_predictions
    soft = OptimizedWeights().fit(val, y_val)
    slsqp = OptimizedWeights(method="slsqp").fit(val, y_val)
    assert slsqp.loss_ == pytest.approx(soft.loss_, rel=1e-4)


def test_optimized_weights_multilabel_not_worse_than_mean():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, size=(150, 3))
    logits = rng.normal(scale=1.5, size=(3, 150, 3)) + np.array([2.0, 0.5, 1.0])[:, None, None] * (2 * y - 1)
    preds = PredictionSet(1 / (1 + np.exp(-logits)), task="multilabel")
    opt = OptimizedWeights().fit(preds, y)
    p = Mean().fit(preds).combine(preds)
    mean_bce = -np.where(y == 1, np.log(p), np.log(1 - p)).mean()
    assert opt.combine(preds).shape == (150, 3)
    assert opt.loss_ <= mean_bce


def test_optimized_weights_regression_mse_not_worse_than_best_member(regression_predictions):
    preds, y = regression_predictions
    opt = OptimizedWeights(metric="mse").fit(preds, y)
    member_mse = ((preds.outputs[:, :, 0] - y) ** 2).mean(axis=1)
    assert opt.loss_ <= member_mse.min()
    assert opt.weights_.argmax() == 0  # the least noisy regressor carries the most weight


def test_optimized_weights_gp_sampler_runs(random_predictions):
    opt = OptimizedWeights(method="bayes", sampler="gp", n_calls=8).fit(random_predictions)
    assert opt.n_evaluations_ == 8
    assert opt.weights_.sum() == pytest.approx(1.0)


def test_optimized_weights_without_labels_raises_a_clear_error(random_predictions):
    unlabeled = PredictionSet(random_predictions.proba)
    with pytest.raises(StrategyError, match="OptimizedWeights learns from labels: pass y"):
        OptimizedWeights().fit(unlabeled)


def test_optimized_weights_bayes_without_optuna_names_the_extra(random_predictions, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # makes `import optuna` raise ImportError
    with pytest.raises(MissingDependencyError, match=r'pip install "modelfusion\[optuna\]"') as info:
        OptimizedWeights(method="bayes").fit(random_predictions)
    assert isinstance(info.value, ImportError)


def test_optimized_weights_error_metric_needs_bayes(random_predictions):
    with pytest.raises(StrategyError, match="method='bayes'"):
        OptimizedWeights(metric="accuracy").fit(random_predictions)


def test_optimized_weights_to_torch_matches_combine(digits_predictions):
    val, y_val, test, _ = digits_predictions
    opt = OptimizedWeights().fit(val, y_val)
    with torch.no_grad():
        out = opt.to_torch()(torch.from_numpy(test.proba)).numpy()
    np.testing.assert_allclose(out, opt.combine(test), atol=1e-6)
