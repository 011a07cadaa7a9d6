"""Per-sample (dynamic) rules: trust, for each input, the members that are sure of it."""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import nn

from modelfusion.errors import StrategyError
from modelfusion.outputs import EPS
from modelfusion.predictions import PredictionSet, as_prediction_set
from modelfusion.strategies.base import Strategy

MEASURES: tuple[str, ...] = ("confidence", "entropy")


class MaxConfidence(Strategy):
    """Per sample, output the prediction of the most confident member.

    Confidence is the top-1 probability (multi-label: per label, the distance of ``p``
    from 0.5, so each label is taken from the member most decided about it). When several
    members are equally confident, their predictions are averaged, which keeps the rule
    symmetric in the members.

    ``weights_`` is the share of fit samples each member was chosen for.

    Examples
    --------
    >>> maxconf = MaxConfidence().fit(val_preds)
    >>> maxconf.combine(test_preds).shape
    (1000, 10)
    >>> maxconf.weights_          # how often each member decides, on validation
    array([0.31, 0.02, 0.4 , 0.2 , 0.07])
    """

    alias = "maxconf"
    tasks = ("classification", "multilabel")

    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        sel = max_confidence_selection(preds.proba, multilabel=self.task_ == "multilabel")
        share = sel.mean(axis=tuple(range(1, sel.ndim)))
        self.weights_ = share / share.sum()

    def _combine(self, preds: PredictionSet) -> np.ndarray:
        proba = preds.proba
        sel = max_confidence_selection(proba, multilabel=self.task_ == "multilabel")
        if self.task_ == "multilabel":
            return (sel * proba).sum(axis=0)
        return (sel[..., None] * proba).sum(axis=0)

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        return MaxConfidenceModule(multilabel=self.task_ == "multilabel")


