"""The asyncio micro-batcher: concurrent requests gathered into one model call.

Requests wait at most ``max_wait_ms`` (from the first one of a batch) or until ``max_batch``
rows are queued, then run together in one call on a single worker thread, so the event loop
keeps accepting requests while the model computes. Requests are grouped by their sample
shape and dtype: rows of different widths never share a batch. The queue is bounded in rows
(:class:`QueueFullError` beyond ``max_queue``), and :meth:`MicroBatcher.close` stops taking
requests and drains what is queued before it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelfusion.errors import ModelFusionError, ParameterError, PredictionError


class QueueFullError(ModelFusionError, RuntimeError):
    """More rows are queued than ``max_queue``: the caller should retry later (HTTP 503)."""


class ShuttingDownError(ModelFusionError, RuntimeError):
    """The batcher is draining for shutdown and takes no new requests (HTTP 503)."""


@dataclass
class _Request:
    rows: np.ndarray
    future: asyncio.Future[np.ndarray]
    nbytes: int
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Gathers concurrent :meth:`submit` calls into batches for ``run(rows) -> outputs``.

    Parameters
    ----------
    run : the model call, ``rows [n, ...] -> outputs [n, ...]``; runs on one worker thread
    max_batch : most rows in one call (a single request with more rows runs alone)
    max_wait_ms : longest a request waits for others to join its batch
    max_queue : most rows waiting at once; beyond it :meth:`submit` raises QueueFullError
    max_queue_bytes : most bytes waiting at once (rows of text or of unrecorded shape can be large)
    on_batch : called with ``(rows, seconds)`` after every model call (metrics)

    Examples
    --------
    >>> batcher = MicroBatcher(model.predict_proba, max_batch=64, max_wait_ms=5)
    >>> await batcher.start()
    >>> probabilities = await batcher.submit(np.zeros((1, 64), np.float32))
    >>> await batcher.close()  # drains the queue
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch: int = 64,
        max_wait_ms: float = 5.0,
        max_queue: int = 4096,
        max_queue_bytes: int = 256 * 1024 * 1024,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        if max_batch < 1:
            raise ParameterError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ParameterError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_queue < max_batch:
            raise ParameterError(f"max_queue ({max_queue}) must be at least max_batch ({max_batch})")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000.0
        self.max_queue, self.max_queue_bytes, self.on_batch = max_queue, max_queue_bytes, on_batch
        self._groups: dict[tuple[Any, ...], deque[_Request]] = {}
        self._queued_rows = self._queued_bytes = 0
        self._closing = False
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a model call (not counting the batch being computed)."""
        return self._queued_rows

    async def start(self) -> MicroBatcher:
        """Start the batching loop on the running event loop; returns self."""
        if self._worker is None:
            self._closing = False  # a closed batcher may be started again
            self._wakeup = asyncio.Event()
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelfusion-batch")
            self._worker = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def submit(self, rows: np.ndarray, *, nbytes: int | None = None) -> np.ndarray:
        """The model's outputs for ``rows`` [n, ...], computed in a batch with other requests.

        ``nbytes``: what the request weighs against ``max_queue_bytes`` (default ``rows.nbytes``;
        give the body's size for rows of strings, whose ``nbytes`` counts only pointers).
        """
        if self._closing:
            raise ShuttingDownError("the server is shutting down and takes no new requests")
        if self._worker is None or self._wakeup is None or self._worker.done():
            raise ShuttingDownError(
                "the batcher is not running (start() it, or see the log for why it stopped)"
            )
        size = rows.nbytes if nbytes is None else nbytes
        if self._queued_rows + len(rows) > self.max_queue or self._queued_bytes + size > self.max_queue_bytes:
            raise QueueFullError(
                f"{self._queued_rows} rows ({self._queued_bytes} bytes) are already queued (the limit is "
                f"{self.max_queue} rows, {self.max_queue_bytes} bytes); retry shortly"
            )
        request = _Request(rows, asyncio.get_running_loop().create_future(), size)
        self._groups.setdefault((rows.shape[1:], rows.dtype.str), deque()).append(request)
        self._queued_rows += len(rows)
        self._queued_bytes += size
        self._wakeup.set()
        return await request.future

    async def close(self) -> None:
        """Take no new requests, finish every queued one, then stop the worker thread."""
        self._closing = True
        if self._worker is not None and self._wakeup is not None:
            self._wakeup.set()
            await self._worker
            self._worker = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def _loop(self) -> None:
        assert self._wakeup is not None
        while True:
            group = self._oldest_group()
            if group is None:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._fill(group)
            await self._run(self._take(group))

    def _oldest_group(self) -> deque[_Request] | None:
        for key in [k for k, g in self._groups.items() if not g]:
            del self._groups[key]
        if not self._groups:
            return None
        return min(self._groups.values(), key=lambda g: g[0].queued_at)

    async def _fill(self, group: deque[_Request]) -> None:
        """Wait until the group holds ``max_batch`` rows or its first request has waited long enough."""
        assert self._wakeup is not None
        deadline = group[0].queued_at + self.max_wait
        while not self._closing and sum(len(r.rows) for r in group) < self.max_batch:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                return

    def _take(self, group: deque[_Request]) -> list[_Request]:
        batch = [group.popleft()]
        rows = len(batch[0].rows)
        while group and rows + len(group[0].rows) <= self.max_batch:
            rows += len(group[0].rows)
            batch.append(group.popleft())
        self._queued_rows -= rows
        self._queued_bytes -= sum(r.nbytes for r in batch)
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.future.done()]  # a cancelled request is not computed
        if not live:
            return
        try:
            rows = live[0].rows if len(live) == 1 else np.concatenate([r.rows for r in live])
            start = time.perf_counter()
            outputs = await asyncio.get_running_loop().run_in_executor(self._pool, self.run, rows)
            if not hasattr(outputs, "shape") or len(outputs) != len(rows):
                raise PredictionError(
                    f"the model returned {len(outputs) if hasattr(outputs, '__len__') else 'no'} rows for a "
                    f"batch of {len(rows)}"
                )
            if self.on_batch is not None:
                self.on_batch(len(rows), time.perf_counter() - start)
        except Exception as exc:  # every request of this batch gets the error; the loop goes on
            for request in live:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        offset = 0
        for request in live:
            n = len(request.rows)
            if not request.future.done():
                request.future.set_result(outputs[offset : offset + n])
            offset += n


__all__ = ["MicroBatcher", "QueueFullError", "ShuttingDownError"]
