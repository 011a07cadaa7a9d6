"""Calibrate each member (temperature scaling), then fuse with a base strategy."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax
from sklearn.base import clone
from torch import nn

from modelfusion.errors import StrategyError
from modelfusion.outputs import EPS
from modelfusion.predictions import PredictionSet, as_prediction_set
from modelfusion.strategies.averaging import Mean
from modelfusion.strategies.base import Strategy, get_strategy

METHODS: tuple[str, ...] = ("temperature",)
#: Bounds of the temperature search; beyond them a member is best replaced, not rescaled.
TEMPERATURE_BOUNDS: tuple[float, float] = (0.05, 20.0)


class Calibrated(Strategy):
    """Temperature-scale every member on validation data, then fuse with ``base``.

    Each member ``m`` gets one temperature ``T_m`` minimising the validation NLL of
    ``softmax(log p_m / T_m)`` (Guo et al., 2017, "On Calibration of Modern Neural
    Networks"); multi-label members use ``sigmoid(logit(p_m) / T_m)``. ``T > 1`` softens an
    overconfident member, ``T < 1`` sharpens an underconfident one. The base strategy is
    then fitted on the calibrated predictions. It is as symmetric in the members as its base.

    Parameters
    ----------
    base : a strategy, or its registry name (``"mean"``, ``"greedy"``, ...); default
        :class:`Mean`. Cloned (or built) into ``base_``.
    method : {"temperature"}

    Learned: ``temperatures_`` [members], ``base_``; ``weights_`` is ``base_.weights_``.

    Examples
    --------
    >>> cal = Calibrated(base=WeightedAverage(weights="validation")).fit(val_preds, y_val)
    >>> cal.temperatures_
    array([1.4, 0.9, 3.2])
    >>> cal.combine(test_preds).shape
    (1000, 10)
    >>> cal.calibrate(test_preds)        # the calibrated members, as a PredictionSet
    """

    alias = "calibrated"
    tasks = ("classification", "multilabel")

    def __init__(self, base: Strategy | str | None = None, method: str = "temperature"):
        self.base = base
        self.method = method

    def _needs_labels(self) -> bool:
        return True

    @property
    def weights_(self) -> np.ndarray:
        """Member weights of the fitted base strategy (AttributeError when it has none)."""
        base = self.__dict__.get("base_")
        if base is None or not hasattr(base, "weights_"):
            raise AttributeError(f"{type(self).__name__} has no weights_ (unfitted, or its base has none)")
        return base.weights_

    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        assert y is not None  # fit() checked: this strategy learns from labels
        if self.method not in METHODS:
            raise StrategyError(f"Calibrated method={self.method!r} is not one of {', '.join(METHODS)}")
        base = Mean() if self.base is None else self.base
        if isinstance(base, str):
            base = get_strategy(base)
        if not isinstance(base, Strategy):
            raise StrategyError(
                f"Calibrated base must be a Strategy (e.g. Mean(), WeightedAverage()), got {type(base).__name__}"
            )
        multilabel = self.task_ == "multilabel"
        self.temperatures_ = np.array(
            [fit_temperature(preds.proba[m], y, multilabel=multilabel) for m in range(preds.n_members)]
        )
        calibrated = self._calibrated_set(preds, classes=np.arange(preds.n_outputs), labels=None)
        self.base_ = clone(base).fit(calibrated, y)

    def _combine(self, preds: PredictionSet) -> np.ndarray:
        return self.base_.combine(
            self._calibrated_set(preds, classes=np.arange(preds.n_outputs), labels=None)
        )

    def calibrate(self, predictions: PredictionSet | np.ndarray) -> PredictionSet:
        """The members' temperature-scaled predictions, as a PredictionSet of probabilities."""
        self._check_fitted()
        preds = self._align(as_prediction_set(predictions))
        return self._calibrated_set(preds, classes=preds.classes, labels=preds.labels)

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        return CalibratedModule(
            self.temperatures_, self.base_.to_torch(), multilabel=self.task_ == "multilabel"
        )

    def _calibrated_set(self, preds: PredictionSet, classes, labels) -> PredictionSet:
        proba = apply_temperatures(preds.proba, self.temperatures_, multilabel=self.task_ == "multilabel")
        return PredictionSet(
            proba.astype(np.float32),
            names=preds.names,
            kind="proba",
            classes=classes,
            task=preds.task,
            labels=labels,
            metadata=preds.metadata,
        )


def fit_temperature(proba: np.ndarray, y: np.ndarray, multilabel: bool = False) -> float:
    """The temperature minimising the NLL of one member's probabilities [samples, classes].

    y: class indices [samples], or a 0/1 matrix [samples, labels] when ``multilabel``.
    Searched over log T in ``[log 0.05, log 20]`` (bounded Brent).
    """
    if multilabel:
        z = _logit(proba.astype(np.float64))
        t = np.asarray(y, dtype=np.float64)

        def nll(log_t: float) -> float:
            s = z / np.exp(log_t)
            # BCE with logits, stable: log(1 + e^s) - t * s
            return float(np.mean(np.logaddexp(0.0, s) - t * s))
    else:
        logp = np.log(np.clip(proba.astype(np.float64), EPS, None))
        rows = np.arange(len(y))

        def nll(log_t: float) -> float:
            return float(-log_softmax(logp / np.exp(log_t), axis=1)[rows, y].mean())

    lo, hi = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def apply_temperatures(proba: np.ndarray, temperatures: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Temperature-scaled probabilities [members, samples, classes]; one T per member."""
    p = np.asarray(proba)
    dtype = p.dtype if p.dtype.kind == "f" else np.dtype(np.float64)
    out = np.empty(p.shape, dtype=dtype)
    for m, temperature in enumerate(np.asarray(temperatures, dtype=np.float64)):
        # one member at a time, in the input's precision: no full-size float64 temporaries
        if multilabel:
            out[m] = expit(_logit(p[m]) / temperature)
            continue
        logp = np.log(np.clip(p[m], EPS, None)).astype(dtype, copy=False)
        logp /= temperature
        logp -= logp.max(axis=1, keepdims=True)
        np.exp(logp, out=logp)
        logp /= logp.sum(axis=1, keepdims=True)
        out[m] = logp
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, EPS, None)) - np.log(np.clip(1.0 - p, EPS, None))


class CalibratedModule(nn.Module):
    """Per-member temperature scaling on scores [members, batch, classes], then the base rule."""

    temperatures: torch.Tensor  # a buffer

    def __init__(self, temperatures: np.ndarray, base: nn.Module, multilabel: bool):
        super().__init__()
        self.multilabel = multilabel
        self.register_buffer(
            "temperatures", torch.as_tensor(temperatures, dtype=torch.float32).view(-1, 1, 1)
        )
        self.base = base

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        logp = torch.log(scores.clamp_min(EPS))
        if self.multilabel:
            z = logp - torch.log((1.0 - scores).clamp_min(EPS))
            calibrated = torch.sigmoid(z / self.temperatures)
        else:
            calibrated = torch.softmax(logp / self.temperatures, dim=-1)
        return self.base(calibrated)
