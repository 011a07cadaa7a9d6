"""Averaging rules: arithmetic (soft voting), weighted, geometric, median."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from modelfusion.errors import StrategyError
from modelfusion.outputs import EPS
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.base import Strategy, normalize_weights


class WeightedSum(nn.Module):
    """Tensor rule: ``sum_m w[m] * x[m]`` over scores [members, batch, outputs]."""

    weights: torch.Tensor  # a buffer

    def __init__(self, weights: np.ndarray):
        super().__init__()
        self.register_buffer(
            "weights", torch.as_tensor(np.asarray(weights), dtype=torch.float32).view(-1, 1, 1)
        )

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores * self.weights).sum(dim=0)


class Mean(Strategy):
    """Soft voting: the plain average of member probabilities (or regression values).

    Examples
    --------
    >>> Mean().fit(val_preds).combine(test_preds).shape
    (1000, 10)
    """

    alias = "mean"

    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        self.weights_ = np.full(preds.n_members, 1.0 / preds.n_members)

    def _combine(self, preds: PredictionSet) -> np.ndarray:
        return preds.scores.mean(axis=0)

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        return WeightedSum(self.weights_)


class WeightedAverage(Strategy):
    """A weighted average of member outputs with fixed, non-negative weights.

    Parameters
    ----------
    weights : list (one per member, in member order), dict ``{member_name: weight}``,
        ``"validation"`` (each member weighted by its validation accuracy, or by 1/MSE for
        regression) or None (uniform). Weights are normalised to sum to one.

    Examples
    --------
    >>> fused = WeightedAverage(weights={"cnn": 0.6, "logreg": 0.4}).fit(val_preds).combine(test_preds)
    >>> WeightedAverage(weights="validation").fit(val_preds, y_val).weights_
    array([0.52, 0.48])
    """

    alias = "weighted"
    symmetric = False

    def __init__(self, weights: Sequence[float] | Mapping[str, float] | str | None = None):
        self.weights = weights

    def _needs_labels(self) -> bool:
        return self.weights == "validation"

    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        if self.weights is None:
            self.weights_ = np.full(preds.n_members, 1.0 / preds.n_members)
        elif isinstance(self.weights, str):
            if self.weights != "validation":
                raise StrategyError(
                    f"WeightedAverage weights={self.weights!r}: use a list, a dict or 'validation'"
                )
            assert y is not None  # fit() checked: 'validation' weights learn from labels
            self.weights_ = normalize_weights(validation_scores(preds, y), preds.names, "WeightedAverage")
        else:
            self.weights_ = normalize_weights(self.weights, preds.names, "WeightedAverage")

    def _combine(self, preds: PredictionSet) -> np.ndarray:
        return weighted_mean(preds.scores, self.weights_)

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        return WeightedSum(self.weights_)


class GeometricMean(Strategy):
    """Average log-probabilities, then renormalise (a product of experts).

    Sharper than the arithmetic mean; penalises classes any member finds unlikely.
    Optional ``weights`` as in :class:`WeightedAverage`.

    Examples
    --------
    >>> GeometricMean().fit(val_preds).combine(test_preds).sum(axis=1)  # rows sum to one
    """

    alias = "geometric"
    tasks = ("classification", "multilabel")

    def __init__(self, weights: Sequence[float] | Mapping[str, float] | None = None):
        self.weights = weights

    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        if self.weights is None:
            self.weights_ = np.full(preds.n_members, 1.0 / preds.n_members)
        else:
            self.weights_ = normalize_weights(self.weights, preds.names, "GeometricMean")

    def _combine(self, preds: PredictionSet) -> np.ndarray:
        return geometric_mean(preds.proba, self.weights_, multilabel=self.task_ == "multilabel")

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        return _GeometricModule(self.weights_, multilabel=self.task_ == "multilabel")


class Median(Strategy):
    """Element-wise median across members; robust to one wild member (regression default).

    Examples
    --------
    >>> Median().fit(val_preds).combine(test_preds)
    """

    alias = "median"

    def _combine(self, preds: PredictionSet) -> np.ndarray:
        med = np.median(preds.scores, axis=0)
        if self.task_ == "classification":
            med = med / np.clip(med.sum(axis=1, keepdims=True), EPS, None)
        return med

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        return _MedianModule(renormalise=self.task_ == "classification")


# -- numpy kernels shared with other strategies -----------------------------------------------


def weighted_mean(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_m w[m] * scores[m]``; scores [members, samples, outputs], weights [members]."""
    return np.tensordot(np.asarray(weights, dtype=scores.dtype), scores, axes=(0, 0))


def geometric_mean(proba: np.ndarray, weights: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Weighted geometric mean of probabilities [members, samples, classes], renormalised."""
    w = np.asarray(weights, dtype=np.float64)
    logp = np.tensordot(w, np.log(np.clip(proba, EPS, None)), axes=(0, 0))
    if multilabel:
        logq = np.tensordot(w, np.log(np.clip(1.0 - proba, EPS, None)), axes=(0, 0))
        return 1.0 / (1.0 + np.exp(logq - logp))
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def validation_scores(preds: PredictionSet, y: np.ndarray) -> np.ndarray:
    """Each member's validation score used as its weight: accuracy, or 1/MSE for regression."""
    if preds.task == "regression":
        mse = ((preds.outputs - y.reshape(1, preds.n_samples, -1)) ** 2).mean(axis=(1, 2))
        return 1.0 / np.clip(mse, EPS, None)
    if preds.task == "multilabel":
        return ((preds.proba >= 0.5) == y[None].astype(bool)).mean(axis=(1, 2))
    return (preds.proba.argmax(axis=2) == y[None]).mean(axis=1)


class _GeometricModule(nn.Module):
    weights: torch.Tensor  # a buffer

    def __init__(self, weights: np.ndarray, multilabel: bool):
        super().__init__()
        self.multilabel = multilabel
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        logp = (torch.log(scores.clamp_min(EPS)) * self.weights).sum(dim=0)
        if self.multilabel:
            logq = (torch.log((1.0 - scores).clamp_min(EPS)) * self.weights).sum(dim=0)
            return torch.sigmoid(logp - logq)
        return torch.softmax(logp, dim=-1)


class _MedianModule(nn.Module):
    def __init__(self, renormalise: bool):
        super().__init__()
        self.renormalise = renormalise

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        m = scores.shape[0]
        ordered = torch.sort(scores, dim=0).values
        med = ordered[m // 2] if m % 2 else 0.5 * (ordered[m // 2 - 1] + ordered[m // 2])
        if self.renormalise:
            med = med / med.sum(dim=-1, keepdim=True).clamp_min(EPS)
        return med
