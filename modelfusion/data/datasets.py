"""Datasets: inputs, labels and names in one object, loaded from whatever a user has on disk.

:func:`load_dataset` reads a built-in example (``builtin:digits``), an image folder (one
sub-folder per class), a table (``.csv``, ``.tsv``, ``.parquet``), NumPy arrays (``.npy``,
``.npz``) or a Python factory (``package.module:function``) into a :class:`Dataset`.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import hashlib
import importlib
import importlib.util
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.data.builtin import check_builtin, load_builtin
from modelfusion.data.dataset import Dataset
from modelfusion.dependencies import require
from modelfusion.errors import (
    DataError,
    DataFileNotFoundError,
    ModelFusionError,
    ModelFusionWarning,
)
from modelfusion.importpath import importable_from, is_import_path

FORMATS = ("builtin", "images", "csv", "tsv", "parquet", "npy", "npz", "factory")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npy": "npy",
    ".npz": "npz",
}
_FORMAT_ALIASES = {"image_folder": "images", "imagefolder": "images", "image": "images", "table": "csv"}
_LABEL_COLUMNS = ("label", "target", "y")
_NPZ_LABEL_KEYS = ("y", "labels", "target")
_NPZ_INPUT_KEYS = ("X", "x", "features", "data")
_MISSING = frozenset({"", "na", "nan", "n/a", "null", "none", "#n/a"})
# Options each format understands; anything else is a typo worth reporting.
_OPTIONS = {
    "builtin": (),
    "images": ("image_size", "channels"),
    "csv": ("text_column", "delimiter", "dtype", "keep_columns"),
    "tsv": ("text_column", "delimiter", "dtype", "keep_columns"),
    "parquet": ("text_column", "dtype", "keep_columns"),
    "npy": ("labels", "mmap"),
    "npz": ("input_key",),
}


# -- loading ------------------------------------------------------------------------------


def load_dataset(
    source: str | Path,
    *,
    format: str = "auto",
    label: str | None = None,
    features: list[str] | None = None,
    base_dir: Path | None = None,
    trust: bool = False,
    labelled: bool = True,
    **options: Any,
) -> Dataset:
    """Read a dataset from a built-in name, a file, a folder or a Python factory.

    Parameters
    ----------
    source : one of
        - ``"builtin:NAME"``: a bundled example (see :data:`BUILTIN_DATASETS`)
        - a folder with one sub-folder of images per class (png, jpg, jpeg, bmp, webp)
        - a ``.csv``, ``.tsv`` or ``.parquet`` table
        - a ``.npy`` array (inputs only; labels via ``labels=``) or a ``.npz`` archive
        - ``"package.module:function"`` (or ``"file.py:function"``): a function returning
          ``(X, y)``, a Dataset or ``{"X": ..., "y": ...}``; ``options`` are passed to it
    format : ``"auto"`` (from the source) or one of ``builtin, images, csv, tsv, parquet,
        npy, npz, factory``
    label : the label column of a table (default: ``label``, then ``target``, then ``y``) or
        the label key of an ``.npz`` (default: ``y``, ``labels``, ``target``)
    features : feature columns to keep (default: every other numeric column)
    base_dir : folder relative paths are resolved against (the config's folder); default cwd
    trust : allow pickled object arrays in ``.npy``/``.npz`` (runs code from the file)
    labelled : ``False`` for data to predict on: a table without a label column is fine
        (``y`` is None)
    options : per-format settings
        - images: ``image_size`` (int or (H, W)), ``channels`` (1 or 3; default from the files)
        - tables: ``text_column`` (X becomes that column as a list of str), ``delimiter``,
          ``dtype`` of X (default float32), ``keep_columns`` (columns carried in
          ``meta["column:NAME"]`` and left out of the features, e.g. an id)
        - npy: ``labels`` (path of a ``.npy``/``.txt``/``.csv`` file of labels), ``mmap``
        - npz: ``input_key`` (the inputs' key when it is not X, x, features or data)

    Returns
    -------
    Dataset
        String labels stay strings in ``y``; the prediction store maps them to member classes.

    Raises
    ------
    DataFileNotFoundError
        if a file does not exist (the message shows the resolved path).
    DataError
        for an unknown format or builtin, a missing label column or key, images of mixed
        sizes, or a factory that cannot be imported.

    Examples
    --------
    >>> ds = load_dataset("data/reviews.tsv", label="sentiment", text_column="text")
    >>> ds = load_dataset("images/", image_size=(64, 64))
    """
    base = Path(base_dir) if base_dir is not None else None
    plan = plan_source(source, format=format, label=label, base_dir=base, options=options)
    if plan.format == "builtin":
        ds = load_builtin(plan.text.removeprefix("builtin:"))
        return _select_features(ds, features) if features is not None else ds
    if plan.format == "factory":
        ds = _dataset_from_factory(plan.factory(**options), plan.text, plan.text.rpartition(":")[2])
        return _select_features(ds, features) if features is not None else ds
    path, fmt = plan.path, plan.format
    assert path is not None
    try:
        return _load_file(
            path, fmt, base, label=label, features=features, labelled=labelled, trust=trust, **options
        )
    except (ModelFusionError, OSError):
        raise
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:  # the reader's word on a malformed file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {str(path)!r} as {fmt} ({type(exc).__name__}: {detail})") from exc


@dataclass(frozen=True)
class SourcePlan:
    """What :func:`plan_source` found out about a data source without reading its data."""

    text: str
    #: ``builtin``, ``factory`` or a file format (``csv``, ``images``, ...)
    format: str
    #: the resolved file or folder (None for builtins and factories)
    path: Path | None = None
    #: the imported factory function (format ``factory``)
    factory: Any = None


def plan_source(
    source: str | Path,
    *,
    format: str = "auto",
    label: str | None = None,
    base_dir: Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> SourcePlan:
    """Check a data source as far as possible without reading it: format, options, the file or builtin
    name, the factory's import. Raises the error :func:`load_dataset` would raise for it.

    Examples
    --------
    >>> plan_source("builtin:digits").format
    'builtin'
    """
    options = dict(options or {})
    fmt = _FORMAT_ALIASES.get(format.lower(), format.lower())
    if fmt not in (*FORMATS, "auto"):
        raise DataError(f"unknown data format {format!r}; supported: auto, {', '.join(FORMATS)}")
    text = str(source)
    if fmt == "builtin" or (fmt == "auto" and isinstance(source, str) and text.startswith("builtin:")):
        _check_options("builtin", options)
        _reject_label(label, "builtin")
        check_builtin(text.removeprefix("builtin:"))
        return SourcePlan(text, "builtin")
    path = _resolve(text, base_dir)
    if fmt == "factory" or (
        fmt == "auto" and isinstance(source, str) and not path.exists() and is_import_path(text)
    ):
        if label is not None:
            raise DataError(f"label={label!r} does not apply to a factory; return the labels as y")
        return SourcePlan(text, "factory", factory=resolve_factory(text, base_dir))
    if not path.exists():
        relative = (
            ""
            if Path(text).expanduser().is_absolute()
            else (
                f", relative to {base_dir}" if base_dir is not None else ", relative to the current directory"
            )
        )
        kind = "file" if path.suffix else "folder"
        raise DataFileNotFoundError(f"data {kind} {text!r} does not exist (resolved to {path}{relative})")
    if fmt == "auto":
        fmt = _infer_format(path)
    _check_options(fmt, options)
    if fmt in ("images", "npy"):
        _reject_label(label, fmt)
    return SourcePlan(text, fmt, path=path)


def _load_file(
    path: Path,
    fmt: str,
    base: Path | None,
    *,
    label: str | None,
    features: list[str] | None,
    labelled: bool,
    trust: bool,
    **options: Any,
) -> Dataset:
    if fmt == "images":
        if not path.is_dir():
            raise DataError(f"format='images' needs a folder of class sub-folders, {str(path)!r} is a file")
        ds = _load_image_folder(path, **options)
    elif fmt in ("csv", "tsv", "parquet"):
        return _load_table(path, fmt, label=label, features=features, labelled=labelled, **options)
    elif fmt == "npy":
        ds = _load_npy(path, base=base, trust=trust, **options)
    else:
        ds = _load_npz(path, label=label, trust=trust, **options)
    return _select_features(ds, features) if features is not None else ds


def source_id(source: str | Path, base: Path | None = None) -> str:
    """A digest that identifies a data source (a builtin name, or a file's absolute path), to tell
    later whether data given on the command line is the data a run used, without recording the path.

    Examples
    --------
    >>> source_id("builtin:digits") == source_id("builtin:digits")
    True
    """
    text = str(source)
    if not text.startswith("builtin:"):
        path = _resolve(text, base)
        if path.exists():
            text = str(path.resolve())
    return hashlib.sha256(text.encode()).hexdigest()


def _resolve(text: str, base: Path | None) -> Path:
    p = Path(text).expanduser()
    if not p.is_absolute():
        p = (base if base is not None else Path.cwd()) / p
    return p.resolve()


def read_table(path: str | Path, *, delimiter: str | None = None) -> dict[str, np.ndarray]:
    """The columns of a CSV, TSV or Parquet file as arrays (numbers parsed, missing cells NaN,
    text columns as str), by name in file order.

    Examples
    --------
    >>> read_table("pairs.csv")["caption"][:2]
    array(['a red apple', 'two cats'], dtype='<U...')
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError(f"table {str(path)!r} does not exist")
    fmt = _infer_format(path)
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt not in ("csv", "tsv"):
        raise DataError(f"{str(path)!r} is a {fmt} file; a manifest is a CSV, TSV or Parquet table")
    return _read_delimited(path, delimiter or {"csv": ",", "tsv": "\t"}[fmt])


def _infer_format(path: Path) -> str:
    if path.is_dir():
        return "images"
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {str(path)!r} from its extension {path.suffix or '(none)'!r}; "
            f"supported: {', '.join(sorted(_EXTENSIONS))}, a folder of class sub-folders of images, "
            "'builtin:NAME' or 'module:function'; or pass format="
        )
    return fmt


def _check_options(fmt: str, options: Mapping[str, Any]) -> None:
    valid = _OPTIONS.get(fmt, ())
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise DataError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for {fmt} data; "
            f"valid: {', '.join(valid) if valid else '(none)'}"
        )


def _reject_label(label: str | None, fmt: str) -> None:
    if label is not None:
        raise DataError(f"label={label!r} applies to tables and .npz files, not to {fmt} data")


def _suggest(wanted: str | Sequence[str], available: Sequence[str]) -> str:
    lowered = {a.lower(): a for a in available}
    for w in [wanted] if isinstance(wanted, str) else wanted:
        match = difflib.get_close_matches(w.lower(), list(lowered), n=1, cutoff=0.6)
        if match:
            return f" (did you mean {lowered[match[0]]!r}?)"
    return ""


def _select_features(ds: Dataset, features: Sequence[str]) -> Dataset:
    if ds.feature_names is None or not isinstance(ds.X, np.ndarray) or ds.X.ndim != 2:
        raise DataError(f"features= needs a dataset with named columns; {ds.name!r} has none")
    idx = []
    for f in features:
        if f not in ds.feature_names:
            raise DataError(
                f"dataset {ds.name!r} has no feature {f!r}{_suggest(f, ds.feature_names)}; "
                f"features: {', '.join(ds.feature_names)}"
            )
        idx.append(ds.feature_names.index(f))
    return Dataset(ds.X[:, idx], ds.y, ds.name, list(features), ds.class_names, ds.meta)


# -- image folders ------------------------------------------------------------------------


def _load_image_folder(
    root: Path, *, image_size: int | Sequence[int] | None = None, channels: int | None = None
):
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow ships with torchvision
        raise DataError("reading an image folder needs Pillow: pip install pillow") from exc

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"image folder {str(root)!r} has no sub-folders; put each class's images in a sub-folder "
            "named after the class (images/cat/1.png, images/dog/2.png)"
        )
    files: list[tuple[Path, int]] = []
    for i, d in enumerate(class_dirs):
        found = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise DataError(
                f"class folder {str(d)!r} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "remove it or add its images"
            )
        files += [(p, i) for p in found]
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    size = None
    if image_size is not None:
        hw = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        if len(hw) != 2 or min(hw) <= 0:
            raise DataError(f"image_size must be a positive int or (height, width), got {image_size!r}")
        size = hw

    images = []
    first: tuple[Path, tuple[int, int]] | None = None
    for path, _ in files:
        with Image.open(path) as img:
            img.load()
            images.append(img.copy())
        if size is None:
            hw = (images[-1].height, images[-1].width)
            if first is None:
                first = (path, hw)
            elif hw != first[1]:
                raise DataError(
                    f"images in {str(root)!r} have different sizes: "
                    f"{first[0].relative_to(root)} is {first[1][0]}x{first[1][1]} and "
                    f"{path.relative_to(root)} is {hw[0]}x{hw[1]} (height x width); "
                    "pass image_size=(height, width) to resize them all"
                )
    if channels is None:
        channels = 1 if all(img.mode in ("1", "L", "I", "I;16", "F") for img in images) else 3
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for image in images:
        img = image.convert(mode)
        if size is not None and (img.height, img.width) != size:
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    X = np.ascontiguousarray(np.stack(arrays), dtype=np.float32)
    return Dataset(
        X=X,
        y=np.array([c for _, c in files], dtype=np.int64),
        name=root.name,
        class_names=[d.name for d in class_dirs],
        meta={
            "source": str(root),
            "format": "images",
            "task": "classification",
            "image_shape": tuple(X.shape[1:]),
            "files": [str(p.relative_to(root)) for p, _ in files],
        },
    )


