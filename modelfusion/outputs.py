"""Conversions between the kinds of scores members emit.

Members declare what ``predict`` returns: ``"proba"`` (class probabilities), ``"logits"``
(unnormalised scores) or ``"values"`` (regression). Fusion works on probabilities for
classification and on values for regression; these functions are the one place that
converts between them, in numpy and (for export) in torch.
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
from scipy.special import expit, log_softmax, softmax

from modelfusion.errors import InputError, ParameterError

OutputKind = Literal["proba", "logits", "values"]
Task = Literal["classification", "multilabel", "regression"]

OUTPUT_KINDS: tuple[str, ...] = ("proba", "logits", "values")
TASKS: tuple[str, ...] = ("classification", "multilabel", "regression")
EPS = 1e-12


def check_kind(kind: str) -> OutputKind:
    """Return ``kind`` if it is a known output kind, else raise a ParameterError listing them."""
    if kind not in OUTPUT_KINDS:
        raise ParameterError(f"output kind {kind!r} is not one of {', '.join(OUTPUT_KINDS)}")
    return cast(OutputKind, kind)


def check_task(task: str) -> Task:
    """Return ``task`` if it is a known task, else raise a ParameterError listing them."""
    if task not in TASKS:
        raise ParameterError(f"task {task!r} is not one of {', '.join(TASKS)}")
    return cast(Task, task)


def to_proba(scores: np.ndarray, kind: OutputKind, task: Task) -> np.ndarray:
    """Convert scores along the last axis to probabilities.

    scores: float array [..., outputs]. For a binary classifier that emits a single
    column (the positive class), the result has two columns ``[1 - p, p]``.
    Multi-label scores are per-label independent (sigmoid), multiclass ones softmax.
    """
    check_kind(kind)
    if task == "regression" or kind == "values":
        raise InputError("regression values have no probabilities")
    scores = np.asarray(scores)
    if task == "multilabel":
        return expit(scores) if kind == "logits" else scores
    if scores.shape[-1] == 1:
        p = expit(scores) if kind == "logits" else scores
        return np.concatenate([1.0 - p, p], axis=-1)
    return softmax(scores, axis=-1) if kind == "logits" else scores


def to_log_proba(scores: np.ndarray, kind: OutputKind, task: Task) -> np.ndarray:
    """Log of :func:`to_proba`, computed stably from logits when they are available."""
    if kind == "logits" and task == "classification" and np.shape(scores)[-1] > 1:
        return log_softmax(scores, axis=-1)
    return np.log(np.clip(to_proba(scores, kind, task), EPS, None))


def torch_to_proba(scores, kind: OutputKind, task: Task):
    """Torch twin of :func:`to_proba` (used inside exported graphs)."""
    import torch

    if task == "multilabel":
        return torch.sigmoid(scores) if kind == "logits" else scores
    if scores.shape[-1] == 1:
        p = torch.sigmoid(scores) if kind == "logits" else scores
        return torch.cat([1.0 - p, p], dim=-1)
    return torch.softmax(scores, dim=-1) if kind == "logits" else scores
