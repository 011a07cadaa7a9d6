"""Member weights on the simplex, optimised for a validation loss.

The loss of a weighted average is a smooth function of the weights, so by default the
weights are parameterised as ``softmax(theta)`` and found with L-BFGS-B from an analytic
gradient. For the NLL only the probability each member gives the observed outcome matters
(the mixture's is the weighted average of the members'), so one evaluation costs
O(members x samples) whatever the number of classes. ``method="bayes"`` searches the weights
with optuna instead, for losses without a useful gradient.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import softmax
from torch import nn

from modelfusion.dependencies import require
from modelfusion.errors import StrategyError
from modelfusion.outputs import EPS
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.averaging import WeightedSum, weighted_mean
from modelfusion.strategies.base import Strategy
from modelfusion.strategies.selection import outcome_proba

#: Losses each method can minimise, per task (``accuracy`` is minimised as its error rate).
GRADIENT_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("nll", "brier"),
    "multilabel": ("nll", "brier"),
    "regression": ("mse", "rmse", "nll"),
}
BAYES_ONLY_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("error", "accuracy"),
    "multilabel": ("error", "accuracy"),
    "regression": ("mae",),
}
METHODS = ("softmax", "slsqp", "bayes")


class OptimizedWeights(Strategy):
    """A weighted average whose weights minimise a validation loss on the simplex.

    Parameters
    ----------
    metric : loss to minimise. Classification and multi-label: ``"nll"`` (default; per-label
        binary log loss for multi-label) or ``"brier"``; with ``method="bayes"`` also
        ``"error"``/``"accuracy"``. Regression: ``"mse"``, ``"rmse"`` (same optimum) or
        ``"nll"`` (Gaussian with a fixed variance, i.e. the MSE); with ``"bayes"`` also ``"mae"``.
    method : ``"softmax"`` (default): ``w = softmax(theta)``, L-BFGS-B with an analytic
        gradient. ``"slsqp"``: SLSQP directly on ``w`` with bounds [0, 1] and ``sum(w) = 1``
        (weights can reach exactly zero). ``"bayes"``: an optuna study of ``n_calls`` trials,
        one weight in [0, 1] per member, normalised to sum to one (all zero means uniform); the
        uniform point and the best single members are tried first. Needs
        ``pip install "modelfusion[optuna]"``.
    n_calls : number of optuna trials (``method="bayes"`` only).
    sampler : ``"tpe"`` (TPESampler) or ``"gp"`` (GPSampler), seeded with ``random_state``.
    random_state : seed of the optuna sampler.

    Attributes
    ----------
    weights_ : float array [members] on the simplex.
    loss_ : validation loss at ``weights_`` (for ``"accuracy"``, the error rate).
    n_evaluations_ : number of loss evaluations the optimiser made.

    Examples
    --------
    >>> opt = OptimizedWeights().fit(val_preds, y_val)
    >>> opt.weights_, opt.loss_
    (array([0.61, 0.02, 0.37]), 0.213)
    >>> OptimizedWeights(method="bayes", n_calls=50, sampler="gp").fit(val_preds, y_val)
    """

    alias = "optimized"
    symmetric = False

    def __init__(
        self,
        metric: str = "nll",
        method: str = "softmax",
        n_calls: int = 20,
        sampler: str = "tpe",
        random_state: int | None = 0,
    ):
        self.metric = metric
        self.method = method
        self.n_calls = n_calls
        self.sampler = sampler
        self.random_state = random_state

    def _needs_labels(self) -> bool:
        return True

    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        assert y is not None  # fit() checked: this strategy learns from labels
        self._check_params(preds.task)
        loss = MixtureLoss(preds, y, self.metric)
        if self.method == "bayes":
            weights, self.n_evaluations_ = self._fit_bayes(loss)
        elif self.method == "slsqp":
            weights, self.n_evaluations_ = self._fit_slsqp(loss)
        else:
            weights, self.n_evaluations_ = self._fit_softmax(loss)
        self.weights_ = weights
        self.loss_ = loss.value(weights)

    def _combine(self, preds: PredictionSet) -> np.ndarray:
        return weighted_mean(preds.scores, self.weights_)

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        return WeightedSum(self.weights_)

    # -- optimisers ------------------------------------------------------------------------
    def _fit_softmax(self, loss: MixtureLoss) -> tuple[np.ndarray, int]:
        result = minimize(
            loss.theta_value_and_grad,
            np.zeros(loss.n_members),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-8},
        )
        return softmax(result.x), int(result.nfev)

    def _fit_slsqp(self, loss: MixtureLoss) -> tuple[np.ndarray, int]:
        m = loss.n_members
        result = minimize(
            loss.value_and_grad,
            np.full(m, 1.0 / m),
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * m,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
            options={"maxiter": 500, "ftol": 1e-12},
        )
        return _to_simplex(result.x), int(result.nfev)

    def _fit_bayes(self, loss: MixtureLoss) -> tuple[np.ndarray, int]:
        optuna = import_optuna()
        m = loss.n_members
        keys = [f"w{i}" for i in range(m)]

        def objective(trial: Any) -> float:
            return loss.value(_to_simplex(np.array([trial.suggest_float(k, 0.0, 1.0) for k in keys])))

        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            if self.sampler == "gp":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    sampler = optuna.samplers.GPSampler(seed=self.random_state)
            else:
                sampler = optuna.samplers.TPESampler(seed=self.random_state)
            study = optuna.create_study(direction="minimize", sampler=sampler)
            # Known good starting points, so the search is never worse than averaging or than
            # the best single members: uniform first, then the corners, best member first.
            corners = np.argsort([loss.value(np.eye(m)[i]) for i in range(m)], kind="stable")
            starts = [dict.fromkeys(keys, 1.0)] + [{k: float(k == keys[i]) for k in keys} for i in corners]
            for params in starts[: max(1, int(self.n_calls) // 2)]:
                study.enqueue_trial(params)
            study.optimize(objective, n_trials=int(self.n_calls))
        finally:
            optuna.logging.set_verbosity(verbosity)
        return _to_simplex(np.array([study.best_params[k] for k in keys])), len(study.trials)

    def _check_params(self, task: str) -> None:
        if self.method not in METHODS:
            raise StrategyError(f"OptimizedWeights method={self.method!r}; use one of {', '.join(METHODS)}")
        allowed = GRADIENT_METRICS[task] + (BAYES_ONLY_METRICS[task] if self.method == "bayes" else ())
        if self.metric not in allowed:
            hint = (
                "; it has no gradient, so use method='bayes'"
                if self.metric in BAYES_ONLY_METRICS[task]
                else ""
            )
            raise StrategyError(
                f"OptimizedWeights metric={self.metric!r} is not available for {task} with "
                f"method={self.method!r} (choose from {', '.join(allowed)}){hint}"
            )
        if self.method == "bayes":
            if int(self.n_calls) < 1:
                raise StrategyError(f"OptimizedWeights n_calls must be >= 1, got {self.n_calls}")
            if self.sampler not in ("tpe", "gp"):
                raise StrategyError(f"OptimizedWeights sampler={self.sampler!r}; use 'tpe' or 'gp'")


class MixtureLoss:
    """Validation loss of a weighted average of members, with its gradient in the weights.

    ``value(w)`` and ``value_and_grad(w)`` take weights [members] (on the simplex);
    ``theta_value_and_grad(theta)`` is the same loss at ``w = softmax(theta)`` with the
    gradient chained through the softmax.
    """

    def __init__(self, preds: PredictionSet, y: np.ndarray, metric: str):
        self.metric = "error" if metric == "accuracy" else metric
        self.n_members = preds.n_members
        if preds.task == "regression":
            self.metric = "mse" if metric == "nll" else self.metric
            self.values = np.asarray(preds.outputs, dtype=np.float64).reshape(preds.n_members, -1)
            self.target = np.asarray(y, dtype=np.float64).reshape(-1)
            self._evaluate = self._values_loss
        elif preds.task == "classification" and self.metric in ("brier", "error"):
            self.proba = preds.proba  # float32 [members, samples, classes]: every class is needed
            self.y = np.asarray(y)
            self._evaluate = self._class_loss
        else:  # NLL, or any multi-label loss: only the probability of the observed outcome counts
            self.p_true = outcome_proba(preds, y)  # [members, outcomes]
            self._evaluate = self._outcome_loss

    def value(self, w: np.ndarray) -> float:
        return self._evaluate(np.asarray(w, dtype=np.float64), need_grad=False)[0]

    def value_and_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = self._evaluate(np.asarray(w, dtype=np.float64), need_grad=True)
        assert grad is not None  # asked for
        return value, grad

    def theta_value_and_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = softmax(theta)
        value, grad_w = self.value_and_grad(w)
        # d softmax: dL/dtheta_i = w_i * (g_i - w . g)
        return value, w * (grad_w - w @ grad_w)

    def _values_loss(self, w: np.ndarray, need_grad: bool) -> tuple[float, np.ndarray | None]:
        resid = w @ self.values - self.target
        if self.metric == "mae":
            return float(np.abs(resid).mean()), None
        mse = float(resid @ resid) / resid.size
        grad = 2.0 * (self.values @ resid) / resid.size if need_grad else None
        if self.metric == "rmse":
            rmse = np.sqrt(mse)
            return float(rmse), None if grad is None else grad / (2.0 * max(rmse, EPS))
        return mse, grad

    def _class_loss(self, w: np.ndarray, need_grad: bool) -> tuple[float, np.ndarray | None]:
        fused = np.tensordot(w, self.proba, axes=(0, 0))  # [samples, classes]
        if self.metric == "error":
            return float((fused.argmax(axis=1) != self.y).mean()), None
        n = len(self.y)
        fused[np.arange(n), self.y] -= 1.0  # now the residual against the one-hot target
        value = float((fused**2).sum(axis=1).mean())
        if not need_grad:
            return value, None
        return value, 2.0 * np.tensordot(self.proba, fused, axes=([1, 2], [0, 1])) / n

    def _outcome_loss(self, w: np.ndarray, need_grad: bool) -> tuple[float, np.ndarray | None]:
        mix = w @ self.p_true  # the mixture's probability of each observed outcome
        n = mix.size
        if self.metric == "error":  # multi-label: share of labels on the wrong side of 0.5
            return float((mix < 0.5).mean()), None
        if self.metric == "brier":  # multi-label: mean over labels of (1 - p_true)^2
            gap = 1.0 - mix
            return float(gap @ gap) / n, (-2.0 * (self.p_true @ gap) / n if need_grad else None)
        mix = np.clip(mix, EPS, None)
        value = float(-np.log(mix).mean())
        return value, (-(self.p_true @ (1.0 / mix)) / n if need_grad else None)


def import_optuna() -> Any:
    """Import optuna, or raise :class:`MissingDependencyError` saying how to install it."""
    return require(
        "optuna",
        purpose="OptimizedWeights(method='bayes')",
        extra="optuna",
        alternative="or use method='softmax'",
    )


def _to_simplex(w: np.ndarray) -> np.ndarray:
    """Clip to >= 0 and normalise; an all-zero vector becomes uniform."""
    w = np.clip(np.asarray(w, dtype=np.float64), 0.0, None)
    total = w.sum()
    return w / total if total > 0 else np.full(w.shape, 1.0 / w.size)
