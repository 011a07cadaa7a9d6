"""The tutorial's per-model records, ``[{"model": name, "output": value[, "confidence": c]}, ...]``, fused
by any strategy: the one place that form is handled.

:mod:`modelfusion.strategy` (the tutorial's door) gives each strategy a ``combine`` that takes
records and returns ``{"fused_score": ..., "weights": {name: weight}}``; the strategies
themselves only ever combine a PredictionSet into an array.

Examples
--------
>>> combine_records(WeightedAverage({"resnet": 0.6, "bert": 0.4}),
...     [{"model": "resnet", "output": 0.85}, {"model": "bert", "output": 0.72}])
{'fused_score': 0.798, 'weights': {'resnet': 0.6, 'bert': 0.4}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

from modelfusion.errors import PredictionError, StrategyError
from modelfusion.outputs import OutputKind, Task
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.base import Strategy
from modelfusion.strategies.dynamic import DynamicWeighting


def combine_records(strategy: Strategy, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fuse one output per model given as records ``{"model": name, "output": value}``.

    ``output`` is a number, an array [samples] or an array [samples, outputs], the same
    shape for every model; ``fused_score`` has that shape too (a float for numbers).
    Strategies that also fuse regression values (mean, weighted, ...) average the outputs
    as they are; those that fuse only probabilities read a number or a [samples] array as
    the probability of the positive class, and [samples, classes] rows as distributions.
    A fitted strategy uses what it learned (members matched by name); an unfitted one
    that needs no labels (given weights, mean, dynamic weights, ...) is fitted on the
    records by a copy, so ``strategy`` stays unfitted.

    Returns ``{"fused_score": ..., "weights": {model: weight}}`` (``weights`` when the
    strategy has member weights; :class:`DynamicWeighting` adds ``sample_weights``, and with
    ``"confidence"`` in every record weighs by confidence ** power without any fit).

    Raises StrategyError for an empty list, a malformed record, outputs of different
    shapes, or model names that do not match the strategy's weights or fitted members.
    """
    stack = OutputRecords.from_records(records, owner=type(strategy).__name__)
    if isinstance(strategy, DynamicWeighting):
        return _dynamic_records(strategy, stack)
    fitted, preds = _fitted_for(strategy, stack)
    result: dict[str, Any] = {"fused_score": stack.restore(fitted.combine(preds))}
    if getattr(fitted, "weights_", None) is not None:
        result["weights"] = {n: float(w) for n, w in zip(fitted.names_, fitted.weights_)}
    return result


def _dynamic_records(strategy: DynamicWeighting, stack: OutputRecords) -> dict[str, Any]:
    # With confidences the weights are confidence ** power, normalised, and need no fit;
    # without, they come from each member's per-sample confidence, as on a PredictionSet.
    if stack.confidences is None:
        fitted, preds = _fitted_for(strategy, stack)
        names = fitted.names_  # sample_weights puts members in the fitted order
        w, fused = fitted.sample_weights(preds), fitted.combine(preds)
    else:
        names = stack.names
        w = strategy.sample_weights(confidences=stack.confidences)
        fused = strategy.combine_with_confidences(stack.outputs, stack.confidences)
    return {
        "fused_score": stack.restore(fused),
        "weights": {n: float(v) for n, v in zip(names, w.mean(axis=1))},
        "sample_weights": dict(zip(names, w)),
    }


def _fitted_for(strategy: Strategy, stack: OutputRecords) -> tuple[Strategy, PredictionSet]:
    """``strategy`` if fitted, else a copy fitted on the records; and the records' PredictionSet."""
    if hasattr(strategy, "names_"):
        return strategy, stack.prediction_set(strategy.task_)
    if strategy._needs_labels():
        raise StrategyError(
            f"{type(strategy).__name__} learns from labels, so it cannot be fitted on records alone: "
            "call fit(val_preds, y_val) first, then combine the records"
        )
    # Records carry no labels or task: scores are fused as values where the strategy allows,
    # so a tutorial score such as 0.85 is not held to the probability checks.
    preds = stack.prediction_set("regression" if "regression" in strategy.tasks else "classification")
    return clone(strategy).fit(preds), preds


