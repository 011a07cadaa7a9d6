"""Wall-clock latency of a prediction function, for reports and benchmarks (never for tests)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from modelfusion.errors import ArgumentTypeError, ParameterError
from modelfusion.predictions import data_length

__all__ = ["measure_latency"]


def _cuda_synchronizer() -> Callable[[], None] | None:
    # Only when torch is already in use: GPU work is asynchronous, so a call "returns"
    # before it is done unless we wait for the device.
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.synchronize
    except (AttributeError, RuntimeError):
        return None
    return None


def measure_latency(
    fn: Callable[[Any], Any],
    batch: Any,
    *,
    repeats: int = 20,
    warmup: int = 3,
    n_samples: int | None = None,
) -> dict[str, float | int]:
    """Time ``fn(batch)`` with :func:`time.perf_counter`.

    Parameters
    ----------
    fn : the prediction function, called as ``fn(batch)``
    batch : its input; its length (or the length of a dict's arrays) is the batch size
    repeats : timed calls; warmup : untimed calls first (lazy init, caches, JIT)
    n_samples : batch size, when ``len(batch)`` does not tell it

    Returns
    -------
    dict with ``p50_ms``, ``p99_ms``, ``mean_ms`` (per call), ``p50_ms_per_sample``,
    ``p99_ms_per_sample``, ``throughput`` (samples per second at the median),
    ``batch_size`` and ``repeats``. If CUDA is in use the device is synchronised after each
    call, so GPU time is counted.

    Examples
    --------
    >>> measure_latency(fused.predict_proba, X_test[:256])["p50_ms_per_sample"]
    0.012
    """
    if repeats < 1:
        raise ParameterError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ParameterError(f"warmup must be >= 0, got {warmup}")
    if n_samples is None:
        try:
            n_samples = data_length(batch)
        except TypeError:
            raise ArgumentTypeError(
                f"cannot tell the batch size of a {type(batch).__name__}; pass n_samples="
            ) from None
    n_samples = max(int(n_samples), 1)
    sync = _cuda_synchronizer()
    for _ in range(warmup):
        fn(batch)
    if sync is not None:
        sync()
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn(batch)
        if sync is not None:
            sync()
        times[i] = time.perf_counter() - start
    # A call faster than the clock's resolution would read 0 s; keep every figure finite.
    times = np.maximum(times, 1e-9) * 1000.0
    p50, p99 = np.percentile(times, [50, 99])
    return {
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "mean_ms": float(times.mean()),
        "p50_ms_per_sample": float(p50 / n_samples),
        "p99_ms_per_sample": float(p99 / n_samples),
        "throughput": float(n_samples / (p50 / 1000.0)),
        "batch_size": n_samples,
        "repeats": repeats,
    }
