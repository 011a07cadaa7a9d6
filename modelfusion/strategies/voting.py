"""Hard (majority) voting on the members' top-1 decisions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from modelfusion.errors import StrategyError
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.base import Strategy, normalize_weights

#: How much of the mean probability is added to the votes to break ties. Votes that differ
#: by less than this count as tied, so it must stay below the smallest real vote difference.
TIE_BREAK_SCALE = 1e-4
TIE_BREAKS: tuple[str, ...] = ("mean", "first")


class MajorityVote(Strategy):
    """Hard voting: each member votes for its top-1 class; the output is the vote share.

    Multiclass and binary: each member casts ``weights[m]`` for its argmax class, and the
    fused row holds the fraction of (weighted) votes per class. Multi-label: each member
    votes per label for ``p >= 0.5``, and the fused value is the share of votes for 1.

    Ties are broken by the mean probability: with ``tie_break="mean"`` the output is
    ``(votes + s * mean_proba) / (1 + s)`` with ``s = 1e-4``, so the argmax (or the 0.5
    threshold) of the output picks, among tied classes, the one the members find most
    likely on average, and rows still sum to one. Votes closer than ``1e-4`` count as
    tied. ``tie_break="first"`` returns the plain vote shares (argmax takes the first class).

    Parameters
    ----------
    weights : one non-negative weight per member (list, or dict keyed by member name), or
        None for one vote each. Normalised to sum to one. With weights the rule is no
        longer symmetric in the members.
    tie_break : {"mean", "first"}

    Examples
    --------
    >>> vote = MajorityVote().fit(val_preds)
    >>> vote.combine(test_preds)[0]         # vote shares for the first sample
    array([0. , 0.6, 0.4, ...])
    >>> vote.predict(test_preds)[:3]
    array([1, 7, 3])
    """

    alias = "vote"
    tasks = ("classification", "multilabel")

    def __init__(
        self,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        tie_break: str = "mean",
    ):
        self.weights = weights
        self.tie_break = tie_break

    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        if self.tie_break not in TIE_BREAKS:
            raise StrategyError(
                f"MajorityVote tie_break={self.tie_break!r} is not one of {', '.join(TIE_BREAKS)}"
            )
        if self.weights is None:
            self.weights_ = np.full(preds.n_members, 1.0 / preds.n_members)
        else:
            self.weights_ = normalize_weights(self.weights, preds.names, "MajorityVote")

    def _combine(self, preds: PredictionSet) -> np.ndarray:
        return vote_shares(
            preds.proba,
            self.weights_,
            multilabel=self.task_ == "multilabel",
            tie_break_scale=TIE_BREAK_SCALE if self.tie_break == "mean" else 0.0,
        )

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        return VoteModule(
            self.weights_,
            multilabel=self.task_ == "multilabel",
            tie_break_scale=TIE_BREAK_SCALE if self.tie_break == "mean" else 0.0,
        )


def vote_shares(
    proba: np.ndarray, weights: np.ndarray, multilabel: bool = False, tie_break_scale: float = 0.0
) -> np.ndarray:
    """Weighted vote shares [samples, classes] from probabilities [members, samples, classes].

    Multiclass: votes for each member's argmax. Multi-label: votes for ``p >= 0.5`` per label.
    ``tie_break_scale`` > 0 blends in that multiple of the mean probability, then renormalises.
    """
    w = np.asarray(weights, dtype=np.float64)
    if multilabel:
        ballots = (proba >= 0.5).astype(np.float64)
    else:
        ballots = np.zeros(proba.shape, dtype=np.float64)
        np.put_along_axis(ballots, proba.argmax(axis=2)[..., None], 1.0, axis=2)
    votes = np.tensordot(w, ballots, axes=(0, 0))
    if tie_break_scale:
        votes = (votes + tie_break_scale * proba.mean(axis=0)) / (1.0 + tie_break_scale)
    return votes


class VoteModule(nn.Module):
    """Tensor rule of :class:`MajorityVote` on scores [members, batch, classes]."""

    weights: torch.Tensor  # a buffer

    def __init__(self, weights: np.ndarray, multilabel: bool, tie_break_scale: float):
        super().__init__()
        self.multilabel = multilabel
        self.tie_break_scale = float(tie_break_scale)
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            ballots = (scores >= 0.5).to(scores.dtype)
        else:
            # One-hot of the argmax by comparison with a range: exportable, first index on ties.
            top = scores.argmax(dim=-1, keepdim=True)
            classes = torch.arange(scores.shape[-1], device=scores.device)
            ballots = (classes == top).to(scores.dtype)
        votes = (ballots * self.weights).sum(dim=0)
        if self.tie_break_scale:
            votes = (votes + self.tie_break_scale * scores.mean(dim=0)) / (1.0 + self.tie_break_scale)
        return votes
