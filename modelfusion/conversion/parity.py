"""Parity: the converted model's outputs against the source model's own, on the same rows.

Examples
--------
>>> diff = max_abs_diff(member.predict(rows), onnx_outputs(proto, rows))
>>> check_parity(diff, tolerance=1e-4, what="logreg.onnx")
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from modelfusion.errors import ExportError
from modelfusion.runtime.member_onnx import first_line


def max_abs_diff(reference: np.ndarray, converted: np.ndarray, *, what: str = "the converted model") -> float:
    """The largest absolute difference between two output arrays [samples, outputs].

    A 1-D array counts as one column. Raises ExportError when the shapes differ (naming both)
    and returns ``inf`` when either holds NaN where the other does not.

    Examples
    --------
    >>> max_abs_diff(np.array([[0.1, 0.9]]), np.array([[0.1, 0.90001]]))
    1.0000000000065512e-05
    """
    a, b = _as_rows(reference), _as_rows(converted)
    if a.shape != b.shape:
        raise ExportError(
            f"{what} returns outputs shaped {list(b.shape)}, the source model {list(a.shape)}; the conversion "
            "does not keep the model's outputs"
        )
    if a.size == 0:
        return 0.0
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        return math.inf
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.nan_to_num(diff, nan=0.0).max())


def batched_diff(
    reference: np.ndarray, run: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, *, what: str
) -> float:
    """:func:`max_abs_diff` of ``run(rows)`` and of ``run(rows[:1])`` (a batch of one) against ``reference``.

    Running one row alone catches a graph that baked in the batch size of its example.

    Examples
    --------
    >>> batched_diff(member.predict(rows), lambda x: onnx_outputs(proto, x), rows, what="model.onnx")
    """
    whole = max_abs_diff(reference, run(rows), what=what)
    single = max_abs_diff(_as_rows(reference)[:1], run(rows[:1]), what=what)
    return max(whole, single)


def check_parity(diff: float, *, tolerance: float, what: str, samples: int) -> None:
    """Raise ExportError, with the number, unless ``diff <= tolerance``.

    Examples
    --------
    >>> check_parity(3e-8, tolerance=1e-4, what="cnn.onnx", samples=16)   # passes silently
    """
    if not diff <= tolerance:
        raise ExportError(
            f"{what}: the converted model's outputs differ from the source model's by up to {diff:.3g} "
            f"(max absolute difference over {samples} samples), above the tolerance {tolerance:g}; nothing "
            "was written. Raise --tolerance (tolerance=) if that is acceptable"
        )


def onnx_outputs(model: Any, rows: np.ndarray) -> np.ndarray:
    """Run an ``onnx.ModelProto`` with one input in a real ONNX Runtime session (CPU) on ``rows``.

    The rows are cast to the graph's input type (scikit-learn graphs take float64); the
    first output is returned. ExportError when the session cannot be built or run.

    Examples
    --------
    >>> onnx_outputs(onnx.load("logreg.onnx"), X[:4]).shape
    (4, 10)
    """
    return run_onnx(model, rows)[0]


def run_onnx(model: Any, rows: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
    """The ``outputs`` (default: the first) of a one-input ``onnx.ModelProto`` run on ``rows`` in a
    real ONNX Runtime session (CPU), rows cast to the graph's input type; ExportError naming the shape.

    Examples
    --------
    >>> [scores] = run_onnx(onnx.load("logreg.onnx"), X[:4])
    """
    from modelfusion.runtime.session import open_session

    try:
        session = open_session(model, ["CPUExecutionProvider"])
        first = session.get_inputs()[0]
        feed = np.asarray(rows, dtype=ORT_DTYPES.get(first.type, np.float32))
        names = outputs or [session.get_outputs()[0].name]
        return [np.asarray(v) for v in session.run(names, {first.name: feed})]
    except Exception as exc:
        raise ExportError(
            f"ONNX Runtime cannot run the ONNX graph on rows shaped {list(np.shape(rows))} "
            f"({type(exc).__name__}: {first_line(exc)}); check the input shape"
        ) from exc


#: onnxruntime input type -> the numpy dtype rows are cast to.
ORT_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
}


def _as_rows(x: Any) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape(len(x), -1) if x.ndim != 2 and x.ndim > 0 else x
