"""Train / validation / test splits: stratified by class when the labels allow, deterministic per seed."""

from __future__ import annotations

import numpy as np

from modelfusion.data.dataset import Dataset
from modelfusion.errors import DataError


def split_dataset(
    ds: Dataset,
    *,
    validation: float,
    test: float,
    seed: int = 0,
    stratify: bool = True,
) -> dict[str, Dataset]:
    """Split ``ds`` into ``"train"``, ``"validation"`` and ``"test"`` subsets.

    Fusion needs held-out data twice: ``validation`` to fit weights, gates or stackers,
    and ``test`` to report the result honestly.

    Parameters
    ----------
    ds : the dataset to split
    validation, test : fractions of the samples, each > 0, summing to at most 1. When they
        sum to 1 the train split is empty (every member is already trained).
    seed : the same seed gives the same split
    stratify : keep class proportions in every split; applied when labels are classes
        (int, bool or str) and every class has at least 2 samples, otherwise the split is
        random (``meta["stratified"]`` tells which)

    Returns
    -------
    dict with keys ``"train"``, ``"validation"``, ``"test"``; each subset keeps the original
    sample order.

    Raises
    ------
    DataError
        if a fraction is <= 0, they sum to more than 1, or the dataset is too small.

    Examples
    --------
    >>> parts = split_dataset(load_dataset("builtin:digits"), validation=0.2, test=0.2, seed=0)
    >>> len(parts["train"]), len(parts["validation"]), len(parts["test"])
    (1079, 359, 359)
    """
    for key, frac in (("validation", validation), ("test", test)):
        if not 0 < frac < 1:
            raise DataError(f"{key} must be a fraction in (0, 1), got {frac!r}")
    total = validation + test
    if total > 1 + 1e-9:
        raise DataError(
            f"validation + test must be at most 1, got {validation} + {test} = {total:.6g}; lower one of them"
        )
    n = len(ds)
    n_test = max(1, int(round(n * test)))
    n_val = n - n_test if total >= 1 - 1e-9 else max(1, int(round(n * validation)))
    if n_test + n_val > n or n_val < 1:
        raise DataError(
            f"dataset {ds.name!r} has {n} samples, too few for a validation split of {validation} "
            f"and a test split of {test} (each needs at least one sample)"
        )

    rng = np.random.default_rng(seed)
    classes = _class_indices(ds.y) if stratify else None
    if classes is None:
        order = rng.permutation(n)
        test_idx, val_idx = order[:n_test], order[n_test : n_test + n_val]
    else:
        pools = [rng.permutation(members) for members in classes]
        test_idx, pools = _draw(pools, n_test)
        val_idx, pools = _draw(pools, n_val)
    taken = np.zeros(n, dtype=bool)
    taken[test_idx] = True
    taken[val_idx] = True
    parts = {"train": np.flatnonzero(~taken), "validation": np.sort(val_idx), "test": np.sort(test_idx)}
    out = {}
    for key, idx in parts.items():
        sub = ds[idx]
        sub.name = f"{ds.name}:{key}"
        sub.meta = {**ds.meta, "split": key, "split_seed": seed, "stratified": classes is not None}
        out[key] = sub
    return out


def _class_indices(y: np.ndarray | None) -> list[np.ndarray] | None:
    """Sample indices of each class, or None when the labels do not support stratification."""
    if y is None or y.ndim != 1 or y.dtype.kind not in "iubUSO":
        return None
    _, inverse, counts = np.unique(
        y.astype(str) if y.dtype.kind == "O" else y, return_inverse=True, return_counts=True
    )
    if counts.min() < 2 or len(counts) < 2:
        return None
    return [np.flatnonzero(inverse == c) for c in range(len(counts))]


def _draw(pools: list[np.ndarray], k: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Take ``k`` samples across classes in proportion to their sizes (largest remainder)."""
    sizes = np.array([len(p) for p in pools], dtype=float)
    quota = k * sizes / sizes.sum()
    take = np.minimum(np.floor(quota).astype(int), sizes.astype(int))
    short = k - int(take.sum())
    # Hand out the remaining samples to the classes with the largest fractional quota;
    # ties go to the larger class, then to the lower class index, so the split is stable.
    order = sorted(range(len(pools)), key=lambda c: (-(quota[c] - np.floor(quota[c])), -sizes[c], c))
    while short > 0:
        progressed = False
        for c in order:
            if short and take[c] < sizes[c]:
                take[c] += 1
                short -= 1
                progressed = True
        if not progressed:
            break
    chosen = (
        np.concatenate([p[:t] for p, t in zip(pools, take, strict=True)]) if pools else np.zeros(0, np.int64)
    )
    rest = [p[t:] for p, t in zip(pools, take, strict=True)]
    return chosen.astype(np.int64), rest
