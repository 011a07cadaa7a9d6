"""The contract every fusion strategy follows (scikit-learn style).

A strategy is fitted on the validation predictions of the members, then combines new
predictions of the same members. Its constructor only stores parameters; ``fit`` checks
the input, learns attributes ending in ``_`` and returns ``self``; ``combine`` on an
unfitted strategy raises ``NotFittedError``. ``to_torch()`` returns an ``nn.Module`` that
applies the same rule to a tensor ``[members, batch, outputs]`` so a fused model exports
as one graph.

The tutorial's per-model records, ``[{"model": name, "output": value}, ...]``, are handled by
one adapter, :mod:`modelfusion.strategies.records` (what :mod:`modelfusion.strategy` uses).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from modelfusion.errors import StrategyError, UnseenClassWarning
from modelfusion.predictions import PredictionSet, as_prediction_set
from modelfusion.threads import small_work_threads

#: Every concrete strategy, keyed by lower-case class name and by its ``alias``.
STRATEGY_REGISTRY: dict[str, type[Strategy]] = {}


def unseen_classes(preds: PredictionSet, y_enc: np.ndarray) -> list[Any]:
    """The class labels of ``preds`` with no sample in the encoded labels ``y_enc`` (classification)."""
    present = set(np.unique(np.asarray(y_enc)).tolist())
    labels = preds.classes if preds.classes is not None else range(preds.n_outputs)
    return [c.item() if hasattr(c, "item") else c for i, c in enumerate(labels) if i not in present]


class Strategy(BaseEstimator):
    """Base class of prediction-level fusion rules.

    Subclasses set ``tasks`` (which tasks they support), ``symmetric`` (whether permuting
    members changes nothing), ``alias`` (the short name used in configs) and implement
    ``_fit`` (optional) and ``_combine``.

    Examples
    --------
    >>> strategy = Mean().fit(val_preds, y_val)
    >>> fused = strategy.combine(test_preds)      # [samples, classes]
    >>> labels = strategy.predict(test_preds)      # class labels
    """

    tasks: ClassVar[tuple[str, ...]] = ("classification", "multilabel", "regression")
    symmetric: ClassVar[bool] = True
    alias: ClassVar[str | None] = None
    #: False when a class without a fitting sample can never be predicted (a meta-learner
    #: trained on the labels); :meth:`fit` then warns, naming the classes.
    covers_unseen_classes: ClassVar[bool] = True

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_") or not register:
            return
        STRATEGY_REGISTRY[cls.__name__.lower()] = cls
        if cls.alias:
            STRATEGY_REGISTRY[cls.alias] = cls

    # -- public API ---------------------------------------------------------------------
    def fit(self, predictions: PredictionSet | np.ndarray, y: Any = None) -> Strategy:
        """Learn from validation predictions; returns ``self``.

        predictions : PredictionSet, or float array [members, samples, outputs] of probabilities
        y : true labels [samples] (class labels, or values for regression); may be omitted
            when ``predictions.labels`` is set or the strategy learns nothing.
        """
        if is_records(predictions):
            raise StrategyError(
                f"{type(self).__name__}.fit takes a PredictionSet (see score_members), not records; "
                "combine(records) fits a strategy that needs no labels by itself"
            )
        preds = as_prediction_set(predictions)
        if preds.task not in self.tasks:
            raise StrategyError(
                f"{type(self).__name__} does not support {preds.task} (supports: {', '.join(self.tasks)})"
            )
        self.names_ = list(preds.names)
        self.n_members_ = preds.n_members
        self.task_ = preds.task
        self.classes_ = None if preds.classes is None else np.asarray(preds.classes)
        y_enc = None
        if y is not None or preds.labels is not None:
            y_enc = preds.encode_labels(y)
        elif self._needs_labels():
            raise StrategyError(f"{type(self).__name__} learns from labels: pass y to fit()")
        if not self.covers_unseen_classes and y_enc is not None and preds.task == "classification":
            unseen = unseen_classes(preds, y_enc)
            if unseen:
                warnings.warn(
                    f"{type(self).__name__}: class(es) {', '.join(map(repr, unseen))} have no sample in the "
                    "labels it is fitted on, so it gives them probability 0 and never predicts them; fit on data "
                    "with every class, or prefer a strategy that averages the members (mean, weighted, greedy)",
                    UnseenClassWarning,
                    stacklevel=2,
                )
        with small_work_threads(preds.outputs.size):
            self._fit(preds, y_enc)
        return self

    def combine(self, predictions: PredictionSet | np.ndarray) -> np.ndarray:
        """Fused scores [samples, outputs]: probabilities for classification, values for regression.

        The tutorial's per-model records (``[{"model": name, "output": value}, ...]``) are
        taken by :mod:`modelfusion.strategy`'s classes (:mod:`modelfusion.strategies.records`).
        """
        if is_records(predictions):
            raise StrategyError(
                f"{type(self).__name__}.combine takes a PredictionSet or an array [members, samples, outputs]; "
                'for the tutorial\'s records [{"model": ..., "output": ...}] use modelfusion.strategy.'
                f"{type(self).__name__} (or modelfusion.strategies.records.combine_records)"
            )
        self._check_fitted()
        preds = self._align(as_prediction_set(predictions))
        with small_work_threads(preds.outputs.size):
            return self._combine(preds)

    def predict(self, predictions: PredictionSet | np.ndarray) -> np.ndarray:
        """Fused hard predictions: class labels, 0/1 per label (multi-label) or values."""
        if is_records(predictions):
            raise StrategyError(
                f"{type(self).__name__}.predict takes a PredictionSet or an array [members, samples, "
                'outputs]; for records [{"model": ..., "output": ...}] use modelfusion.strategy\'s combine()'
            )
        fused = self.combine(predictions)
        if self.task_ == "regression":
            return fused[:, 0] if fused.shape[1] == 1 else fused
        if self.task_ == "multilabel":
            return (fused >= 0.5).astype(np.int64)
        idx = fused.argmax(axis=1)
        return idx if self.classes_ is None else self.classes_[idx]

    def fit_combine(self, predictions: PredictionSet | np.ndarray, y: Any = None) -> np.ndarray:
        """``fit`` then ``combine`` on the same predictions."""
        return self.fit(predictions, y).combine(predictions)

    def to_torch(self):
        """An ``nn.Module`` mapping scores [members, batch, outputs] to fused [batch, outputs].

        Raises StrategyError for strategies with no tensor form.
        """
        raise StrategyError(
            f"strategy {type(self).__name__} has no tensor form, so it cannot be exported to torch/ONNX; "
            "choose a strategy with a tensor form (mean, weighted, greedy, optimized, calibrated, gating)"
        )

    @property
    def label(self) -> str:
        """A short, human-readable name for tables."""
        return self.alias or type(self).__name__.lower()

    # -- hooks for subclasses -----------------------------------------------------------
    def _needs_labels(self) -> bool:
        return False

    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        """Learn from predictions and encoded labels (indices, 0/1 matrix or floats)."""

    def _combine(self, preds: PredictionSet) -> np.ndarray:
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "names_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with validation "
                "predictions before using it."
            )

    def _align(self, preds: PredictionSet) -> PredictionSet:
        """Put members in the order seen in ``fit`` (matching by name), or raise."""
        if preds.names == self.names_:
            return preds
        if preds.n_members != self.n_members_:
            raise StrategyError(
                f"{type(self).__name__} was fitted on {self.n_members_} members ({', '.join(self.names_)}) "
                f"but got {preds.n_members} ({', '.join(preds.names)})"
            )
        if set(preds.names) == set(self.names_):
            return preds.subset(self.names_)
        if all(n.startswith("member_") for n in preds.names):  # raw arrays: positional
            return preds
        missing = sorted(set(self.names_) - set(preds.names))
        extra = sorted(set(preds.names) - set(self.names_))
        raise StrategyError(
            f"{type(self).__name__} was fitted on members {self.names_}; missing {missing}, unexpected {extra}"
        )

    def member_weights(self, predictions: PredictionSet | None = None) -> tuple[dict[str, float], str] | None:
        """How much the fitted strategy relies on each member, and what the numbers mean; None if it cannot say.

        The default reads ``weights_`` (weighted averages, greedy selection counts, optimised
        weights); learned combiners (stacking, gating) override it. ``predictions`` are the
        validation predictions, for strategies whose weights depend on the sample.
        """
        weights = getattr(self, "weights_", None)
        if weights is None:
            return None
        return dict(
            zip(self.names_, map(float, np.asarray(weights)))
        ), "weight of each member in the fused average"

    def fitted_state(self) -> dict[str, Any]:
        """Learned attributes (names ending in ``_``), for saving in a bundle."""
        return {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    def set_fitted_state(self, state: dict[str, Any]) -> Strategy:
        """Restore what :meth:`fitted_state` returned."""
        for k, v in state.items():
            setattr(self, k, v)
        return self


def normalize_weights(weights: Any, names: list[str], owner: str) -> np.ndarray:
    """Validate weights given as a list (one per member) or a dict keyed by member name.

    Returns float64 weights on the simplex. Raises StrategyError for a wrong count,
    unknown names, negative values or an all-zero vector.
    """
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(names))
        missing = sorted(set(names) - set(weights))
        if unknown or missing:
            raise StrategyError(
                f"{owner} weights name members {sorted(weights)}, but the members are {names}"
                + (f"; unknown: {unknown}" if unknown else "")
                + (f"; missing: {missing}" if missing else "")
            )
        w = np.array([float(weights[n]) for n in names])
    else:
        w = np.asarray(weights, dtype=float).ravel()
        if w.shape != (len(names),):
            raise StrategyError(
                f"{owner} got {w.size} weights for {len(names)} members ({', '.join(names)}); "
                "give one weight per member"
            )
    if not np.isfinite(w).all() or (w < 0).any():
        raise StrategyError(f"{owner} weights must be finite and >= 0, got {w.tolist()}")
    if w.sum() <= 0:
        raise StrategyError(f"{owner} weights sum to zero; at least one member needs a positive weight")
    return w / w.sum()


def get_strategy(name: str, **params: Any) -> Strategy:
    """Build a registered strategy by name (``"mean"``, ``"greedy"``, ``"Stacking"``, ...)."""
    cls = STRATEGY_REGISTRY.get(name.lower())
    if cls is None:
        import difflib

        close = difflib.get_close_matches(name.lower(), list(STRATEGY_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise StrategyError(f"unknown strategy {name!r}{hint} Known: {', '.join(sorted(STRATEGY_REGISTRY))}")
    check_strategy_params(cls, params)
    return cls(**params)


def check_strategy_params(cls: type[Strategy], params: Mapping[str, Any]) -> None:
    """StrategyError naming each parameter ``cls`` does not take, with a did-you-mean.

    Strategies follow scikit-learn: the constructor only stores its arguments, so a misspelt
    one would otherwise surface as a TypeError after every member was scored.

    Examples
    --------
    >>> check_strategy_params(GreedySelection, {"ensemble_sise": 10})
    Traceback (most recent call last):
    StrategyError: GreedySelection has no parameter 'ensemble_sise' (did you mean 'ensemble_size'?) ...
    """
    import difflib
    import inspect

    accepted = [
        n
        for n, p in inspect.signature(cls.__init__).parameters.items()
        if n != "self" and p.kind is not p.VAR_KEYWORD
    ]
    problems = []
    for key in params:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            problems.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if problems:
        raise StrategyError(
            f"{cls.__name__} has no parameter {', '.join(problems)}; it takes: {', '.join(accepted) or '(none)'}"
        )


def is_records(predictions: Any) -> bool:
    """Whether ``predictions`` is a list of per-model records (dicts), the tutorial's form."""
    return isinstance(predictions, (list, tuple)) and all(isinstance(r, Mapping) for r in predictions)