# -- tables -------------------------------------------------------------------------------


def _load_table(
    path: Path,
    fmt: str,
    *,
    label: str | None,
    features: Sequence[str] | None,
    text_column: str | None = None,
    delimiter: str | None = None,
    dtype: str = "float32",
    labelled: bool = True,
    keep_columns: Sequence[str] = (),
) -> Dataset:
    columns = (
        _read_parquet(path)
        if fmt == "parquet"
        else _read_delimited(path, delimiter or {"csv": ",", "tsv": "\t"}[fmt])
    )
    names = list(columns)
    where = f"{str(path)!r} (columns: {', '.join(names)})"

    if label is None:
        label_col = next((c for c in _LABEL_COLUMNS if c in columns), None)
        if label_col is None and labelled:
            raise DataError(
                f"{str(path)!r} has no label column 'label' (nor 'target' or 'y')"
                f"{_suggest(_LABEL_COLUMNS, names)}; available columns: {', '.join(names)}; "
                "pass label='<column>'"
            )
    elif label not in columns:
        raise DataError(
            f"{str(path)!r} has no label column {label!r}{_suggest(label, names)}; "
            f"available columns: {', '.join(names)}"
        )
    else:
        label_col = label

    for col in [text_column] if text_column is not None else []:
        if col not in columns:
            raise DataError(f"{where}: no text column {col!r}{_suggest(col, names)}")

    for col in keep_columns:
        if col not in columns:
            raise DataError(f"{where}: no column {col!r}{_suggest(col, names)}")
    y = None if label_col is None else columns[label_col]
    if y is not None and y.dtype.kind == "f" and np.isnan(y).any():
        raise DataError(f"{str(path)!r}: column {label_col!r} has {int(np.isnan(y).sum())} missing labels")
    class_names = sorted(set(y.tolist())) if y is not None and y.dtype.kind == "U" else None
    meta: dict[str, Any] = {"source": str(path), "format": fmt, "label_column": label_col}
    meta.update({f"column:{col}": columns[col] for col in keep_columns})  # passed through, not features
    skip = {label_col, *keep_columns}

    if text_column is not None:
        values = columns[text_column]
        X: Any = [str(v) for v in values.tolist()]
        feature_names = None
        meta["text_column"] = text_column
    else:
        if features is not None:
            for f in features:
                if f not in columns:
                    raise DataError(f"{where}: no feature column {f!r}{_suggest(f, names)}")
                if columns[f].dtype.kind not in "iuf":
                    raise DataError(f"{where}: feature column {f!r} is not numeric (e.g. {columns[f][0]!r})")
            feature_names = list(features)
        else:
            feature_names = [c for c in names if c not in skip and columns[c].dtype.kind in "iuf"]
            dropped = [c for c in names if c not in skip and c not in feature_names]
            for c in dropped:
                _refuse_unreadable_cells(path, c, columns[c])
            if dropped:
                meta["dropped_columns"] = dropped
                warnings.warn(
                    f"{str(path)!r}: text column(s) {', '.join(map(repr, dropped))} are not features and were "
                    "left out (pass features=[...] to choose the columns, or text_column= for text)",
                    ModelFusionWarning,
                    stacklevel=3,
                )
        if not feature_names:
            raise DataError(f"{where}: no numeric feature columns; pass text_column= for a text dataset")
        X = np.column_stack([columns[c] for c in feature_names]).astype(dtype)
    return Dataset(X=X, y=y, name=path.stem, feature_names=feature_names, class_names=class_names, meta=meta)


