"""The file format of a fitted :class:`~modelfusion.multimodal.matching.CCAMatcher`: one
safetensors file holding its arrays, with its parameters, fitted scalars and CV scores as JSON
metadata. No pickle; reading checks every array and value against what ``fit`` gives, so a
damaged or foreign file fails here, naming itself, never later at predict time.

Examples
--------
>>> write_matcher_file("matcher.safetensors", arrays, params=..., state=..., cv_scores=...)
>>> arrays, params, state, cv_scores = read_matcher_file("matcher.safetensors")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.errors import BundleError, ParameterError

#: The format tag of a saved matcher.
FORMAT = "modelfusion.CCAMatcher/1"
#: The arrays of a saved matcher: its fitted arrays, then each side's standardisation.
ARRAYS = (
    "x_weights_",
    "y_weights_",
    "correlations_",
    "x_reference_",
    "y_reference_",
    "x_mean",
    "x_scale",
    "y_mean",
    "y_scale",
)
#: Its fitted scalars (``threshold_`` is derived from the calibration, not stored).
SCALARS = ("n_components_", "alpha_", "csls_k_", "coef_", "intercept_")


def write_matcher_file(
    path: str | Path,
    arrays: dict[str, np.ndarray],
    *,
    params: dict[str, Any],
    state: dict[str, Any],
    cv_scores: dict[tuple[int, float, int], float],
) -> Path:
    """Write one safetensors file atomically; returns ``path``."""
    from safetensors.numpy import save

    from modelfusion.files import write_bytes_atomic

    metadata = {
        "format": FORMAT,
        "params": json.dumps(params, default=_plain),
        "state": json.dumps({name: state[name] for name in SCALARS}, default=_plain),
        "cv_scores": json.dumps([[*c, auc] for c, auc in cv_scores.items()], default=_plain),
    }
    tensors = {name: np.ascontiguousarray(arrays[name]) for name in ARRAYS}
    return write_bytes_atomic(path, save(tensors, metadata=metadata))


def read_matcher_file(
    path: str | Path,
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any], dict[tuple[int, float, int], float]]:
    """``(arrays, params, state, cv_scores)`` of a file :func:`write_matcher_file` wrote, checked;
    BundleError naming the file for anything else."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: not a file (a CCAMatcher saved with CCAMatcher.save)")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise BundleError(f"{path} is not a saved CCAMatcher (format {metadata.get('format')!r})")
            arrays = {name: handle.get_tensor(name) for name in ARRAYS}
        missing = sorted({"params", "state", "cv_scores"} - set(metadata))
        if missing:
            raise BundleError(f"{path}: the metadata lacks {missing}")
        params, state = _json(metadata["params"], dict, path), _json(metadata["state"], dict, path)
        state = {name: state[name] for name in SCALARS}  # only the known values, whatever the file holds
        cv_scores = {
            (int(k), float(a), int(c)): float(auc)
            for k, a, c, auc in _json(metadata["cv_scores"], list, path)
        }
    except BundleError:
        raise
    except Exception as error:  # a truncated file, a missing array or key, a wrong type
        raise BundleError(f"{path} is not a readable CCAMatcher: {error}") from error
    _check(arrays, state, path)
    return arrays, params, state, cv_scores


def _json(text: str, kind: type, path: Path) -> Any:
    """A JSON value of ``kind`` from the metadata; NaN and infinities refused."""

    def refuse(constant: str) -> Any:
        raise BundleError(f"{path}: the metadata holds {constant}")

    value = json.loads(text, parse_constant=refuse)
    if not isinstance(value, kind):
        raise BundleError(f"{path}: a metadata entry is a {type(value).__name__}, expected a {kind.__name__}")
    return value


def _check(arrays: dict[str, np.ndarray], state: dict[str, Any], path: Path) -> None:
    """Every array float64, finite and of the shapes ``fit`` gives; every scalar in range."""
    bad = [name for name, a in arrays.items() if a.dtype != np.float64 or not np.isfinite(a).all()]
    if bad:
        raise BundleError(f"{path}: {bad} must be finite float64 arrays")
    dx, dy, k = len(arrays["x_mean"]), len(arrays["y_mean"]), arrays["x_weights_"].shape[-1]
    n = len(arrays["x_reference_"])
    expected = {
        "x_mean": (dx,),
        "x_scale": (dx,),
        "y_mean": (dy,),
        "y_scale": (dy,),
        "x_weights_": (dx, k),
        "y_weights_": (dy, k),
        "correlations_": (k,),
        "x_reference_": (n, k),
        "y_reference_": (n, k),
    }
    shapes = {name: tuple(arrays[name].shape) for name in expected}
    positive = (arrays["x_scale"] > 0).all() and (arrays["y_scale"] > 0).all()
    if shapes != expected or not k or not n or not positive:
        raise BundleError(f"{path}: the arrays do not fit together (shapes {shapes})")
    integers = all(type(state[name]) is int for name in ("n_components_", "csls_k_"))
    numbers = all(type(state[name]) in (int, float) for name in ("alpha_", "coef_", "intercept_"))
    if not (integers and numbers) or state["n_components_"] < k or state["csls_k_"] < 0:
        raise BundleError(f"{path}: the fitted values are out of range ({state})")
    if state["alpha_"] <= 0 or state["coef_"] < 0:
        raise BundleError(f"{path}: alpha_ must be > 0 and coef_ >= 0")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON values (``json.dumps(default=...)``)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise ParameterError(
        f"cannot save a CCAMatcher holding a {type(value).__name__}: parameters must be numbers"
    )


__all__ = ["ARRAYS", "FORMAT", "SCALARS", "read_matcher_file", "write_matcher_file"]
