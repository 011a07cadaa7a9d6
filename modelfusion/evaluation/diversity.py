"""How differently the members err: the room fusion has to improve on the best member.

Every function takes either a :class:`~modelfusion.predictions.PredictionSet` (its task,
names and stored labels are used; ``y`` in the PredictionSet's own label space, encoded
here) or a float array ``scores`` [members, samples, outputs] with encoded labels ``y``
(see :mod:`modelfusion.evaluation.metrics`). For arrays the task is inferred unless given:
a 1-d ``y`` with two or more score columns is classification, a 0/1 ``y`` shaped like one
member's scores is multi-label, anything else regression.

Multi-label members are compared label by label (a probability above 0.5 is a predicted
label), so "samples" below means (sample, label) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelfusion.errors import InputError
from modelfusion.outputs import check_task
from modelfusion.predictions import PredictionSet

__all__ = [
    "diversity_summary",
    "error_correlation",
    "oracle_accuracy",
    "pairwise_disagreement",
]


def _inputs(predictions, y, task: str | None) -> tuple[np.ndarray, np.ndarray | None, str, list[str]]:
    """``(scores [members, samples, outputs], encoded y or None, task, names)``."""
    if isinstance(predictions, PredictionSet):
        task = predictions.task if task is None else check_task(task)
        scores = np.asarray(predictions.scores)
        names = list(predictions.names)
        if y is not None or predictions.labels is not None:
            y = predictions.encode_labels(y)
            if task == "regression" and y.shape[1] == 1:
                y = y[:, 0]
        return scores, y, task, names
    scores = np.asarray(predictions)
    if scores.ndim == 2:  # [members, samples] single-output values
        scores = scores[:, :, None]
    if scores.ndim != 3:
        raise InputError(f"member scores must be shaped [members, samples, outputs], got {scores.shape}")
    if scores.shape[0] == 0:
        raise InputError("need at least one member")
    names = [f"member_{i}" for i in range(scores.shape[0])]
    y = None if y is None else np.asarray(y)
    if y is not None and len(y) != scores.shape[1]:
        raise InputError(f"{len(y)} labels for {scores.shape[1]} samples")
    if task is not None:
        task = check_task(task)
    elif y is None:
        task = "classification" if scores.shape[2] >= 2 else "regression"
    elif y.ndim == 1 and scores.shape[2] >= 2:
        task = "classification"
    elif y.shape == scores.shape[1:] and np.isin(y, (0, 1)).all():
        task = "multilabel"
    else:
        task = "regression"
    return scores, y, task, names


def _need_labels(y, what: str) -> np.ndarray:
    if y is None:
        raise InputError(f"{what} needs true labels: pass y (or build the PredictionSet with labels=)")
    return y


def _hard_predictions(scores: np.ndarray, task: str) -> np.ndarray:
    """[members, samples] (classification) or [members, samples * labels] (multi-label)."""
    if task == "regression":
        raise InputError(
            "disagreement compares class predictions; for regression compare residuals with error_correlation"
        )
    if task == "multilabel":
        return (scores > 0.5).reshape(scores.shape[0], -1)
    return scores.argmax(axis=2)


def _correct(scores: np.ndarray, y: np.ndarray, task: str) -> np.ndarray:
    """Bool [members, samples(*labels)]: where each member is right."""
    pred = _hard_predictions(scores, task)
    if task == "multilabel":
        return pred == (np.asarray(y) == 1).reshape(1, -1)
    y = np.asarray(y).astype(np.int64)
    if y.ndim != 1 or len(y) != scores.shape[1]:
        raise InputError(f"labels must be [samples] = [{scores.shape[1]}], got {y.shape}")
    return pred == y[None, :]


def _residuals(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).reshape(scores.shape[1], -1)
    if y.shape[1] != scores.shape[2]:
        raise InputError(f"regression targets {y.shape} do not match member outputs {scores.shape[1:]}")
    return (scores.astype(np.float64) - y[None]).reshape(scores.shape[0], -1)


def pairwise_disagreement(predictions, y=None, *, task: str | None = None) -> np.ndarray:
    """Fraction of samples on which two members' top-1 predictions differ.

    Parameters
    ----------
    predictions : PredictionSet, or float array [members, samples, classes]
    y : unused except to infer the task of plain arrays; accepted so every function here
        takes the same arguments
    task : override the inferred task

    Returns
    -------
    float array [members, members], symmetric, zero diagonal.
    """
    scores, _, task, _ = _inputs(predictions, y, task)
    pred = _hard_predictions(scores, task)
    m = pred.shape[0]
    out = np.zeros((m, m))
    # One row at a time keeps memory at [members, samples] instead of [members^2, samples].
    for i in range(m - 1):
        out[i, i + 1 :] = (pred[i] != pred[i + 1 :]).mean(axis=1)
    return out + out.T


def error_correlation(predictions, y=None, *, task: str | None = None) -> np.ndarray:
    """Pearson correlation between members' errors.

    Errors are 0/1 indicators for classification (per label for multi-label) and
    residuals ``prediction - target`` for regression. A member whose errors do not vary
    (always right, or always wrong) is uncorrelated with everyone (0 off the diagonal).

    Returns
    -------
    float array [members, members], symmetric, ones on the diagonal, values in [-1, 1].
    """
    scores, y, task, _ = _inputs(predictions, y, task)
    y = _need_labels(y, "error_correlation")
    errors = _residuals(scores, y) if task == "regression" else ~_correct(scores, y, task)
    errors = errors.astype(np.float64)
    centred = errors - errors.mean(axis=1, keepdims=True)
    cov = centred @ centred.T
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    # Exactly constant rows have zero variance in theory but rounding noise in practice.
    varies = np.ptp(errors, axis=1) > 0 if errors.shape[1] else np.zeros(len(errors), bool)
    ok = np.outer(varies, varies)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(ok, cov / np.outer(std, std), 0.0)
    corr = np.clip(corr, -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    return corr


def oracle_accuracy(predictions, y=None, *, task: str | None = None) -> float:
    """Fraction of samples that at least one member gets right: an upper bound for selection.

    Raises ValueError for regression (see :func:`diversity_summary`'s ``oracle_rmse``).
    """
    scores, y, task, _ = _inputs(predictions, y, task)
    y = _need_labels(y, "oracle_accuracy")
    if task == "regression":
        raise InputError(
            "oracle accuracy needs classes; for regression use diversity_summary()['oracle_rmse']"
        )
    return float(_correct(scores, y, task).any(axis=0).mean())


def _off_diagonal_mean(matrix: np.ndarray, single: float) -> float:
    m = len(matrix)
    if m < 2:
        return single
    return float((matrix.sum() - np.trace(matrix)) / (m * (m - 1)))


def diversity_summary(
    predictions,
    y=None,
    *,
    task: str | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The diversity numbers a report shows, in one dict.

    Classification and multi-label: ``mean_disagreement`` and ``mean_error_correlation``
    (means over member pairs; 0.0 and 1.0 for a single member), ``oracle_accuracy``,
    ``member_accuracy`` ``{name: accuracy}``, ``best_member``.
    Regression: ``mean_error_correlation``, ``member_rmse``, ``best_member`` and
    ``oracle_rmse`` (RMSE when every sample takes its closest member's prediction).

    names : member names for plain arrays (default ``member_0``, ...)
    """
    scores, y, task, default_names = _inputs(predictions, y, task)
    y = _need_labels(y, "diversity_summary")
    names = list(names) if names is not None else default_names
    if len(names) != scores.shape[0]:
        raise InputError(f"{len(names)} names for {scores.shape[0]} members")
    corr = error_correlation(scores, y, task=task)
    summary: dict[str, Any] = {"n_members": len(names)}
    if task == "regression":
        res = _residuals(scores, y)
        member_rmse = np.sqrt((res**2).mean(axis=1))
        summary["mean_error_correlation"] = _off_diagonal_mean(corr, 1.0)
        summary["member_rmse"] = dict(zip(names, member_rmse.tolist(), strict=True))
        summary["best_member"] = names[int(member_rmse.argmin())]
        summary["oracle_rmse"] = float(np.sqrt((np.abs(res).min(axis=0) ** 2).mean()))
        return summary
    correct = _correct(scores, y, task)
    member_acc = correct.mean(axis=1)
    summary["mean_disagreement"] = _off_diagonal_mean(pairwise_disagreement(scores, y, task=task), 0.0)
    summary["mean_error_correlation"] = _off_diagonal_mean(corr, 1.0)
    summary["oracle_accuracy"] = float(correct.any(axis=0).mean())
    summary["member_accuracy"] = dict(zip(names, member_acc.tolist(), strict=True))
    summary["best_member"] = names[int(member_acc.argmax())]
    return summary