def _refuse_unreadable_cells(path: Path, column: str, values: np.ndarray) -> None:
    """DataError naming the first bad cell of a column that is numbers except for a few cells.

    A column of text is left out as a whole; a numeric column with one typo must not be.
    """
    cells = [str(v).strip() for v in values.tolist()]
    numeric = [_is_number(v) or v.lower() in _MISSING for v in cells]
    if sum(numeric) == 0 or all(numeric):
        return
    if sum(numeric) < len(cells) / 2:
        return  # mostly text: a text column with a few numbers in it
    row = numeric.index(False)
    raise DataError(
        f"{str(path)!r}: column {column!r} holds numbers, but the cell on line {row + 2} is {cells[row]!r}, "
        "which is not a number; fix the cell (empty, NA or NaN mark a missing value), or pass features=[...] "
        "without this column"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_delimited(path: Path, delimiter: str) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()
    if not rows:
        raise DataError(f"{str(path)!r} is empty; a table needs a header row")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"{str(path)!r} repeats column names: {', '.join(dupes)}")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(
                f"{str(path)!r} line {line} has {len(row)} fields, the header has {len(header)}"
                + ("" if delimiter != "," or len(row) != 1 else "; is it tab-separated? pass delimiter='\\t'")
            )
    body = rows[1:]
    return {h: _parse_column([r[i] for r in body]) for i, h in enumerate(header)}


