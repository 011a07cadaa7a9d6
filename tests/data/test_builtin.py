"""The bundled example datasets behind ``builtin:NAME``."""

from __future__ import annotations

import numpy as np
import pytest

from modelfusion.data import BUILTIN_DATASETS, DataError, load_dataset


def test_builtin_digits_shapes_range_and_image_shape():
    ds = load_dataset("builtin:digits")
    assert ds.X.shape == (1797, 64) and ds.X.dtype == np.float32
    assert ds.X.min() == 0.0 and ds.X.max() == 1.0
    assert ds.y.dtype == np.int64 and sorted(set(ds.y.tolist())) == list(range(10))
    assert ds.meta["image_shape"] == (1, 8, 8)
    assert ds.class_names == [str(i) for i in range(10)]


def test_builtin_digits_is_deterministic():
    a, b = load_dataset("builtin:digits"), load_dataset("builtin:digits")
    assert a.fingerprint() == b.fingerprint()
    np.testing.assert_array_equal(a.X, b.X)


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASETS))
def test_every_builtin_loads_with_matching_lengths(name):
    ds = load_dataset(f"builtin:{name}")
    assert len(ds) == len(ds.y) > 100
    assert len(ds.feature_names) == ds.X.shape[1]


def test_builtin_diabetes_is_regression():
    ds = load_dataset("builtin:diabetes")
    assert ds.meta["task"] == "regression" and ds.y.dtype == np.float64 and ds.class_names is None


def test_builtin_features_selects_columns_by_name():
    ds = load_dataset("builtin:iris", features=["petal length (cm)", "sepal width (cm)"])
    assert ds.X.shape == (150, 2) and ds.feature_names == ["petal length (cm)", "sepal width (cm)"]


def test_unknown_builtin_lists_the_available_names():
    with pytest.raises(
        DataError, match=r"unknown builtin dataset 'mnist'; available: builtin:digits, builtin:iris"
    ):
        load_dataset("builtin:mnist")
