"""Greedy ensemble selection with replacement (Caruana et al., 2004).

Start from an empty ensemble (or the ``init_size`` best members), then repeatedly add the
member whose addition most lowers the validation loss of the running average. A member may
be picked many times, so the result is a weighted average whose weights are selection
counts. As in AutoGluon, the prefix of picks with the lowest loss is kept.

Every round scores all members at once from a running sum, so a round costs one pass over
what the metric needs: for NLL only the probability each member gives the observed outcome,
an array [members, samples], is ever touched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.errors import StrategyError
from modelfusion.outputs import EPS
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.averaging import WeightedSum, weighted_mean
from modelfusion.strategies.base import Strategy

#: Metrics greedy selection can optimise, per task. ``accuracy`` is optimised as its error.
SELECTION_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("nll", "brier", "error", "accuracy"),
    "multilabel": ("nll", "brier", "error", "accuracy"),
    "regression": ("rmse", "mse", "mae", "nll"),
}


class GreedySelection(Strategy):
    """Forward selection of members with replacement (Caruana et al., 2004).

    Parameters
    ----------
    ensemble_size : number of selection rounds (picks, counting the initial ones).
    metric : validation loss to minimise. Classification and multi-label: ``"nll"`` (log loss;
        per-label binary log loss for multi-label), ``"brier"`` (sum over classes of squared
        errors, averaged over samples; per label for multi-label), ``"error"`` or
        ``"accuracy"`` (the error rate is minimised). Regression: ``"rmse"``, ``"mse"``,
        ``"mae"``; ``"nll"`` means the Gaussian NLL with a fixed variance, which ranks
        ensembles exactly as the MSE does, so it is optimised as ``"mse"``.
    bagging : Caruana's bagged selection: run ``n_bags`` selections, each on a random subset
        of ``bag_fraction`` of the members, and average their weights. Guards against
        over-fitting the validation set when there are many members.
    n_bags : number of bags when ``bagging`` is on.
    bag_fraction : fraction of the members drawn (without replacement) for each bag.
    init_size : sorted initialisation: start from the ``init_size`` individually best
        members, each picked once (0 starts from an empty ensemble).
    random_state : seed of the bag draws (selection itself is deterministic).

    Attributes
    ----------
    weights_ : float array [members], selection counts / total picks; sums to one.
    history_ : validation loss after each round (for ``"accuracy"``, the error rate).
        With bagging, a list with one such list per bag.
    best_round_ : index in ``history_`` of the lowest loss; picks after it are dropped.
        With bagging, one index per bag.
    indices_ : member indices picked, in order, up to ``best_round_`` (without bagging).
    loss_ : validation loss of the final weights on all fit samples.

    Ties between candidates (within a relative 1e-12) go to a member already in the ensemble,
    then to the lowest index, so identical members never split the weight.

    Examples
    --------
    >>> greedy = GreedySelection(ensemble_size=50, metric="nll").fit(val_preds, y_val)
    >>> greedy.weights_                 # e.g. array([0.46, 0.0, 0.3, 0.24, 0.0])
    >>> fused = greedy.combine(test_preds)
    """

    alias = "greedy"
    #: learned: the loss per round (per bag: one list each), the best round (per bag), the picks
    history_: Any
    best_round_: Any
    indices_: Any
    symmetric = False

    def __init__(
        self,
        ensemble_size: int = 50,
        metric: str = "nll",
        bagging: bool = False,
        n_bags: int = 20,
        bag_fraction: float = 0.5,
        init_size: int = 0,
        random_state: int | None = 0,
    ):
        self.ensemble_size = ensemble_size
        self.metric = metric
        self.bagging = bagging
        self.n_bags = n_bags
        self.bag_fraction = bag_fraction
        self.init_size = init_size
        self.random_state = random_state

    def _needs_labels(self) -> bool:
        return True

    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        assert y is not None  # fit() checked: this strategy learns from labels
        self._check_params(preds.task)
        scorer = make_mixture_scorer(preds, y, self.metric)
        n_members = preds.n_members
        if not self.bagging:
            counts, self.history_, self.best_round_, self.indices_ = greedy_select(
                scorer, self.ensemble_size, self.init_size
            )
            self.weights_ = counts / counts.sum()
        else:
            rng = np.random.default_rng(self.random_state)
            bag_size = max(1, int(round(self.bag_fraction * n_members)))
            weights = np.zeros(n_members)
            self.history_, self.best_round_ = [], []
            for _ in range(self.n_bags):
                members = np.sort(rng.choice(n_members, size=bag_size, replace=False))
                counts, history, best, _ = greedy_select(
                    scorer.subset(members), self.ensemble_size, min(self.init_size, bag_size)
                )
                weights[members] += counts / counts.sum()
                self.history_.append(history)
                self.best_round_.append(best)
            self.weights_ = weights / weights.sum()
            self.indices_ = None
        self.loss_ = scorer.loss_of(self.weights_)

    def _combine(self, preds: PredictionSet) -> np.ndarray:
        used = np.flatnonzero(self.weights_)
        if len(used) < len(self.weights_):  # skip members that were never picked
            return weighted_mean(preds.scores[used], self.weights_[used])
        return weighted_mean(preds.scores, self.weights_)

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        return WeightedSum(self.weights_)

    def _check_params(self, task: str) -> None:
        allowed = SELECTION_METRICS[task]
        if self.metric not in allowed:
            raise StrategyError(
                f"GreedySelection metric={self.metric!r} does not apply to {task}; use one of {', '.join(allowed)}"
            )
        if int(self.ensemble_size) < 1:
            raise StrategyError(f"GreedySelection ensemble_size must be >= 1, got {self.ensemble_size}")
        if not 0 <= int(self.init_size) <= int(self.ensemble_size):
            raise StrategyError(
                f"GreedySelection init_size must be between 0 and ensemble_size={self.ensemble_size}, "
                f"got {self.init_size}"
            )
        if self.bagging:
            if int(self.n_bags) < 1:
                raise StrategyError(f"GreedySelection n_bags must be >= 1, got {self.n_bags}")
            if not 0 < float(self.bag_fraction) <= 1:
                raise StrategyError(
                    f"GreedySelection bag_fraction must be in (0, 1], got {self.bag_fraction}"
                )


# -- the selection loop -------------------------------------------------------------------------


def greedy_select(
    scorer: MixtureScorer, ensemble_size: int, init_size: int = 0
) -> tuple[np.ndarray, list[float], int, list[int]]:
    """Run Caruana's forward selection with replacement on ``scorer``'s members.

    Returns ``(counts [members], history, best_round, picks)`` where ``history[i]`` is the loss
    after ``i + 1`` picks and ``counts``/``picks`` cover the picks up to ``best_round`` only.
    """
    scorer.reset()
    n_members = scorer.n_members
    init = []
    if init_size:
        # Sorted initialisation: the individually best members (the loss of each alone).
        init = np.argsort(scorer.candidate_losses(0), kind="stable")[: min(init_size, n_members)].tolist()
    used = np.zeros(n_members, dtype=bool)
    picks: list[int] = []
    history: list[float] = []
    for t in range(int(ensemble_size)):
        losses = scorer.candidate_losses(t)
        if t < len(init):
            j = init[t]
        else:
            best = np.nanmin(losses)
            tied = np.flatnonzero(np.isclose(losses, best, rtol=1e-12, atol=0.0))
            tied_used = tied[used[tied]]
            j = int(tied_used[0] if len(tied_used) else tied[0])
        picks.append(j)
        history.append(float(losses[j]))
        used[j] = True
        scorer.add(j)
    best_round = int(np.argmin(history))
    kept = picks[: best_round + 1]
    counts = np.bincount(kept, minlength=n_members).astype(np.float64)
    return counts, history, best_round, kept


# -- vectorised losses of "running sum + one candidate" -----------------------------------------


class MixtureScorer:
    """Losses of the average of a running sum of members plus each candidate member.

    ``candidate_losses(t)`` returns, for every member ``j``, the loss of
    ``(S + x_j) / (t + 1)`` where ``S`` is the sum of the ``t`` members added so far; ``add(j)``
    adds member ``j`` to ``S``; ``loss_of(w)`` is the loss of the weighted average ``w @ x``.
    """

    n_members: int

    def reset(self) -> None:
        raise NotImplementedError

    def candidate_losses(self, t: int) -> np.ndarray:
        raise NotImplementedError

    def add(self, j: int) -> None:
        raise NotImplementedError

    def loss_of(self, weights: np.ndarray) -> float:
        raise NotImplementedError

    def subset(self, members: np.ndarray) -> MixtureScorer:
        raise NotImplementedError


class OutcomeProbaScorer(MixtureScorer):
    """Losses that depend only on the probability given to the observed outcome.

    The mixture's probability of the observed outcome is the mixture of the members', so the
    whole search runs on ``p_true`` [members, outcomes] (one outcome per sample for multiclass,
    one per sample and label for multi-label) at O(members x outcomes) per round.
    kind: ``"nll"`` (-mean log p), ``"brier"`` (multi-label only: mean (1 - p)^2) or
    ``"error"`` (multi-label only: share of labels with p < 0.5).
    """

    def __init__(self, p_true: np.ndarray, kind: str):
        self.p_true = np.asarray(p_true, dtype=np.float64)
        # Candidates are scored in float32 (the log is the whole cost of a round and runs twice
        # as fast); the running sum stays float64 and reported losses use float64 throughout.
        self._p_true32 = self.p_true.astype(np.float32)
        if kind == "nll":  # clip once here instead of every round: a mixture of these stays >= EPS / t
            np.clip(self._p_true32, EPS, None, out=self._p_true32)
        # torch runs the element-wise log on every core and sums in float64 without a copy.
        self._p_true_t = torch.from_numpy(self._p_true32)
        self.kind = kind
        self.n_members = self.p_true.shape[0]
        self.reset()

    def reset(self) -> None:
        self.running = np.zeros(self.p_true.shape[1])
        self._buffer = np.empty_like(self._p_true32)
        self._buffer_t = torch.from_numpy(self._buffer)

    def candidate_losses(self, t: int) -> np.ndarray:
        if self.kind == "nll":  # -mean log((S + p_j) / (t + 1)) without dividing every element
            qt = torch.add(
                self._p_true_t, torch.from_numpy(self.running.astype(np.float32)), out=self._buffer_t
            )
            return np.log(t + 1) - qt.log_().sum(dim=1, dtype=torch.float64).numpy() / qt.shape[1]
        q = np.add(self._p_true32, self.running.astype(np.float32), out=self._buffer)
        q *= np.float32(1.0 / (t + 1))
        return self._loss(q).astype(np.float64)

    def add(self, j: int) -> None:
        self.running += self.p_true[j]

    def loss_of(self, weights: np.ndarray) -> float:
        mix = np.asarray(weights, dtype=np.float64) @ self.p_true
        return float(self._loss(mix[None])[0])

    def subset(self, members: np.ndarray) -> OutcomeProbaScorer:
        return OutcomeProbaScorer(self.p_true[members], self.kind)

    def _loss(self, q: np.ndarray) -> np.ndarray:
        if self.kind == "nll":
            np.clip(q, EPS, None, out=q)
            return -np.log(q, out=q).mean(axis=1)
        if self.kind == "brier":
            return ((1.0 - q) ** 2).mean(axis=1)
        return (q < 0.5).mean(axis=1)


class ClassProbaScorer(MixtureScorer):
    """Multiclass Brier score and error rate, which need every class's probability.

    proba: float32 [members, samples, classes]; y: class indices [samples].
    Brier is expanded as ``(|S|^2 + 2 S.P_j + |P_j|^2) / (t+1)^2 - 2 (S_y + P_jy) / (t+1) + 1``
    so a round is one [members, samples, classes] dot product; the error rate takes the
    argmax of ``S + P_j`` for each candidate, one member at a time to bound memory.
    """

    def __init__(self, proba: np.ndarray, y: np.ndarray, kind: str):
        self.proba = np.ascontiguousarray(proba, dtype=np.float32)
        self.y = np.asarray(y)
        self.kind = kind
        self.n_members, self.n_samples, self.n_classes = self.proba.shape
        rows = np.arange(self.n_samples)
        self.p_true = self.proba[:, rows, self.y].astype(np.float64)  # [members, samples]
        if kind == "brier":
            self.sq_norm = np.einsum("mnk,mnk->mn", self.proba, self.proba, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        self.running = np.zeros((self.n_samples, self.n_classes))
        self.running_true = np.zeros(self.n_samples)

    def candidate_losses(self, t: int) -> np.ndarray:
        running32 = self.running.astype(np.float32)
        if self.kind == "brier":
            cross = np.einsum("mnk,nk->mn", self.proba, running32, optimize=True)
            s_sq = np.einsum("nk,nk->n", self.running, self.running)
            inv = 1.0 / (t + 1)
            sq = (s_sq[None] + 2.0 * cross + self.sq_norm) * inv**2
            return (sq - 2.0 * inv * (self.running_true[None] + self.p_true) + 1.0).mean(axis=1)
        errors = np.empty(self.n_members)
        buffer = np.empty((self.n_samples, self.n_classes), dtype=np.float32)
        for m in range(self.n_members):  # one member at a time: no [members, samples, classes] temporary
            np.add(self.proba[m], running32, out=buffer)
            errors[m] = np.count_nonzero(buffer.argmax(axis=1) != self.y) / self.n_samples
        return errors

    def add(self, j: int) -> None:
        self.running += self.proba[j]
        self.running_true += self.p_true[j]

    def loss_of(self, weights: np.ndarray) -> float:
        fused = np.tensordot(np.asarray(weights, dtype=np.float64), self.proba, axes=(0, 0))
        if self.kind == "brier":
            fused[np.arange(self.n_samples), self.y] -= 1.0
            return float((fused**2).sum(axis=1).mean())
        return float((fused.argmax(axis=1) != self.y).mean())

    def subset(self, members: np.ndarray) -> ClassProbaScorer:
        return ClassProbaScorer(self.proba[members], self.y, self.kind)


class ValueScorer(MixtureScorer):
    """Regression losses (``"mse"``, ``"rmse"``, ``"mae"``) of averaged values.

    values: float [members, samples, outputs]; y: [samples, outputs].
    """

    def __init__(self, values: np.ndarray, y: np.ndarray, kind: str):
        self.values = np.asarray(values, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64).reshape(self.values.shape[1], -1)
        self.kind = kind
        self.n_members = self.values.shape[0]
        self.reset()

    def reset(self) -> None:
        self.running = np.zeros(self.values.shape[1:])

    def candidate_losses(self, t: int) -> np.ndarray:
        resid = (self.values + self.running[None]) * (1.0 / (t + 1)) - self.y[None]
        return self._loss(resid)

    def add(self, j: int) -> None:
        self.running += self.values[j]

    def loss_of(self, weights: np.ndarray) -> float:
        fused = np.tensordot(np.asarray(weights, dtype=np.float64), self.values, axes=(0, 0))
        return float(self._loss((fused - self.y)[None])[0])

    def subset(self, members: np.ndarray) -> ValueScorer:
        return ValueScorer(self.values[members], self.y, self.kind)

    def _loss(self, resid: np.ndarray) -> np.ndarray:
        if self.kind == "mae":
            return np.abs(resid).mean(axis=(1, 2))
        mse = (resid**2).mean(axis=(1, 2))
        return np.sqrt(mse) if self.kind == "rmse" else mse


def outcome_proba(preds: PredictionSet, y: np.ndarray) -> np.ndarray:
    """Probability each member gives the observed outcome, float64 [members, outcomes].

    Multiclass: ``proba[m, i, y[i]]``, one outcome per sample. Multi-label: ``p`` where the
    label is on and ``1 - p`` where it is off, flattened to samples x labels.
    """
    proba = preds.proba
    if preds.task == "multilabel":
        on = np.asarray(y).astype(bool)[None]
        return np.where(on, proba, 1.0 - proba).reshape(preds.n_members, -1).astype(np.float64)
    return proba[:, np.arange(preds.n_samples), np.asarray(y)].astype(np.float64)


def make_mixture_scorer(preds: PredictionSet, y: np.ndarray, metric: str) -> MixtureScorer:
    """The cheapest :class:`MixtureScorer` computing ``metric`` for ``preds``'s task."""
    if preds.task == "regression":
        kind = "mse" if metric == "nll" else metric
        return ValueScorer(preds.outputs, y, kind)
    kind = "error" if metric == "accuracy" else metric
    if preds.task == "multilabel" or kind == "nll":
        return OutcomeProbaScorer(outcome_proba(preds, y), kind)
    return ClassProbaScorer(preds.proba, y, kind)
