"""DataPipeline: named preprocessing stages per modality, applied to records, lists or datasets."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from modelfusion.data.dataset import Dataset
from modelfusion.errors import ArgumentTypeError, DataError


@dataclasses.dataclass(frozen=True)
class Stage:
    """One preprocessing step: ``fn`` applied to one item, or to a whole batch if ``batched``."""

    name: str
    fn: Callable[[Any], Any]
    batched: bool = False


class DataPipeline:
    """Preprocessing stages per modality (``"image"``, ``"text"``, ...), run in the order added.

    Parameters
    ----------
    modalities : modalities that pass through unchanged (no stages) but are expected in the
        data; with ``strict=True`` any other key without stages is an error, which catches
        typos such as ``"imgae"``
    strict : reject record keys that are neither declared nor have stages

    Examples
    --------
    >>> pipeline = DataPipeline()
    >>> pipeline.add_stage("image", preprocess_image)
    >>> pipeline.add_stage("text", preprocess_text)
    >>> pipeline({"image": img, "text": "a photo of a cat"})          # one record
    >>> pipeline(dataset)                                              # X = {"image": ..., "text": ...}
    >>> member = load_member("vit.onnx", preprocess=pipeline.as_member_preprocess("image"))
    """

    def __init__(self, modalities: Iterable[str] = (), *, strict: bool = True):
        self.strict = strict
        self._stages: dict[str, list[Stage]] = {str(m): [] for m in modalities}

    # -- building ---------------------------------------------------------------------------
    def add_stage(
        self, modality: str, fn: Callable[[Any], Any], name: str | None = None, *, batched: bool = False
    ) -> DataPipeline:
        """Append ``fn`` to ``modality``'s stages and return the pipeline (for chaining).

        ``fn`` takes one item (an image array, a string) and returns the processed item;
        with ``batched=True`` it takes a whole batch (``[N, ...]`` array or list) instead,
        which is much faster for vectorised work such as tokenisation or resizing.
        ``name`` (default: the function's name) identifies the stage in :meth:`fingerprint`.
        """
        if not callable(fn):
            raise ArgumentTypeError(
                f"stage for modality {modality!r} must be callable, got {type(fn).__name__}"
            )
        self._stages.setdefault(str(modality), []).append(Stage(name or _callable_name(fn), fn, batched))
        return self

    @property
    def modalities(self) -> list[str]:
        """Known modalities: declared ones and those with stages, in order of first mention."""
        return list(self._stages)

    def stages(self, modality: str) -> list[Stage]:
        """The stages of ``modality`` in the order they run (empty for a declared pass-through)."""
        self._check_modality(modality, strict=True)
        return list(self._stages[modality])

    def fingerprint(self) -> str:
        """A sha256 of the stage names (not their code): name stages explicitly to cache safely."""
        spec = ";".join(
            f"{m}=" + ",".join(f"{s.name}{'[batched]' if s.batched else ''}" for s in stages)
            for m, stages in sorted(self._stages.items())
        )
        return hashlib.sha256(spec.encode()).hexdigest()

    def __repr__(self) -> str:
        parts = [f"{m}: [{' -> '.join(s.name for s in stages)}]" for m, stages in self._stages.items()]
        return f"DataPipeline({', '.join(parts)})"

    # -- running --------------------------------------------------------------------------
    def __call__(self, data: Any) -> Any:
        return self.process(data)

    def process(self, data: Any) -> Any:
        """Apply the stages to one record, a list of records, or a Dataset of modalities.

        - ``{"image": array, "text": str}`` (one record) -> the processed record
        - a list of records -> a list of processed records
        - a :class:`Dataset` whose X is ``{modality: array or list}`` -> a Dataset with each
          column processed (batched stages see the whole column at once)

        Modalities without stages pass through unchanged. Raises ValueError for a modality
        the pipeline does not know (``strict=True``).
        """
        if isinstance(data, Dataset):
            if not isinstance(data.X, Mapping):
                raise ArgumentTypeError(
                    f"DataPipeline processes a Dataset whose X is a dict of modalities; "
                    f"dataset {data.name!r} has X of type {type(data.X).__name__}. Wrap it, e.g. "
                    f"Dataset({{{self.modalities[0] if self.modalities else 'image'!r}: X}}, y), or use "
                    "as_member_preprocess(modality) on the array"
                )
            return dataclasses.replace(data, X=self.process_batch(data.X))
        if isinstance(data, Mapping):
            return self._process_record(data)
        if isinstance(data, (list, tuple)) and all(isinstance(r, Mapping) for r in data):
            return [self._process_record(r) for r in data]
        raise ArgumentTypeError(
            f"DataPipeline takes a record (dict of modality -> value), a list of records or a Dataset, "
            f"got {type(data).__name__}"
        )

    def process_batch(self, columns: Mapping[str, Any]) -> dict[str, Any]:
        """Apply the stages to a batch in column form: ``{modality: [N, ...] array or list}``."""
        for key in columns:
            self._check_modality(key)
        return {k: self._process_column(k, v) for k, v in columns.items()}

    def as_member_preprocess(self, modality: str | None = None) -> Callable[[Any], Any]:
        """A callable for a member's ``preprocess=`` option.

        With ``modality``, it applies that modality's stages to a batch of that modality
        (an array ``[N, ...]`` or a list); without, it processes a column-form batch
        ``{modality: batch}`` (for multimodal members).
        """
        if modality is not None:
            self._check_modality(modality, strict=True)  # a typo here would silently skip every stage
            return functools.partial(self._process_column, modality)
        return self.process_batch

    # -- internals --------------------------------------------------------------------------
    def _check_modality(self, modality: str, strict: bool | None = None) -> None:
        if modality in self._stages:
            return
        if self.strict if strict is None else strict:
            known = ", ".join(self._stages) or "none yet (add_stage or pass modalities=)"
            close = difflib.get_close_matches(str(modality), list(self._stages), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(
                f"unknown modality {modality!r}{hint}; this pipeline knows: {known}. Declare pass-through "
                f"modalities with DataPipeline(modalities=[...]) or pass strict=False"
            )

    def _process_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in record.items():
            self._check_modality(key)
            for stage in self._stages.get(key, ()):
                value = _unbatch(stage.fn(_batch_of_one(value))) if stage.batched else stage.fn(value)
            out[key] = value
        return out

    def _process_column(self, modality: str, column: Any) -> Any:
        for stage in self._stages.get(modality, ()):
            column = stage.fn(column) if stage.batched else _restack([stage.fn(item) for item in column])
        return column


def _callable_name(fn: Callable) -> str:
    if isinstance(fn, functools.partial):
        return _callable_name(fn.func)
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _batch_of_one(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value[None]
    if hasattr(value, "unsqueeze"):  # a torch tensor
        return value.unsqueeze(0)
    return [value]


def _unbatch(batch: Any) -> Any:
    if isinstance(batch, Mapping):  # e.g. a tokenizer's {"input_ids": [1, L], ...}
        return {k: v[0] for k, v in batch.items()}
    return batch[0]


def _restack(items: Sequence[Any]) -> Any:
    """Stack per-item results into one array when they are same-shaped arrays."""
    if items and all(isinstance(x, np.ndarray) for x in items):
        if len({x.shape for x in items}) == 1:
            return np.stack(items)
        return list(items)
    if items and all(isinstance(x, Mapping) for x in items):
        keys = list(items[0])
        return {k: _restack([x[k] for x in items]) for k in keys}
    if items and all(isinstance(x, (int, float, np.number)) for x in items):
        return np.asarray(items)
    return list(items)
