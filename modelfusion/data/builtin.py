"""Small example datasets bundled with scikit-learn, ready to fuse: ``builtin:NAME``.

Nothing is downloaded: every dataset here ships inside scikit-learn's wheel.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from modelfusion.data.dataset import Dataset
from modelfusion.errors import DataError


def _sklearn_dataset(name: str, loader_name: str, task: str) -> Dataset:
    from sklearn import datasets as sk

    bunch = getattr(sk, loader_name)()
    X = np.asarray(bunch.data, dtype=np.float32)
    if task == "regression":
        y = np.asarray(bunch.target, dtype=np.float64)
        class_names = None
    else:
        y = np.asarray(bunch.target, dtype=np.int64)
        class_names = [str(c) for c in bunch.target_names]
    return Dataset(
        X=X,
        y=y,
        name=name,
        feature_names=[str(f) for f in bunch.feature_names],
        class_names=class_names,
        meta={"source": f"builtin:{name}", "format": "builtin", "task": task},
    )


def load_digits() -> Dataset:
    """8x8 handwritten digits: X float32 [1797, 64] in [0, 1], y int64 0-9, ``meta["image_shape"] == (1, 8, 8)``."""
    ds = _sklearn_dataset("digits", "load_digits", "classification")
    ds.X = ds.X / np.float32(16.0)  # pixel intensities are 0..16
    ds.meta["image_shape"] = (1, 8, 8)
    return ds


def load_iris() -> Dataset:
    """Iris flowers: X float32 [150, 4], y int64 with 3 classes."""
    return _sklearn_dataset("iris", "load_iris", "classification")


def load_breast_cancer() -> Dataset:
    """Wisconsin breast cancer: X float32 [569, 30], y int64 (0 malignant, 1 benign)."""
    return _sklearn_dataset("breast_cancer", "load_breast_cancer", "classification")


def load_wine() -> Dataset:
    """Wine cultivars: X float32 [178, 13], y int64 with 3 classes."""
    return _sklearn_dataset("wine", "load_wine", "classification")


def load_diabetes() -> Dataset:
    """Diabetes progression (regression): X float32 [442, 10] (standardised), y float64."""
    return _sklearn_dataset("diabetes", "load_diabetes", "regression")


BUILTIN_DATASETS: dict[str, Callable[[], Dataset]] = {
    "digits": load_digits,
    "iris": load_iris,
    "breast_cancer": load_breast_cancer,
    "wine": load_wine,
    "diabetes": load_diabetes,
}
"""Loaders of the bundled datasets by name, as used in ``builtin:NAME``."""


def check_builtin(name: str) -> str:
    """The registry key of the bundled dataset ``name``; DataError listing the available names otherwise."""
    key = name.strip().lower().replace("-", "_")
    if key not in BUILTIN_DATASETS:
        raise DataError(
            f"unknown builtin dataset {name!r}; available: {', '.join(f'builtin:{n}' for n in BUILTIN_DATASETS)}"
        )
    return key


def load_builtin(name: str) -> Dataset:
    """The bundled dataset ``name``; raises DataError listing the available names otherwise."""
    return BUILTIN_DATASETS[check_builtin(name)]()
