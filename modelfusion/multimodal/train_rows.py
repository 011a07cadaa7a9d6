"""The rows of ``modelfusion train``: one per trained candidate, read by the CLI table,
``metrics.json`` and the report alike.

Examples
--------
>>> row_dict(result.best)["accuracy"]
0.981
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from modelfusion.multimodal.data import ModalityDataset


@dataclass(frozen=True)
class ModelRow:
    """One trained candidate, scored on the held-out rows."""

    model: str
    fusion: str | None
    modalities: tuple[str, ...]
    accuracy: float
    nll: float
    latency_ms: float
    parameters: int
    train_seconds: float
    epochs: int


@dataclass(frozen=True)
class Candidate:
    """A model to train: its name in the table, its fusion, the modalities it sees."""

    name: str
    fusion: str
    modalities: tuple[str, ...]


def modality_view(data: ModalityDataset, candidate: Candidate) -> ModalityDataset:
    """``data`` with only the candidate's modalities."""
    view = ModalityDataset(
        {m: data.inputs[m] for m in candidate.modalities},
        data.labels.numpy(),
        present={m: f.numpy() for m, f in data.present.items() if m in candidate.modalities},
    )
    return view


def row_dict(row: ModelRow) -> dict[str, Any]:
    """A row as JSON values."""
    out = dataclasses.asdict(row)
    out["modalities"] = list(row.modalities)
    return out


__all__ = ["Candidate", "ModelRow", "modality_view", "row_dict"]
