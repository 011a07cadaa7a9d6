"""The :class:`Dataset`: inputs, optional labels and the names that go with them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelfusion.errors import ArgumentTypeError, DataError, InputError
from modelfusion.predictions import data_fingerprint, data_length


@dataclass(eq=False, repr=False)
class Dataset:
    """Inputs, optional labels and the names that go with them.

    Parameters
    ----------
    X : the inputs, one of
        - a numpy array ``[samples, ...]`` (tabular features, images ``[samples, C, H, W]``)
        - a list of str (text), or a list of image arrays (sizes may differ)
        - a dict ``{modality: array or list}`` for multimodal data, all of one length
    y : labels ``[samples]`` (int, float or str), or None for unlabeled data
    name : a short name used in reports
    feature_names : column names of a 2-D ``X``
    class_names : label names in class-index order
    meta : anything else (``image_shape``, ``task``, ``source``, ...)

    Examples
    --------
    >>> ds = load_dataset("builtin:digits")
    >>> len(ds), ds.X.shape, ds[:10].y.shape
    (1797, (1797, 64), (10,))
    """

    X: Any
    y: np.ndarray | None = None
    name: str = "dataset"
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.X = _as_inputs(self.X, self.name)
        if self.y is not None:
            self.y = _to_numpy(self.y)
            if len(self.y) != len(self):
                raise DataError(f"dataset {self.name!r}: {len(self.y)} labels for {len(self)} samples")
        if self.feature_names is not None:
            self.feature_names = [str(f) for f in self.feature_names]
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]
        self.meta = dict(self.meta)

    def __len__(self) -> int:
        return data_length(self.X)

    def __getitem__(self, index: slice | np.ndarray | Sequence[int]) -> Dataset:
        """The samples at ``index`` (a slice, an integer array or a boolean mask) as a new Dataset."""
        if isinstance(index, (int, np.integer)):
            raise ArgumentTypeError(
                f"index a Dataset with a slice or an array of indices, got the integer {index}; "
                f"use ds[{index}:{index + 1}] for one sample, or ds.X / ds.y for raw values"
            )
        if not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool:
                if len(index) != len(self):
                    raise InputError(f"boolean mask of length {len(index)} for {len(self)} samples")
                index = np.flatnonzero(index)
            elif index.size == 0:
                index = index.astype(np.int64)
            elif not np.issubdtype(index.dtype, np.integer):
                raise ArgumentTypeError(
                    f"index a Dataset with integers or a boolean mask, got dtype {index.dtype}"
                )
        return Dataset(
            X=_take(self.X, index),
            y=None if self.y is None else self.y[index],
            name=self.name,
            feature_names=self.feature_names,
            class_names=self.class_names,
            meta=self.meta,
        )

    def fingerprint(self) -> str:
        """A stable sha256 of the inputs and labels (names and meta do not count)."""
        x_key = _inputs_fingerprint(self.X)
        if self.y is None:
            y_key: str | None = "none"
        elif self.y.dtype == object:
            y_key = data_fingerprint([str(v) for v in self.y.tolist()])
        else:
            y_key = data_fingerprint(self.y)
        return hashlib.sha256(f"{x_key}|{y_key}".encode()).hexdigest()

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}", f"samples={len(self)}", f"X={_describe(self.X)}"]
        if self.y is not None:
            parts.append(f"y={_describe(self.y)}")
        if self.class_names is not None:
            parts.append(f"classes={len(self.class_names)}")
        return f"Dataset({', '.join(parts)})"


# -- the Dataset's internals --------------------------------------------------------------


def _to_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach") and hasattr(a, "numpy"):  # a torch tensor
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _as_inputs(X: Any, name: str) -> Any:
    if isinstance(X, Mapping):
        if not X:
            raise DataError(f"dataset {name!r}: X is an empty dict; give at least one modality")
        cols = {str(k): _as_inputs(v, name) for k, v in X.items()}
        lengths = {k: data_length(v) for k, v in cols.items()}
        if len(set(lengths.values())) > 1:
            sizes = ", ".join(f"{k}={n}" for k, n in lengths.items())
            raise DataError(f"dataset {name!r}: every modality must have one length, got {sizes}")
        return cols
    if isinstance(X, np.ndarray):
        return X
    if hasattr(X, "detach") and hasattr(X, "numpy"):
        return _to_numpy(X)
    if isinstance(X, tuple):
        X = list(X)
    if isinstance(X, list):
        if all(isinstance(v, (str, np.ndarray)) for v in X):
            return X  # text, or images of possibly different sizes
        return np.asarray(X)
    if not hasattr(X, "__len__") or not hasattr(X, "__getitem__"):
        raise DataError(
            f"dataset {name!r}: X must be an array, a list of str or arrays, or a dict of those; "
            f"got {type(X).__name__}"
        )
    return X


def _take(x: Any, index: slice | np.ndarray) -> Any:
    if isinstance(x, Mapping):
        return {k: _take(v, index) for k, v in x.items()}
    if isinstance(x, list):
        return x[index] if isinstance(index, slice) else [x[i] for i in index.tolist()]
    return x[index]


def _inputs_fingerprint(x: Any) -> str:
    if isinstance(x, Mapping):
        parts = "|".join(f"{k}:{_inputs_fingerprint(v)}" for k, v in sorted(x.items()))
        return hashlib.sha256(parts.encode()).hexdigest()
    if isinstance(x, list) and x and all(isinstance(v, np.ndarray) for v in x):
        # Images of different sizes cannot be stacked; hash them one by one.
        return hashlib.sha256("|".join(str(data_fingerprint(v)) for v in x).encode()).hexdigest()
    key = data_fingerprint(x)
    if key is None:
        raise ArgumentTypeError(f"cannot fingerprint inputs of type {type(x).__name__}")
    return key


def _describe(a: Any) -> str:
    if isinstance(a, Mapping):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in a.items()) + "}"
    if isinstance(a, np.ndarray):
        return f"{a.dtype}{list(a.shape)}"
    if isinstance(a, list):
        kind = (
            "str"
            if a and isinstance(a[0], str)
            else "array"
            if a and isinstance(a[0], np.ndarray)
            else "object"
        )
        return f"list[{kind}] of {len(a)}"
    return type(a).__name__
