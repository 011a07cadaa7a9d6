"""A multimodal dataset read from a manifest table: image paths, texts, tabular columns, a label.

Each modality is one column (an image path or a text) or several (tabular values); its values go
through that modality's :class:`~modelfusion.data.DataPipeline` stages (the tutorials'
``add_stage("image", ...)``, ``add_stage("text", ...)``) after loading. Rows where a modality is
missing (an empty image cell, an empty text, a missing tabular value) are skipped with a count
(``missing="skip"``) or kept for a model's learned stand-in (``missing="embed"``, with
``MultimodalFusion(..., missing_embeddings=True)``). Images that fail to decode stop the load
naming the first files (``bad_images="fail"``) or are skipped with a count (``"skip"``).

Examples
--------
>>> pipeline = DataPipeline().add_stage("image", normalise).add_stage("text", str.lower)
>>> data = MultimodalDataset("pets.csv", columns={"image": "photo", "text": "description",
...                          "tabular": ["age", "fee"]}, label="adopted", image_size=64, pipeline=pipeline)
>>> data.skipped_
{'missing image': 3, 'missing text': 1}
>>> Trainer(model, nn.functional.cross_entropy).fit(data)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.data.datasets import IMAGE_EXTENSIONS, read_table
from modelfusion.errors import DataError, ModelFusionWarning, ParameterError
from modelfusion.multimodal.data import ModalityDataset

KINDS = ("image", "text", "tabular")
MISSING = ("skip", "embed")
BAD_IMAGES = ("fail", "skip")


class MultimodalDataset(ModalityDataset):
    """Rows of a CSV/TSV/Parquet manifest as ``{modality: value}`` with a label.

    Parameters
    ----------
    manifest : the table's path. Image paths in it are relative to ``root`` (default: its folder).
    columns : ``{modality: column}``, or ``{modality: [columns]}`` for a tabular modality.
    label : the label column; its classes are sorted (``classes_``) and rows without one dropped.
    kinds : ``{modality: "image" | "text" | "tabular"}``; inferred when left out (several columns:
        tabular; paths ending in an image extension: image; other strings: text; numbers: tabular).
    pipeline : per-modality stages run after loading (images as float [channels, h, w] in [0, 1]).
    image_size, channels : resize every image to ``image_size`` (int or (h, w)) and 1 or 3 channels;
        without ``image_size`` all images must share one size.
    missing, bad_images : see the module docstring.

    Attributes
    ----------
    classes_ : the label values, in the order of the class indices.
    skipped_ : ``{reason: rows}`` for every row left out.
    kinds_ : the kind of each modality.
    """

    def __init__(
        self,
        manifest: str | Path,
        *,
        columns: Mapping[str, str | Sequence[str]],
        label: str = "label",
        kinds: Mapping[str, str] | None = None,
        pipeline: Any = None,
        image_size: int | Sequence[int] | None = None,
        channels: int | None = None,
        missing: str = "skip",
        bad_images: str = "fail",
        root: str | Path | None = None,
    ):
        _check_choice("missing", missing, MISSING)
        _check_choice("bad_images", bad_images, BAD_IMAGES)
        path = Path(manifest)
        table = read_table(path)
        wanted = {m: [c] if isinstance(c, str) else list(c) for m, c in columns.items()}
        _check_columns(path, table, wanted, label)
        self.kinds_ = {m: _kind(m, cols, table, (kinds or {}).get(m)) for m, cols in wanted.items()}
        base = Path(root) if root is not None else path.parent
        values, present = {}, {}
        for m, cols in wanted.items():
            values[m], present[m] = _read_modality(self.kinds_[m], table, cols)
        keep, self.skipped_ = _labelled_rows(table[label])
        for m, kind in self.kinds_.items():
            if kind == "image":
                values[m], readable = _load_images(
                    values[m], present[m] & keep, base, image_size, channels, bad_images, path, m
                )
                _drop(keep, ~readable, f"unreadable image ({m})", self.skipped_)
        if missing == "skip":
            for m in wanted:
                _drop(keep, ~present[m], f"missing {m}", self.skipped_)
        rows = np.flatnonzero(keep)
        if not len(rows):
            raise DataError(f"{str(path)!r}: no rows left after skipping {self.skipped_}")
        if self.skipped_:
            counts = ", ".join(f"{n} {reason}" for reason, n in self.skipped_.items())
            warnings.warn(
                f"{str(path)!r}: skipped {counts} rows ({len(rows)} kept)", ModelFusionWarning, stacklevel=2
            )
        columns_out = {m: _take(values[m], rows, self.kinds_[m]) for m in wanted}
        if pipeline is not None:
            columns_out = _run_pipeline(pipeline, columns_out)
        self.classes_, labels = np.unique(table[label][rows], return_inverse=True)
        kept_present = {m: present[m][rows] for m in wanted} if missing == "embed" else None
        super().__init__(columns_out, labels, present=kept_present)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ParameterError(f"{name}={value!r} is not one of {', '.join(choices)}")


def _check_columns(
    path: Path, table: Mapping[str, np.ndarray], wanted: Mapping[str, list[str]], label: str
) -> None:
    absent = [(m, c) for m, cols in wanted.items() for c in cols if c not in table]
    if label not in table:
        absent.append(("label", label))
    if absent:
        named = ", ".join(f"{c!r} (for {m})" for m, c in absent)
        raise DataError(f"manifest {str(path)!r} has no column {named}; its columns: {', '.join(table)}")


def _kind(modality: str, cols: list[str], table: Mapping[str, np.ndarray], given: str | None) -> str:
    if given is not None:
        _check_choice(f"kinds.{modality}", given, KINDS)
        return given
    if len(cols) > 1 or table[cols[0]].dtype.kind in "iuf":
        return "tabular"
    cells = [str(v).lower() for v in table[cols[0]] if str(v).strip()]
    if cells and all(c.endswith(IMAGE_EXTENSIONS) for c in cells):
        return "image"
    return "text"


def _read_modality(kind: str, table: Mapping[str, np.ndarray], cols: list[str]) -> tuple[Any, np.ndarray]:
    """The raw values of one modality and whether each row has it."""
    if kind == "tabular":
        try:
            values = np.column_stack([table[c].astype(np.float32) for c in cols])
        except ValueError as exc:
            raise DataError(f"tabular columns {cols}: expected numbers ({exc})") from None
        return values, np.asarray(~np.isnan(values).any(axis=1))
    text = [str(v) if v == v else "" for v in table[cols[0]].tolist()]  # NaN (an empty numeric cell) -> ""
    return text, np.array([bool(t.strip()) for t in text])


def _labelled_rows(labels: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    numeric = labels.dtype.kind == "f"
    keep = ~np.isnan(labels) if numeric else np.array([bool(str(v).strip()) for v in labels])
    return keep, ({"no label": int((~keep).sum())} if not keep.all() else {})


def _drop(keep: np.ndarray, drop: np.ndarray, reason: str, skipped: dict[str, int]) -> None:
    dropped = int((keep & drop).sum())
    if dropped:
        skipped[reason] = skipped.get(reason, 0) + dropped
        keep &= ~drop


def _load_images(
    cells: list[str],
    wanted: np.ndarray,
    base: Path,
    image_size: int | Sequence[int] | None,
    channels: int | None,
    policy: str,
    manifest: Path,
    modality: str,
) -> tuple[list[Any], np.ndarray]:
    """Decode the images of the rows in ``wanted``; the others (and failures) get None."""
    from modelfusion.data.images import read_image

    images: list[Any] = [None] * len(cells)
    readable = np.ones(len(cells), dtype=bool)
    failed: list[str] = []
    for i in np.flatnonzero(wanted):
        try:
            images[i] = read_image(base / cells[i], image_size=image_size, channels=channels)
        except DataError as exc:
            readable[i] = False
            failed.append(f"{cells[i]} ({exc})")
    if failed and policy == "fail":
        raise DataError(
            f"manifest {str(manifest)!r}: {len(failed)} {modality} file(s) cannot be read, first: "
            f"{'; '.join(failed[:3])}; fix them or pass bad_images='skip'"
        )
    shapes = {images[i].shape for i in np.flatnonzero(wanted & readable)}
    if len(shapes) > 1:
        raise DataError(
            f"manifest {str(manifest)!r}: {modality} images have different sizes {sorted(shapes)}; "
            "pass image_size= to resize them all"
        )
    if not shapes and wanted.any():
        raise DataError(f"manifest {str(manifest)!r}: none of the {modality} images could be read")
    blank = np.zeros(next(iter(shapes)), dtype=np.float32) if shapes else None
    return [img if img is not None else blank for img in images], readable


def _run_pipeline(pipeline: Any, columns: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's stages on the modalities it has stages for; the others pass through."""
    staged = [m for m in pipeline.modalities if pipeline.stages(m)]
    unknown = [m for m in staged if m not in columns]
    if unknown:
        raise DataError(
            f"the pipeline has stages for {unknown}, which columns= does not name (it names {list(columns)})"
        )
    return {**columns, **pipeline.process_batch({m: columns[m] for m in staged})}


def _take(values: Any, rows: np.ndarray, kind: str) -> Any:
    if kind == "tabular":
        return np.nan_to_num(values[rows])  # missing cells of kept rows ("embed") -> 0, the stand-in decides
    if kind == "image":
        return np.stack([values[i] for i in rows])
    return [values[i] for i in rows]


__all__ = ["BAD_IMAGES", "KINDS", "MISSING", "MultimodalDataset"]
