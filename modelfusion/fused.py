"""FusedModel: members plus a fitted strategy, used like one model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.bundle import load_bundle, save_bundle
from modelfusion.errors import StrategyError
from modelfusion.inputs import align_inputs
from modelfusion.members.base import Member
from modelfusion.outputs import Task
from modelfusion.predictions import PredictionSet, score_members
from modelfusion.runtime.engine import build_fused_module, fused_scores, labels_from_scores
from modelfusion.runtime.module import FusedModule
from modelfusion.runtime.onnx_export import export_fused_onnx
from modelfusion.strategies.base import Strategy

__all__ = ["FusedModel", "FusedModule"]


class FusedModel:
    """Several members and a fitted fusion strategy behind ``predict`` / ``predict_proba``.

    Parameters
    ----------
    members : the members, in the order the strategy was fitted on (matched by name)
    strategy : a fitted :class:`~modelfusion.strategies.Strategy`
    metadata : free-form information saved with the bundle (metrics, config, ...)

    Examples
    --------
    >>> preds = score_members(members, X_val, y=y_val)
    >>> fused = FusedModel(members, GreedySelection().fit(preds, y_val))
    >>> fused.predict(X_test)[:5]
    array([3, 1, 4, 1, 5])
    >>> fused.save("runs/digits/fused")
    >>> FusedModel.load("runs/digits/fused").predict_proba(X_test).shape
    (360, 10)
    >>> fused.predict_proba(X_test, engine="members")   # force the per-member executor
    >>> fused.export_onnx("fused.onnx")                 # one ONNX graph, dynamic batch
    """

    def __init__(self, members: Sequence[Member], strategy: Strategy, metadata: dict[str, Any] | None = None):
        strategy._check_fitted()
        by_name = {m.name: m for m in members}
        missing = [n for n in strategy.names_ if n not in by_name]
        if missing or len(members) != len(strategy.names_):
            raise StrategyError(
                f"the strategy was fitted on members {strategy.names_} but got {[m.name for m in members]}"
            )
        self.members = [by_name[n] for n in strategy.names_]
        self.strategy = strategy
        self.metadata = dict(metadata or {})
        self.bundle_dir: Path | None = None  # set by save/load; the runtime reads a recorded fused.onnx there
        self.trusted = True  # False for a bundle loaded without trust=True

    @property
    def task(self) -> Task:
        return self.strategy.task_

    @property
    def classes(self) -> np.ndarray | None:
        return self.strategy.classes_

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def member_predictions(self, X: Any, *, batch_size: int = 256) -> PredictionSet:
        """Every member's outputs on ``X`` (a dict ``{member: X}`` for per-member inputs)."""
        return score_members(self.members, X, batch_size=batch_size, progress=False)

    def predict_scores(self, X: Any, *, batch_size: int = 256, engine: str = "auto") -> np.ndarray:
        """Fused scores [samples, outputs]: probabilities, or values for regression.

        Inputs are checked against the shape (and, for a DataFrame, the column names) the
        model was fitted on when the bundle records them (:mod:`modelfusion.inputs`).
        ``engine``: ``"auto"`` (the fused ONNX graph when the model exports and ``X`` is an
        array, checked against the members on its first rows; else eager torch when every
        member is torch; else the members side by side), or force ``"onnx"``, ``"torch"``
        or ``"members"``. See :func:`modelfusion.runtime.select_engine`.
        """
        X = align_inputs(X, self.metadata.get("inputs"), source="the input")
        return fused_scores(self, X, engine=engine, batch_size=batch_size)

    def predict_proba(self, X: Any, *, batch_size: int = 256, engine: str = "auto") -> np.ndarray:
        """Fused class probabilities [samples, classes]."""
        if self.task == "regression":
            raise StrategyError("predict_proba is for classifiers; this fused model does regression")
        return self.predict_scores(X, batch_size=batch_size, engine=engine)

    def predict(self, X: Any, *, batch_size: int = 256, engine: str = "auto") -> np.ndarray:
        """Fused predictions: class labels, 0/1 per label, or regression values."""
        return labels_from_scores(
            self.predict_scores(X, batch_size=batch_size, engine=engine), self.task, self.classes
        )

    def to_torch(self) -> FusedModule:
        """One ``nn.Module`` (members with their preprocessing + strategy rule) when every member is torch."""
        return build_fused_module(self)

    def export_onnx(self, path: str | Path, *, opset: int | None = None, example_input: Any = None) -> Path:
        """Write the whole ensemble as one ONNX graph; see :func:`modelfusion.runtime.export_fused_onnx`."""
        return export_fused_onnx(self, path, opset=opset, example_input=example_input)

    def save(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Write a self-describing bundle folder (manifest + member files + checksums)."""
        self.bundle_dir = save_bundle(self, path, overwrite=overwrite)
        return self.bundle_dir

    @classmethod
    def load(cls, path: str | Path, *, trust: bool = False, expected_digest: str | None = None) -> FusedModel:
        """Load a bundle written by :meth:`save`, verifying it whole first (see :func:`~modelfusion.bundle.load_bundle`).

        ``expected_digest``: the sha256 of the bundle's ``manifest.json`` you pinned
        (``modelfusion.manifest.manifest_digest``); a bundle that differs is refused.
        """
        members, strategy, metadata = load_bundle(path, trust=trust, expected_digest=expected_digest)
        model = cls(members, strategy, metadata=metadata)
        model.bundle_dir = Path(path)
        model.trusted = trust  # the runtime checks the bundle's own graphs as it checked the members
        return model

    def __repr__(self) -> str:
        return f"FusedModel(strategy={self.strategy!r}, members={self.names})"
