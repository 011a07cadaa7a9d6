"""FusedModel: members plus a fitted strategy, used like one model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.errors import StrategyError
from modelfusion.members.base import Member
from modelfusion.outputs import torch_to_proba
from modelfusion.predictions import PredictionSet, score_members
from modelfusion.strategies.base import Strategy


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

    @property
    def task(self) -> str:
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

    def predict_scores(self, X: Any, *, batch_size: int = 256) -> np.ndarray:
        """Fused scores [samples, outputs]: probabilities, or values for regression."""
        return self.strategy.combine(self.member_predictions(X, batch_size=batch_size))

    def predict_proba(self, X: Any, *, batch_size: int = 256) -> np.ndarray:
        """Fused class probabilities [samples, classes]."""
        if self.task == "regression":
            raise StrategyError("predict_proba is for classifiers; this fused model does regression")
        return self.predict_scores(X, batch_size=batch_size)

    def predict(self, X: Any, *, batch_size: int = 256) -> np.ndarray:
        """Fused predictions: class labels, 0/1 per label, or regression values."""
        return self.strategy.predict(self.member_predictions(X, batch_size=batch_size))

    def to_torch(self) -> FusedModule:
        """One ``nn.Module`` (members + strategy rule) when every member is torch-backed."""
        not_torch = [m.name for m in self.members if not isinstance(m, nn.Module)]
        if not_torch:
            raise StrategyError(
                f"members {not_torch} are not torch modules; export the whole ensemble to ONNX instead"
            )
        return FusedModule(self.members, self.strategy.to_torch())

    def save(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Write a self-describing bundle folder (manifest + member files + checksums)."""
        from modelfusion.bundle import save_bundle

        return save_bundle(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, *, trust: bool = False) -> FusedModel:
        """Load a bundle written by :meth:`save`, verifying every file's checksum."""
        from modelfusion.bundle import load_bundle

        return load_bundle(path, trust=trust)

    def __repr__(self) -> str:
        return f"FusedModel(strategy={self.strategy!r}, members={self.names})"


class FusedModule(nn.Module):
    """Torch form of a fused model: run members, convert to probabilities, apply the rule.

    Examples
    --------
    >>> module = fused.to_torch()
    >>> module(torch.randn(4, 1, 8, 8)).shape
    torch.Size([4, 10])
    """

    def __init__(self, members: Sequence[Member], rule: nn.Module):
        super().__init__()
        self.members = nn.ModuleList(members)  # type: ignore[arg-type]
        self.kinds = [m.output_kind for m in members]
        self.task = members[0].task
        self.rule = rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = [
            out if self.task == "regression" else torch_to_proba(out, kind, self.task)
            for out, kind in zip((m(x) for m in self.members), self.kinds)
        ]
        return self.rule(torch.stack(scores, dim=0))
