"""split_dataset: fractions, stratification, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from modelfusion.data import DataError, Dataset, load_dataset, split_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("builtin:digits")


def test_split_sizes_cover_every_sample_once(digits):
    parts = split_dataset(digits, validation=0.2, test=0.25, seed=0)
    assert {k: len(v) for k, v in parts.items()} == {"train": 989, "validation": 359, "test": 449}
    ids = Dataset(np.arange(len(digits)), digits.y)
    taken = np.concatenate([p.X for p in split_dataset(ids, validation=0.2, test=0.25, seed=0).values()])
    assert sorted(taken.tolist()) == list(range(len(digits)))


def test_split_is_stratified_by_class(digits):
    parts = split_dataset(digits, validation=0.3, test=0.3, seed=1)
    overall = np.bincount(digits.y) / len(digits)
    for part in parts.values():
        assert part.meta["stratified"]
        np.testing.assert_allclose(np.bincount(part.y, minlength=10) / len(part), overall, atol=0.01)


def test_split_is_deterministic_for_a_seed_and_changes_with_it(digits):
    a = split_dataset(digits, validation=0.2, test=0.2, seed=3)
    b = split_dataset(digits, validation=0.2, test=0.2, seed=3)
    c = split_dataset(digits, validation=0.2, test=0.2, seed=4)
    assert all(a[k].fingerprint() == b[k].fingerprint() for k in a)
    assert a["test"].fingerprint() != c["test"].fingerprint()


def test_fractions_summing_to_one_leave_train_empty(digits):
    parts = split_dataset(digits, validation=0.5, test=0.5)
    assert len(parts["train"]) == 0 and len(parts["validation"]) + len(parts["test"]) == len(digits)


def test_split_falls_back_to_random_when_a_class_has_one_sample():
    ds = Dataset(np.arange(20.0)[:, None], np.array([0] * 10 + [1] * 9 + [2]))
    parts = split_dataset(ds, validation=0.25, test=0.25)
    assert not parts["test"].meta["stratified"]
    assert sum(len(p) for p in parts.values()) == 20


def test_split_stratifies_string_labels():
    ds = Dataset(["t"] * 12, np.array(["a", "b", "c"] * 4))
    parts = split_dataset(ds, validation=0.25, test=0.25)
    assert sorted(parts["test"].y.tolist()) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("validation", "test", "message"),
    [
        (0.0, 0.2, r"validation must be a fraction in \(0, 1\), got 0.0"),
        (0.2, -0.1, r"test must be a fraction in \(0, 1\)"),
        (0.6, 0.5, r"validation \+ test must be at most 1, got 0.6 \+ 0.5"),
    ],
)
def test_bad_split_fractions_are_rejected(digits, validation, test, message):
    with pytest.raises(DataError, match=message):
        split_dataset(digits, validation=validation, test=test)


def test_split_of_a_tiny_dataset_is_rejected():
    with pytest.raises(DataError, match="too few"):
        split_dataset(Dataset(np.zeros((1, 1))), validation=0.3, test=0.3)