def _parse_column(values: list[str]) -> np.ndarray:
    """Numbers become int64 or float64 (missing -> NaN); anything else stays str."""
    arr = np.array([v.strip() for v in values], dtype=str)
    if arr.size == 0:
        return arr.astype(np.float64)
    missing = np.isin(np.char.lower(arr), list(_MISSING))
    if missing.all():
        return np.full(arr.shape, np.nan)
    try:
        numbers = np.where(missing, "nan", arr).astype(np.float64)
    except ValueError:
        return np.array(values, dtype=str)
    if not missing.any():
        with contextlib.suppress(ValueError, OverflowError):
            return arr.astype(np.int64)
    return numbers


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    pq = require("pyarrow.parquet", purpose=f"reading the Parquet file {str(path)!r}", extra="parquet")
    table = pq.read_table(path)
    raw = {name: table.column(name).to_pylist() for name in table.column_names}
    out = {}
    for name, values in raw.items():
        if all(isinstance(v, str) or v is None for v in values):
            out[name] = np.array(["" if v is None else v for v in values], dtype=str)
        else:
            out[name] = np.array([np.nan if v is None else v for v in values])
    return out


# -- numpy files --------------------------------------------------------------------------


def _load_npy(
    path: Path, *, base: Path | None, trust: bool, labels: str | Path | None = None, mmap: bool = False
):
    X = _np_load(path, trust, mmap_mode="r" if mmap else None)
    y = None
    meta: dict[str, Any] = {"source": str(path), "format": "npy"}
    if labels is not None:
        candidates = [_resolve(str(labels), base), _resolve(str(labels), path.parent)]
        label_path = next((p for p in candidates if p.exists()), None)
        if label_path is None:
            tried = " or ".join(dict.fromkeys(str(p) for p in candidates))
            raise DataFileNotFoundError(
                f"labels file {str(labels)!r} for {str(path)!r} does not exist (tried {tried})"
            )
        if label_path.suffix.lower() == ".npy":
            y = _np_load(label_path, trust)
        else:
            with open(label_path, encoding="utf-8") as fh:
                y = _parse_column([line for line in fh.read().splitlines() if line.strip()])
        if len(y) != len(X):
            raise DataError(f"{str(label_path)!r} has {len(y)} labels but {str(path)!r} has {len(X)} samples")
        meta["labels"] = str(label_path)
    return Dataset(X=X, y=y, name=path.stem, meta=meta)


