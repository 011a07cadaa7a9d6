"""How many threads small numerical kernels may use.

Strategy fits and combines work on arrays of a few million values [members, samples,
classes]. Spread over OpenBLAS/OpenMP threads, they gain on a quiet machine, but when
another process is busy the threads spin waiting for cores it holds: greedy selection on
20 x 20,000 x 10 ran 5x slower beside one CPU-bound process. So small work uses only the
cores that are free at that moment (``/proc/loadavg``'s runnable count), see
``benchmarks/contention.py``; larger work keeps the libraries' own thread pools.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

#: Arrays up to this many values are computed on one thread.
SMALL_WORK = 1 << 26

_controller: Any = None


@contextlib.contextmanager
def small_work_threads(n_values: int) -> Iterator[None]:
    """Size the BLAS and OpenMP pools to the cores other processes leave free, for small work.

    On a quiet machine nothing changes (the pools keep every core); when other processes are
    runnable, work of at most :data:`SMALL_WORK` values runs on the cores left (at least one),
    so no thread spins waiting for a core another process holds. Larger work is left alone.

    Examples
    --------
    >>> with small_work_threads(preds.outputs.size):
    ...     strategy._fit(preds, y)
    """
    global _controller
    free = free_cores()
    cores = os.cpu_count() or 1
    if n_values > SMALL_WORK or free >= cores:
        yield
        return
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()  # inspecting the loaded libraries once costs a few ms
    with _controller.limit(limits=max(1, free)):
        yield


def free_cores() -> int:
    """Cores not taken by other runnable processes right now (Linux: ``/proc/loadavg``; else all)."""
    cores = os.cpu_count() or 1
    try:
        with open("/proc/loadavg") as fh:
            running = int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return cores
    return max(0, cores - max(0, running - 1))  # the reader itself is one of the running tasks