@dataclass(frozen=True)
class OutputRecords:
    """Per-model records ``{"model": name, "output": value[, "confidence": c]}``, stacked.

    Attributes
    ----------
    names : model names, in record order.
    outputs : float array [members, samples, outputs]; a number is one sample with one
        output, an array [samples] has one output per sample.
    shape : the shape of one record's output, restored on the fused result.
    confidences : float array [members, samples] when every record has a ``"confidence"``
        (a number, or one per sample), else None.
    """

    names: list[str]
    outputs: np.ndarray
    shape: tuple[int, ...]
    confidences: np.ndarray | None = None

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], owner: str = "combine") -> OutputRecords:
        if len(records) == 0:
            raise StrategyError(
                f'{owner}.combine got an empty list; pass one record {{"model": name, "output": value}} '
                "per model"
            )
        for i, r in enumerate(records):
            missing = [k for k in ("model", "output") if k not in r]
            if missing:
                raise StrategyError(
                    f"{owner}.combine: record {i} has no {' or '.join(map(repr, missing))} key "
                    f'(keys: {sorted(map(str, r))}); each record is {{"model": name, "output": value}}'
                )
        names = [str(r["model"]) for r in records]
        arrays = [_as_float_array(r["output"], f"output of model {n!r}") for n, r in zip(names, records)]
        shapes = {n: a.shape for n, a in zip(names, arrays)}
        if len(set(shapes.values())) > 1:
            raise StrategyError(f"{owner}.combine: every model's output needs the same shape, got {shapes}")
        shape = arrays[0].shape
        if len(shape) > 2:
            raise StrategyError(
                f"{owner}.combine: outputs must be a number, [samples] or [samples, outputs], got shape {shape}"
            )
        outputs = np.stack([a.reshape(1, 1) if a.ndim == 0 else a.reshape(a.shape[0], -1) for a in arrays])
        has_conf = ["confidence" in r for r in records]
        confidences = None
        if any(has_conf):
            if not all(has_conf):
                lacking = [n for n, h in zip(names, has_conf) if not h]
                raise StrategyError(
                    f"{owner}.combine: records of {lacking} have no 'confidence'; give all or none"
                )
            n_samples = outputs.shape[1]
            confidences = np.stack(
                [
                    _confidence_row(r["confidence"], n_samples, f"confidence of model {n!r}")
                    for n, r in zip(names, records)
                ]
            )
        return cls(names, outputs, shape, confidences)

    def prediction_set(self, task: Task) -> PredictionSet:
        """The records as a PredictionSet: values for regression, probabilities otherwise."""
        kind: OutputKind = "values" if task == "regression" else "proba"
        try:
            return PredictionSet(self.outputs, names=self.names, kind=kind, task=task)
        except PredictionError as err:
            raise StrategyError(f"records cannot be fused as {task} {kind}: {err}") from err

    def restore(self, fused: np.ndarray) -> float | np.ndarray:
        """Fused [samples, outputs] back in the records' output shape (a float for numbers)."""
        fused = np.asarray(fused, dtype=np.float64)
        if fused.shape[1] != self.outputs.shape[2]:  # a binary member expanded to [1 - p, p]
            fused = fused[:, 1:]
        return float(fused.reshape(())) if self.shape == () else fused.reshape(self.shape)


def _as_float_array(value: Any, what: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, possibly requiring grad
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise StrategyError(f"{what} must be a number or an array of numbers, got {value!r}") from None
    if not np.isfinite(arr).all():
        raise StrategyError(f"{what} contains NaN or infinity")
    return arr


def _confidence_row(value: Any, n_samples: int, what: str) -> np.ndarray:
    arr = _as_float_array(value, what)
    if arr.ndim == 0:
        return np.full(n_samples, float(arr))
    if arr.shape != (n_samples,):
        raise StrategyError(
            f"{what} must be a number or one value per sample ({n_samples}), got shape {arr.shape}"
        )
    return arr
