"""The inputs a fused model was fitted on, and checking new data against them.

A run records the validation data's feature names and sample shape in the bundle
(``metadata["inputs"]``). Data given later is checked against that record before any member
runs: a table with the same columns in another order is reordered by name, a missing column
or another width is an error that names what was expected and what arrived, and empty or
wrongly-shaped arrays are refused with the same clarity instead of a runtime's traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelfusion.data.datasets import DataError


def input_record(X: Any, feature_names: Sequence[str] | None) -> dict[str, Any] | None:
    """What to record about the inputs ``X`` [samples, ...]: ``{"feature_names", "shape"}``; None for non-arrays."""
    if not isinstance(X, np.ndarray) or X.ndim < 2:
        return None
    names = None if feature_names is None else [str(n) for n in feature_names]
    return {"feature_names": names, "shape": [int(d) for d in X.shape[1:]]}


def align_inputs(
    X: Any,
    record: dict[str, Any] | None,
    *,
    feature_names: Sequence[str] | None = None,
    source: str = "the data",
) -> Any:
    """``X`` checked against ``record`` (see :func:`input_record`): columns reordered by name, or DataError.

    ``feature_names``: the columns of ``X`` when it came from a table. Inputs that are not
    numeric arrays (text, dicts of modalities) are returned unchanged.

    Examples
    --------
    >>> record = {"feature_names": ["a", "b"], "shape": [2]}
    >>> align_inputs(np.array([[2.0, 1.0]]), record, feature_names=["b", "a"])
    array([[1., 2.]])
    """
    if hasattr(X, "detach") and hasattr(X, "numpy"):
        X = X.detach().cpu().numpy()
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # a pandas DataFrame: its columns are the names
        feature_names, X = [str(c) for c in X.columns], X.to_numpy()
    if not isinstance(X, np.ndarray) or X.dtype.kind not in "biuf":
        return X
    if len(X) == 0:
        raise DataError(f"{source} has no rows; give at least one sample")
    if not record:
        return X
    expected_names = record.get("feature_names")
    if expected_names and feature_names is not None and list(feature_names) != list(expected_names):
        given = [str(n) for n in feature_names]
        missing = [n for n in expected_names if n not in given]
        if missing:
            raise DataError(
                f"{source} lacks the column(s) {_some(missing)} the model was fitted on; it has {_some(given)}"
            )
        X = X[:, [given.index(n) for n in expected_names]]
    expected = tuple(record.get("shape") or ())
    if expected and tuple(X.shape[1:]) != expected:
        shown = "[n, " + ", ".join(map(str, expected)) + "]"
        raise DataError(
            f"{source} has samples of shape {list(X.shape[1:])} ({X.ndim}-D input), but the model was fitted on "
            f"inputs of shape {shown}" + (f" (columns {_some(expected_names)})" if expected_names else "")
        )
    return X


def _some(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
