"""The batcher on its own, with a plain function as the model: what it batches, when it waits, what it
refuses, and that it drains on stop."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batcher import Batcher, Tensors, merge
from service.errors import DeadlineExceeded, InferenceFailed, NotReady, Overloaded


class Recorder:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.waits: list[float] = []

    def queued(self, depth: int) -> None:
        pass

    def waited(self, seconds: float) -> None:
        self.waits.append(seconds)

    def computed(self, batch_size: int, seconds: float) -> None:
        self.batches.append(batch_size)


def make(run_delay: float = 0.0, **kwargs: float) -> tuple[Batcher, Recorder]:
    recorder = Recorder()

    def run(feeds: Tensors) -> list[np.ndarray]:
        time.sleep(run_delay)
        x = feeds["x"]
        return [x.reshape(len(x), -1).sum(axis=1, keepdims=True)]

    options = {"max_batch_size": 8, "max_queue_delay_s": 0.0, "max_queue_size": 64, "concurrency": 1, **kwargs}
    batcher = Batcher(run, ["y"], ThreadPoolExecutor(2), recorder, **options)  # type: ignore[arg-type]
    return batcher, recorder


def item(value: float, n: int = 1) -> Tensors:
    return {"x": np.full((n, 3), value, np.float32)}


async def test_results_go_back_to_their_own_requests() -> None:
    batcher, recorder = make(run_delay=0.02)
    batcher.start()
    results = await asyncio.gather(*[batcher.submit(item(i, n=1 + i % 3), 1 + i % 3, 5) for i in range(20)])
    for i, result in enumerate(results):
        assert result["y"].shape == (1 + i % 3, 1) and np.all(result["y"] == 3 * i)
    assert max(recorder.batches) > 1 and all(b <= 8 for b in recorder.batches)
    assert sum(recorder.batches) == sum(1 + i % 3 for i in range(20))
    await batcher.stop()


async def test_a_lone_request_does_not_wait_for_company() -> None:
    batcher, recorder = make(max_queue_delay_s=0.0)
    batcher.start()
    start = time.perf_counter()
    await batcher.submit(item(1), 1, 5)
    assert time.perf_counter() - start < 0.05 and recorder.batches == [1]
    await batcher.stop()


async def test_a_queue_delay_collects_later_arrivals() -> None:
    batcher, recorder = make(max_queue_delay_s=0.2)
    batcher.start()

    async def late(delay: float) -> Tensors:
        await asyncio.sleep(delay)
        return await batcher.submit(item(1), 1, 5)

    await asyncio.gather(late(0), late(0.05), late(0.1))
    assert recorder.batches == [3]
    await batcher.stop()


async def test_a_full_queue_refuses_with_overloaded() -> None:
    batcher, _ = make(run_delay=0.2, max_queue_size=4)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(item(1), 1, 5))
    await asyncio.sleep(0.05)  # the first batch is computing; the queue is empty again
    queued = [asyncio.ensure_future(batcher.submit(item(1, n=2), 2, 5)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="queue full"):
        await batcher.submit(item(1), 1, 5)
    await asyncio.gather(first, *queued)
    await batcher.stop()


async def test_an_expired_request_is_never_computed() -> None:
    seen: list[int] = []
    gate = threading.Event()

    def run(feeds: Tensors) -> list[np.ndarray]:
        gate.wait(2)
        seen.append(int(feeds["x"][0, 0]))
        return [feeds["x"][:, :1]]

    batcher = Batcher(run, ["y"], ThreadPoolExecutor(1), Recorder(), max_batch_size=1, max_queue_delay_s=0,
                      max_queue_size=8, concurrency=1)
    batcher.start()
    blocker = asyncio.ensure_future(batcher.submit(item(1), 1, 5))
    await asyncio.sleep(0.01)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(item(2), 1, 0.05)
    gate.set()
    await blocker
    await batcher.submit(item(3), 1, 5)
    assert seen == [1, 3]
    await batcher.stop()


async def test_a_failing_batch_fails_its_requests_and_the_loop_goes_on() -> None:
    calls = {"n": 0}

    def run(feeds: Tensors) -> list[np.ndarray]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return [feeds["x"][:, :1]]

    batcher = Batcher(run, ["y"], ThreadPoolExecutor(1), Recorder(), max_batch_size=4, max_queue_delay_s=0,
                      max_queue_size=8, concurrency=1)
    batcher.start()
    with pytest.raises(InferenceFailed, match="boom"):
        await batcher.submit(item(1), 1, 5)
    assert (await batcher.submit(item(2), 1, 5))["y"][0, 0] == 2
    await batcher.stop()


async def test_stop_drains_what_is_queued_then_refuses() -> None:
    batcher, recorder = make(run_delay=0.05, max_batch_size=2)
    batcher.start()
    pending = [asyncio.ensure_future(batcher.submit(item(i), 1, 5)) for i in range(6)]
    await asyncio.sleep(0)
    await batcher.stop()
    assert all(p.done() and not p.exception() for p in pending)
    assert sum(recorder.batches) == 6
    with pytest.raises(NotReady):
        await batcher.submit(item(1), 1, 5)


def test_merge_pads_the_time_axis_to_the_longest() -> None:
    loop = asyncio.new_event_loop()
    try:
        from service.batcher import Item

        a = Item({"s": np.ones((1, 3, 2), np.float32)}, 1, loop.create_future(), 0, 1)
        b = Item({"s": np.ones((2, 5, 2), np.float32)}, 2, loop.create_future(), 0, 1)
        merged = merge([a, b])["s"]
        assert merged.shape == (3, 5, 2) and merged[0, 3:].sum() == 0 and merged[1:].sum() == 20
    finally:
        loop.close()
