"""A dataset of several modalities side by side, in the batch shape the fusion model takes.

Examples
--------
>>> data = ModalityDataset({"image": images, "text": texts}, labels)
>>> inputs, label = data[0]          # ({"image": tensor [1, 8, 8], "text": "add three"}, 7)
>>> Trainer(model, nn.functional.cross_entropy).fit(data)    # batches of {"image": [B, ...], "text": [B strings]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from modelfusion.errors import DataError


class ModalityDataset(Dataset):
    """Rows of ``{modality: values}`` (arrays/tensors, or lists of strings) with one label each.

    ``present`` (``{modality: bool per row}``) marks rows where a modality is missing; items then
    carry ``"present": {modality: bool}`` for a model built with ``missing_embeddings=True``.
    """

    def __init__(
        self,
        inputs: Mapping[str, Any],
        labels: Sequence[Any] | np.ndarray,
        *,
        present: Mapping[str, Any] | None = None,
    ):
        self.inputs = {name: _column(values) for name, values in inputs.items()}
        self.labels = torch.as_tensor(np.asarray(labels))
        self.present = {
            name: torch.as_tensor(np.asarray(v, dtype=bool)) for name, v in (present or {}).items()
        }
        unknown = sorted(set(self.present) - set(self.inputs))
        if unknown:
            raise DataError(f"present names modalities {unknown} that are not inputs ({list(self.inputs)})")
        sizes = {name: len(v) for name, v in {**self.inputs, **self.present}.items()}
        if len(set(sizes.values()) | {len(self.labels)}) != 1:
            raise DataError(f"modalities and labels differ in length: {sizes}, labels {len(self.labels)}")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[dict[str, Any], torch.Tensor]:
        item = {name: values[i] for name, values in self.inputs.items()}
        if self.present:
            item["present"] = {name: flags[i] for name, flags in self.present.items()}
        return item, self.labels[i]

    def subset(self, rows: Sequence[int] | np.ndarray) -> ModalityDataset:
        """The rows ``rows`` of every modality, as a new dataset."""
        rows = np.asarray(rows)
        index = torch.as_tensor(rows, dtype=torch.long)
        picked = {
            name: v[index] if isinstance(v, torch.Tensor) else [v[i] for i in rows]
            for name, v in self.inputs.items()
        }
        present = {name: flags[index].numpy() for name, flags in self.present.items()}
        return ModalityDataset(picked, self.labels[index].numpy(), present=present)


def _column(values: Any) -> Any:
    if isinstance(values, torch.Tensor):
        return values
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return torch.from_numpy(values.astype(np.float32) if values.dtype.kind == "f" else values)
    return list(values)


__all__ = ["ModalityDataset"]