def _load_npz(path: Path, *, label: str | None, trust: bool, input_key: str | None = None) -> Dataset:
    if not zipfile.is_zipfile(path):  # np.load would read any other file as a pickle
        raise DataError(f"{str(path)!r} is not a .npz archive (not a zip file); write it with np.savez")
    with np.load(path, allow_pickle=trust) as archive:
        keys = list(archive.files)
        x_key = input_key if input_key is not None else next((k for k in _NPZ_INPUT_KEYS if k in keys), None)
        if x_key is None or x_key not in keys:
            wanted = repr(input_key) if input_key is not None else ", ".join(_NPZ_INPUT_KEYS)
            raise DataError(
                f"{str(path)!r} has no inputs array (looked for {wanted}); keys found: {', '.join(keys) or '(none)'}. "
                "Pass input_key='<key>'."
            )
        if label is not None and label not in keys:
            raise DataError(
                f"{str(path)!r} has no label array {label!r}{_suggest(label, keys)}; keys found: {', '.join(keys)}"
            )
        y_key = label if label is not None else next((k for k in _NPZ_LABEL_KEYS if k in keys), None)
        try:
            X = archive[x_key]
            y = archive[y_key] if y_key is not None else None
            names = {k: archive[k].tolist() for k in ("feature_names", "class_names") if k in keys}
        except ValueError as exc:
            raise _pickle_error(path) from exc
    meta = {"source": str(path), "format": "npz", "input_key": x_key, "label_key": y_key}
    return Dataset(X=X, y=y, name=path.stem, meta=meta, **names)


