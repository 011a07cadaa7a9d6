"""Rank averaging: fuse orderings instead of probabilities."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from modelfusion.predictions import PredictionSet
from modelfusion.strategies.base import Strategy

#: Most quantiles kept per member (and label) to map binary scores to ranks.
MAX_QUANTILES = 1024


class RankAverage(Strategy):
    """Average the members' rankings, so members on different scales count equally.

    Multiclass: a Borda count. Within each sample every member ranks the classes (0 for
    its least likely class, ``classes - 1`` for its top class; tied classes share the
    average rank); the ranks are averaged over members and normalised to sum to one.

    Binary and multi-label: each member's positive-class (per-label) score is mapped to
    its empirical CDF on the fit data, ``r = mean_j [score > q_j]`` over at most 1024
    stored quantiles ``quantiles_`` [members, labels, quantiles]; the ranks are averaged
    over members and returned as ``[1 - r, r]`` (binary) or ``r`` (multi-label).

    The outputs are orderings, not calibrated probabilities: use them for argmax, AUC or
    thresholds chosen on validation data, not as confidences (a binary output of 0.7
    means "above 70% of the fit scores", not "70% likely").

    Examples
    --------
    >>> rank = RankAverage().fit(val_preds)
    >>> rank.combine(test_preds).sum(axis=1)      # rows sum to one
    array([1., 1., ...])
    >>> rank.predict(test_preds)[:3]
    array([4, 0, 9])
    """

    alias = "rank"
    tasks = ("classification", "multilabel")

    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        proba = preds.proba
        self.mode_ = "borda" if self.task_ == "classification" and proba.shape[2] > 2 else "ecdf"
        if self.mode_ == "ecdf":
            positive = _positive_scores(proba, self.task_)  # [members, samples, labels]
            n = positive.shape[1]
            if n <= MAX_QUANTILES:
                q = np.sort(positive, axis=1)
            else:
                q = np.quantile(positive, np.linspace(0.0, 1.0, MAX_QUANTILES), axis=1)
                q = np.moveaxis(q, 0, 1)
            # [members, labels, quantiles], sorted along the last axis.
            self.quantiles_ = np.ascontiguousarray(np.moveaxis(q, 1, 2), dtype=np.float32)

    def _combine(self, preds: PredictionSet) -> np.ndarray:
        proba = preds.proba
        if self.mode_ == "borda":
            ranks = rankdata(proba, axis=2, method="average") - 1.0  # [members, samples, classes]
            c = proba.shape[2]
            return ranks.mean(axis=0) / (c * (c - 1) / 2.0)
        positive = _positive_scores(proba, self.task_).astype(np.float32)
        m, n, labels = positive.shape
        ranks = np.empty((m, n, labels))
        for i in range(m):
            for j in range(labels):
                q = self.quantiles_[i, j]
                # Number of quantiles strictly below each score == sum(score > q).
                ranks[i, :, j] = np.searchsorted(q, positive[i, :, j], side="left") / q.size
        r = ranks.mean(axis=0)
        return np.concatenate([1.0 - r, r], axis=1) if self.task_ == "classification" else r

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        if self.mode_ == "borda":
            return BordaModule()
        return EmpiricalRankModule(self.quantiles_, binary=self.task_ == "classification")


def _positive_scores(proba: np.ndarray, task: str) -> np.ndarray:
    """[members, samples, labels]: the positive-class column (binary) or every label."""
    return proba[:, :, 1:2] if task == "classification" else proba


class BordaModule(nn.Module):
    """Tensor Borda count on scores [members, batch, classes] via pairwise comparisons."""

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        a = scores.unsqueeze(-1)
        b = scores.unsqueeze(-2)
        # Average ranks: one point per class beaten, half a point per tie (self-tie removed).
        ranks = (a > b).to(scores.dtype).sum(-1) + 0.5 * ((a == b).to(scores.dtype).sum(-1) - 1.0)
        c = scores.shape[-1]
        return ranks.mean(dim=0) / (c * (c - 1) / 2.0)


class EmpiricalRankModule(nn.Module):
    """Tensor empirical-CDF rank against stored quantiles [members, labels, quantiles]."""

    quantiles: torch.Tensor  # a buffer

    def __init__(self, quantiles: np.ndarray, binary: bool):
        super().__init__()
        self.binary = binary
        self.register_buffer("quantiles", torch.as_tensor(quantiles, dtype=torch.float32))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        positive = scores[..., 1:2] if self.binary else scores  # [members, batch, labels]
        q = self.quantiles.unsqueeze(1)  # [members, 1, labels, quantiles]
        ranks = (positive.unsqueeze(-1) > q).to(scores.dtype).mean(dim=-1)
        r = ranks.mean(dim=0)
        return torch.cat([1.0 - r, r], dim=-1) if self.binary else r
