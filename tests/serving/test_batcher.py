"""The micro-batcher: concurrent requests share model calls, widths never mix, the queue is
bounded, shutdown drains, and a failing call fails only its own batch."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from modelfusion.errors import ParameterError
from modelfusion.serving.batcher import MicroBatcher, QueueFullError, ShuttingDownError


class Recorder:
    """A model call that doubles its rows and remembers every batch it got."""

    def __init__(self, gate: threading.Event | None = None):
        self.batches: list[np.ndarray] = []
        self.gate = gate

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(rows)
        return rows * 2


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_rows():
    async def main():
        model = Recorder()
        batcher = await MicroBatcher(model, max_batch=64, max_wait_ms=50).start()
        requests = [np.full((1, 3), i, dtype=np.float32) for i in range(20)]
        outputs = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.close()
        return model, requests, outputs

    model, requests, outputs = asyncio.run(main())
    for request, output in zip(requests, outputs):
        np.testing.assert_array_equal(output, request * 2)
    assert len(model.batches) < 5 and sum(len(b) for b in model.batches) == 20


def test_max_batch_caps_rows_per_call():
    async def main():
        model = Recorder()
        batcher = await MicroBatcher(model, max_batch=4, max_wait_ms=20).start()
        await asyncio.gather(*(batcher.submit(np.zeros((1, 2), np.float32)) for _ in range(10)))
        await batcher.close()
        return model

    assert max(len(b) for b in asyncio.run(main()).batches) <= 4


def test_rows_of_different_widths_never_share_a_batch():
    async def main():
        model = Recorder()
        batcher = await MicroBatcher(model, max_batch=64, max_wait_ms=30).start()
        narrow = [batcher.submit(np.zeros((1, 2), np.float32)) for _ in range(5)]
        wide = [batcher.submit(np.zeros((1, 5), np.float32)) for _ in range(5)]
        outputs = await asyncio.gather(*narrow, *wide)
        await batcher.close()
        return model, outputs

    model, outputs = asyncio.run(main())
    assert sorted((b.shape[1], len(b)) for b in model.batches) == [(2, 5), (5, 5)]  # one width per call
    assert [o.shape for o in outputs] == [(1, 2)] * 5 + [(1, 5)] * 5


def test_a_full_queue_refuses_instead_of_growing():
    async def main():
        gate = threading.Event()
        batcher = await MicroBatcher(Recorder(gate), max_batch=2, max_wait_ms=0, max_queue=4).start()
        running = [asyncio.ensure_future(batcher.submit(np.zeros((2, 1), np.float32)))]
        await asyncio.sleep(0.05)  # the first batch is in the model, held by the gate
        queued = [asyncio.ensure_future(batcher.submit(np.zeros((2, 1), np.float32))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError, match="limit is 4"):
            await batcher.submit(np.zeros((1, 1), np.float32))
        gate.set()
        done = await asyncio.gather(*running, *queued)
        await batcher.close()
        return done

    assert len(asyncio.run(main())) == 3


def test_close_drains_the_queue_then_refuses_new_requests():
    async def main():
        model = Recorder()
        batcher = await MicroBatcher(model, max_batch=2, max_wait_ms=1000).start()
        pending = [asyncio.ensure_future(batcher.submit(np.ones((1, 1), np.float32))) for _ in range(5)]
        await asyncio.sleep(0)
        await batcher.close()  # does not wait the full second per batch
        assert all(p.done() for p in pending)
        with pytest.raises(ShuttingDownError):
            await batcher.submit(np.ones((1, 1), np.float32))
        return [p.result() for p in pending]

    assert all(float(o[0, 0]) == 2.0 for o in asyncio.run(main()))


def test_a_failing_call_fails_its_batch_only():
    calls = []

    def model(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return rows

    async def main():
        batcher = await MicroBatcher(model, max_batch=8, max_wait_ms=0).start()
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(np.ones((1, 1), np.float32))
        out = await batcher.submit(np.ones((1, 1), np.float32))
        await batcher.close()
        return out

    assert asyncio.run(main()).shape == (1, 1)


def test_a_model_returning_the_wrong_number_of_rows_fails_its_batch_and_the_loop_goes_on():
    calls = []

    def model(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return rows[:1] if len(calls) == 1 else rows

    async def main():
        batcher = await MicroBatcher(model, max_batch=8, max_wait_ms=20).start()
        first = await asyncio.gather(
            *(batcher.submit(np.ones((1, 1), np.float32)) for _ in range(3)), return_exceptions=True
        )
        second = await batcher.submit(np.ones((2, 1), np.float32))
        await batcher.close()
        return first, second

    first, second = asyncio.run(main())
    assert all("returned 1 rows for a batch of 3" in str(e) for e in first) and second.shape == (2, 1)


def test_a_failing_metrics_callback_fails_its_batch_not_the_batcher():
    def on_batch(rows: int, seconds: float) -> None:
        raise RuntimeError("metrics down")

    async def main():
        batcher = await MicroBatcher(lambda x: x, max_wait_ms=0, on_batch=on_batch).start()
        with pytest.raises(RuntimeError, match="metrics down"):
            await batcher.submit(np.ones((1, 1), np.float32))
        assert not batcher._worker.done()  # still batching
        await batcher.close()

    asyncio.run(main())


def test_the_queue_is_bounded_in_bytes_too():
    async def main():
        gate = threading.Event()
        batcher = await MicroBatcher(Recorder(gate), max_batch=1, max_wait_ms=0, max_queue_bytes=1000).start()
        running = asyncio.ensure_future(batcher.submit(np.zeros((1, 1), np.float32)))
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFullError, match="1000 bytes"):
            await batcher.submit(np.zeros((1, 1), np.float32), nbytes=5000)  # e.g. a long text
        gate.set()
        await running
        await batcher.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"max_wait_ms": -1}, "max_wait_ms"),
        ({"max_queue": 2, "max_batch": 8}, "max_queue"),
    ],
)
def test_bad_settings_are_named(options, message):
    with pytest.raises(ParameterError, match=message):
        MicroBatcher(lambda x: x, **options)
