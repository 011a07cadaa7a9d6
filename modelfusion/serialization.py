"""Save fitted strategies without pickle: JSON for parameters, safetensors for arrays.

A strategy is written as ``{"class": name, "params": ..., "state": ...}``. Arrays go to one
safetensors file, nested strategies recurse, and a non-linear scikit-learn estimator (a
stacking meta-learner) goes to a ``.skops`` file. Loading only instantiates classes from
the strategy registry, so a manifest cannot name arbitrary code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.base import BaseEstimator

from modelfusion.errors import BundleError
from modelfusion.manifest import inside
from modelfusion.safe_skops import load_skops
from modelfusion.strategies.base import STRATEGY_REGISTRY, Strategy


class _Writer:
    def __init__(self, directory: Path):
        self.directory = directory
        self.tensors: dict[str, np.ndarray] = {}
        self.files: list[str] = []

    def encode(self, value: Any, key: str) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "biuf":
                self.tensors[key] = np.ascontiguousarray(value)
                return {"__array__": key}
            return {"__list__": value.tolist(), "dtype": value.dtype.str if value.dtype.kind != "O" else None}
        if isinstance(value, (list, tuple)):
            return [self.encode(v, f"{key}.{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {"__dict__": {str(k): self.encode(v, f"{key}.{k}") for k, v in value.items()}}
        if isinstance(value, Strategy):
            return {"__strategy__": self.strategy(value, key)}
        if isinstance(value, BaseEstimator):
            import skops.io

            name = f"{key}.skops"
            skops.io.dump(value, self.directory / name)
            self.files.append(name)
            return {"__skops__": name}
        raise BundleError(f"cannot save {key} of type {type(value).__name__} (no safe file format for it)")

    def strategy(self, strategy: Any, key: str) -> dict[str, Any]:
        params = strategy.get_params(deep=False)
        return {
            "class": type(strategy).__name__,
            "params": {k: self.encode(v, f"{key}.params.{k}") for k, v in params.items()},
            "state": {k: self.encode(v, f"{key}.{k}") for k, v in strategy.fitted_state().items()},
        }


def save_strategy(strategy: Any, directory: Path) -> dict[str, Any]:
    """Write a fitted strategy into ``directory``; return its JSON spec (files listed in it)."""
    directory.mkdir(parents=True, exist_ok=True)
    writer = _Writer(directory)
    spec = writer.strategy(strategy, "strategy")
    if writer.tensors:
        save_file(writer.tensors, str(directory / "state.safetensors"))
        writer.files.append("state.safetensors")
    spec["files"] = writer.files
    return spec


def load_strategy(spec: dict[str, Any], directory: Path, trust: bool = False) -> Any:
    """Rebuild a strategy written by :func:`save_strategy`."""
    try:
        tensors = (
            load_file(str(directory / "state.safetensors"))
            if "state.safetensors" in spec.get("files", [])
            else {}
        )
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise BundleError(
            f"{directory / 'state.safetensors'} is not a valid safetensors file: {exc}"
        ) from exc
    return _Reader(directory, tensors, trust).strategy(spec)


class _Reader:
    def __init__(self, directory: Path, tensors: dict[str, np.ndarray], trust: bool):
        self.directory, self.tensors, self.trust = directory, tensors, trust

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "__array__" in value:
            key = value["__array__"]
            if not isinstance(key, str) or key not in self.tensors:
                raise BundleError(
                    f"the strategy spec names array {key!r}, which state.safetensors does not hold"
                )
            return self.tensors[key]
        if "__list__" in value:
            return _list_array(value["__list__"], value.get("dtype"))
        if "__dict__" in value:
            return {k: self.decode(v) for k, v in value["__dict__"].items()}
        if "__strategy__" in value:
            return self.strategy(value["__strategy__"])
        if "__skops__" in value:
            return self.skops(value["__skops__"])
        raise BundleError(f"unrecognised entry in the strategy spec: {sorted(value)}")

    def strategy(self, spec: dict[str, Any]) -> Any:
        cls = STRATEGY_REGISTRY.get(str(spec.get("class", "")).lower())
        if cls is None:
            raise BundleError(f"the bundle names an unknown strategy class {spec.get('class')!r}")
        params = {k: self.decode(v) for k, v in spec.get("params", {}).items()}
        strategy = cls(**params)
        state = {k: self.decode(v) for k, v in spec.get("state", {}).items()}
        return strategy.set_fitted_state(state)

    def skops(self, name: str) -> Any:
        return load_skops(inside(self.directory, name, "strategy file"), trust=self.trust, owner="strategy")


#: Kinds a saved list may declare: booleans, integers, floats, complex, text; never objects.
_LIST_KINDS = "biufcUS"
#: A saved list's elements are at most this large (a declared ``(10000, 20000)f8`` is not).
_MAX_ITEM_BYTES = 4096
#: ... and at most this large in all (bigger arrays go to state.safetensors).
_MAX_LIST_BYTES = 16 * 1024 * 1024


def _list_array(values: Any, dtype: Any) -> np.ndarray:
    """``np.asarray(values, dtype)`` for a ``__list__`` entry, refusing dtypes that are not plain scalars.

    The dtype string comes from the manifest: a sub-array dtype such as ``"(10000,20000)f8"``
    would turn every element into 1.6 GB.
    """
    if not isinstance(values, list):
        raise BundleError(f"a saved list must be a JSON list, got {type(values).__name__}")
    if dtype is not None:
        try:
            dt = np.dtype(dtype) if isinstance(dtype, str) else None
        except TypeError:
            dt = None
        if (
            dt is None
            or dt.shape != ()
            or dt.fields is not None
            or dt.kind not in _LIST_KINDS
            or dt.itemsize > _MAX_ITEM_BYTES
        ):
            raise BundleError(
                f"the strategy spec declares dtype {dtype!r} for a saved list; expected a plain numeric or "
                "text dtype such as '<f8' or '<U5'"
            )
        dtype = dt
    itemsize = dtype.itemsize if isinstance(dtype, np.dtype) else 8
    if len(values) * max(itemsize, 1) > _MAX_LIST_BYTES:
        raise BundleError(
            f"a saved list of {len(values):,} items of {dtype} would take over {_MAX_LIST_BYTES:,} bytes; "
            "modelfusion stores large arrays in state.safetensors, so this spec was not written by it"
        )
    try:
        return np.asarray(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BundleError(f"a saved list does not fit its dtype {dtype!r}: {exc}") from None