def max_confidence_selection(proba: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Selection weights of :class:`MaxConfidence`, summing to one over members.

    proba: [members, samples, classes]. Returns [members, samples] (multi-label:
    [members, samples, labels]), one-hot on the most confident member, shared on ties.
    """
    conf = np.abs(proba - np.float32(0.5)) if multilabel else proba.max(axis=2)
    sel = (conf == conf.max(axis=0, keepdims=True)).astype(np.float64)
    return sel / sel.sum(axis=0, keepdims=True)


class MaxConfidenceModule(nn.Module):
    """Tensor rule of :class:`MaxConfidence` on scores [members, batch, classes]."""

    def __init__(self, multilabel: bool):
        super().__init__()
        self.multilabel = multilabel

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        conf = (scores - 0.5).abs() if self.multilabel else scores.max(dim=-1).values
        sel = (conf == conf.max(dim=0, keepdim=True).values).to(scores.dtype)
        sel = sel / sel.sum(dim=0, keepdim=True)
        if not self.multilabel:
            sel = sel.unsqueeze(-1)
        return (sel * scores).sum(dim=0)


class DynamicWeighting(Strategy):
    """A weighted average whose member weights change per sample with the members' certainty.

    ``measure="confidence"``: ``w_m(x) ∝ conf_m(x) ** power`` with ``conf`` the top-1
    probability. ``measure="entropy"``: ``w_m(x) ∝ exp(-power * H_m(x))`` with ``H`` the
    entropy of member ``m``'s prediction. For multi-label members both are averaged over
    labels (confidence ``max(p, 1 - p)``, binary entropy). Weights are normalised over the
    members of each sample, then the fused output is ``sum_m w_m(x) * p_m(x)``.

    Confidences computed elsewhere (a member's own uncertainty estimate, say) can be given
    explicitly: :meth:`combine_with_confidences` weights by ``confidences ** power``
    normalised per sample, which is ``confidence / sum of confidences`` at the default
    ``power=1``.

    Parameters
    ----------
    measure : {"confidence", "entropy"}
    power : float >= 0; 0 gives the plain mean, larger values trust the surest member more.

    ``weights_`` is the mean per-sample weight of each member on the fit data.

    Examples
    --------
    >>> dyn = DynamicWeighting(measure="entropy", power=2.0).fit(val_preds)
    >>> fused = dyn.combine(test_preds)                     # [samples, classes]
    >>> dyn.sample_weights(test_preds).shape                # [members, samples]
    (5, 1000)
    >>> DynamicWeighting().combine_with_confidences(scores, confidences)
    >>> combine_records(DynamicWeighting(), [{"model": "resnet", "output": 0.85, "confidence": 0.9},
    ...                                      {"model": "bert", "output": 0.72, "confidence": 0.6}])
    {'fused_score': 0.798, 'weights': {'resnet': 0.6, 'bert': 0.4}, 'sample_weights': {...}}
    """

    alias = "dynamic"
    tasks = ("classification", "multilabel")

    def __init__(self, measure: str = "confidence", power: float = 1.0):
        self.measure = measure
        self.power = power

    def _check_params(self) -> None:
        if self.measure not in MEASURES:
            raise StrategyError(
                f"DynamicWeighting measure={self.measure!r} is not one of {', '.join(MEASURES)}"
            )
        if not isinstance(self.power, numbers.Real) or not np.isfinite(self.power) or self.power < 0:
            raise StrategyError(f"DynamicWeighting power must be a finite number >= 0, got {self.power!r}")

    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        self._check_params()
        self.weights_ = self._weights_from_proba(preds.proba, self.task_).mean(axis=1)

    def _combine(self, preds: PredictionSet) -> np.ndarray:
        w = self._weights_from_proba(preds.proba, self.task_)
        return (w[..., None] * preds.proba).sum(axis=0)

    def sample_weights(
        self, predictions: PredictionSet | np.ndarray | None = None, *, confidences: np.ndarray | None = None
    ) -> np.ndarray:
        """Per-sample member weights, float array [members, samples]; each column sums to one.

        Give either ``predictions`` (weights from the chosen ``measure``) or
        ``confidences`` [members, samples] (weights ``confidences ** power``, normalised).
        Needs no fit; once fitted, members are put in the fitted order.
        """
        self._check_params()
        if confidences is not None:
            return _normalise_confidences(confidences, self.power)
        if predictions is None:
            raise StrategyError("DynamicWeighting.sample_weights needs predictions or confidences=")
        preds = as_prediction_set(predictions)
        if hasattr(self, "names_"):
            preds = self._align(preds)
        return self._weights_from_proba(preds.proba, preds.task)

    def combine_with_confidences(self, scores: np.ndarray, confidences: np.ndarray) -> np.ndarray:
        """Fuse scores [members, samples, outputs] with explicit confidences [members, samples].

        Returns ``sum_m w[m, i] * scores[m, i]`` [samples, outputs] with ``w`` from
        :meth:`sample_weights`; needs no fit.
        """
        self._check_params()
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 3:
            raise StrategyError(f"scores must be [members, samples, outputs], got shape {scores.shape}")
        w = _normalise_confidences(confidences, self.power)
        if w.shape != scores.shape[:2]:
            raise StrategyError(
                f"confidences have shape {w.shape} but scores have {scores.shape[:2]} members x samples"
            )
        return (w[..., None] * scores).sum(axis=0)

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        return DynamicWeightingModule(self.measure, float(self.power), multilabel=self.task_ == "multilabel")

    def _weights_from_proba(self, proba: np.ndarray, task: str) -> np.ndarray:
        p = np.asarray(proba, dtype=np.float64)
        if self.measure == "confidence":
            conf = np.maximum(p, 1.0 - p).mean(axis=2) if task == "multilabel" else p.max(axis=2)
            logits = self.power * np.log(np.clip(conf, EPS, None))
        else:
            logits = -self.power * _entropy(p, multilabel=task == "multilabel")
        logits -= logits.max(axis=0, keepdims=True)
        w = np.exp(logits)
        return w / w.sum(axis=0, keepdims=True)


def _entropy(p: np.ndarray, multilabel: bool) -> np.ndarray:
    """Entropy in nats [members, samples] of probabilities [members, samples, classes]."""
    h = -p * np.log(np.clip(p, EPS, None))
    if multilabel:
        h = h - (1.0 - p) * np.log(np.clip(1.0 - p, EPS, None))
        return h.mean(axis=2)
    return h.sum(axis=2)


def _normalise_confidences(confidences: np.ndarray, power: float) -> np.ndarray:
    c = np.asarray(confidences, dtype=np.float64)
    if c.ndim != 2:
        raise StrategyError(f"confidences must be [members, samples], got shape {c.shape}")
    if not np.isfinite(c).all() or (c < 0).any():
        raise StrategyError(
            f"confidences must be finite and >= 0; got values in [{np.nanmin(c):.3g}, {np.nanmax(c):.3g}]"
        )
    c = c**power
    total = c.sum(axis=0, keepdims=True)
    if (total <= 0).any():
        bad = np.flatnonzero(total[0] <= 0)[:5].tolist()
        raise StrategyError(
            f"confidences are all zero for samples {bad}; each sample needs one positive value"
        )
    return c / total


class DynamicWeightingModule(nn.Module):
    """Tensor rule of :class:`DynamicWeighting` on scores [members, batch, classes]."""

    def __init__(self, measure: str, power: float, multilabel: bool):
        super().__init__()
        self.measure = measure
        self.power = power
        self.multilabel = multilabel

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if self.measure == "confidence":
            if self.multilabel:
                conf = torch.maximum(scores, 1.0 - scores).mean(dim=-1)
            else:
                conf = scores.max(dim=-1).values
            logits = self.power * torch.log(conf.clamp_min(EPS))
        else:
            h = -scores * torch.log(scores.clamp_min(EPS))
            if self.multilabel:
                h = (h - (1.0 - scores) * torch.log((1.0 - scores).clamp_min(EPS))).mean(dim=-1)
            else:
                h = h.sum(dim=-1)
            logits = -self.power * h
        w = torch.softmax(logits, dim=0)
        return (w.unsqueeze(-1) * scores).sum(dim=0)