def _np_load(path: Path, trust: bool, mmap_mode: str | None = None) -> np.ndarray:
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY" and not trust:  # np.load would read any other file as a pickle
            raise DataError(f"{str(path)!r} is not a .npy file (no NumPy header); write it with np.save")
    if not trust and _holds_objects(path):
        raise _pickle_error(path)
    try:
        return np.load(path, allow_pickle=trust, mmap_mode=mmap_mode)  # type: ignore[arg-type]  # "r" or None
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise _pickle_error(path) from exc
        raise DataError(f"cannot read {str(path)!r} as a NumPy array: {exc}") from exc


def _holds_objects(path: Path) -> bool:
    """Whether a ``.npy`` file's header declares Python objects (read from the header alone)."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            _, _, dtype = read(fh)
    except (OSError, ValueError):
        return False  # not a .npy file: np.load says what is wrong with it
    return bool(dtype.hasobject)


def _pickle_error(path: Path) -> DataError:
    return DataError(
        f"{str(path)!r} holds an array of Python objects (a pickle), and unpickling runs code from the "
        "file, so it is not read; save plain arrays (numbers or fixed-width strings), or pass trust=True if you trust the file"
    )


# -- factories ----------------------------------------------------------------------------


def resolve_factory(spec: str, base: Path | None = None) -> Any:
    """The function a data factory ``package.module:function`` (or ``file.py:function``) names, imported
    relative to ``base`` (the config's folder), not called; DataError naming what is missing."""
    module_name, _, func_name = spec.rpartition(":")
    if not module_name or not func_name:
        raise DataError(f"a data factory is written 'package.module:function', got {spec!r}")
    folder = base if base is not None else Path.cwd()
    try:
        with importable_from(folder):
            if module_name.endswith(".py"):
                file = _resolve(module_name, base)
                if not file.exists():
                    raise DataFileNotFoundError(
                        f"factory file {module_name!r} does not exist (resolved to {file})"
                    )
                mod_spec = importlib.util.spec_from_file_location(file.stem, file)
                if mod_spec is None or mod_spec.loader is None:
                    raise DataError(f"factory file {str(file)!r} cannot be imported as a Python module")
                module = importlib.util.module_from_spec(mod_spec)
                mod_spec.loader.exec_module(module)
            else:
                module = importlib.import_module(module_name)
    except DataFileNotFoundError:
        raise
    except ImportError as exc:
        raise DataError(
            f"cannot import module {module_name!r} for the data factory {spec!r} "
            f"(searched {folder} and sys.path): {exc}"
        ) from exc
    except Exception as exc:
        raise DataError(
            f"importing module {module_name!r} for the data factory {spec!r} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    fn: Any = module
    for part in func_name.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise DataError(
            f"module {module_name!r} has no function {func_name!r}{_suggest(func_name, public)}; "
            f"it defines: {', '.join(public) or 'nothing callable'}"
        )
    return fn


def _dataset_from_factory(result: Any, spec: str, name: str) -> Dataset:
    meta = {"source": spec, "format": "factory"}
    if isinstance(result, Dataset):
        result.meta = {**meta, **result.meta}
        return result
    if isinstance(result, Mapping) and "X" in result:
        extra = {k: result[k] for k in ("name", "feature_names", "class_names") if k in result}
        return Dataset(
            X=result["X"],
            y=result.get("y"),
            **{"name": name, **extra},
            meta={**meta, **result.get("meta", {})},
        )
    if isinstance(result, tuple) and len(result) == 2:
        return Dataset(X=result[0], y=result[1], name=name, meta=meta)
    raise DataError(
        f"data factory {spec!r} returned {type(result).__name__}; return (X, y), a Dataset, "
        "or a dict with 'X' and 'y'"
    )
