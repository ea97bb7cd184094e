"""The batcher on its own, with a plain function as the model: what it batches (and what it never puts in one
batch), when it waits, what it refuses, deadlines, and that it drains on stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from service import traffic as traffic_module
from service.activity import CROWDED_HOLD_S, ActivityBoard
from service.backends import Tensors
from service.batcher import INLINE_MAX_S, Batcher, Item, merge
from service.errors import DeadlineExceeded, InferenceFailed, NotReady, Overloaded
from service.traffic import ModelTraffic


class Recorder:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.waits: list[float] = []
        self.alone: list[bool] = []

    def queued(self, depth: int) -> None:
        pass

    def waited(self, seconds: float) -> None:
        self.waits.append(seconds)

    def computed(self, batch_size: int, seconds: float, alone: bool = False, padding: int = 0) -> None:
        self.batches.append(batch_size)
        self.alone.append(alone)


def make(run_delay: float = 0.0, **kwargs: float) -> tuple[Batcher, Recorder]:
    recorder = Recorder()

    def run(feeds: Tensors) -> Tensors:
        time.sleep(run_delay)
        x = feeds["x"]
        return {"y": x.reshape(len(x), -1).sum(axis=1, keepdims=True)}

    options = {"max_batch_size": 8, "max_queue_delay_s": 0.0, "max_queue_size": 64, "concurrency": 1, **kwargs}
    batcher = Batcher(run, ThreadPoolExecutor(2), recorder, **options)  # type: ignore[arg-type]
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

    def run(feeds: Tensors) -> Tensors:
        gate.wait(2)
        seen.append(int(feeds["x"][0, 0]))
        return {"y": feeds["x"][:, :1]}

    batcher = Batcher(run, ThreadPoolExecutor(1), Recorder(), max_batch_size=1, max_queue_delay_s=0,
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

    def run(feeds: Tensors) -> Tensors:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return {"y": feeds["x"][:, :1]}

    batcher = Batcher(run, ThreadPoolExecutor(1), Recorder(), max_batch_size=4, max_queue_delay_s=0,
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


def test_merge_pads_the_ragged_axis_to_the_longest_with_its_pad_value() -> None:
    loop = asyncio.new_event_loop()
    try:
        a = Item({"s": np.ones((1, 3, 2), np.float32)}, 1, None, loop.create_future(), 0, 1)
        b = Item({"s": np.ones((2, 5, 2), np.float32)}, 2, None, loop.create_future(), 0, 1)
        merged = merge([a, b], {"s": -7.0})["s"]
        assert merged.shape == (3, 5, 2) and (merged[0, 3:] == -7).all() and merged[1:].sum() == 20
    finally:
        loop.close()


async def test_requests_of_different_shapes_never_share_a_batch() -> None:
    shapes: list[tuple[int, ...]] = []

    def run(feeds: Tensors) -> Tensors:
        time.sleep(0.01)
        shapes.append(feeds["x"].shape)
        return {"y": feeds["x"].reshape(len(feeds["x"]), -1).sum(axis=1)}

    batcher = Batcher(run, ThreadPoolExecutor(1), Recorder(), max_batch_size=16, max_queue_delay_s=0,
                      max_queue_size=64, concurrency=1)
    batcher.start()
    sizes = [4, 6, 4, 6, 8, 4]
    results = await asyncio.gather(*[batcher.submit({"x": np.full((1, s), i, np.float32)}, 1, 5, key=(s,))
                                      for i, s in enumerate(sizes)])
    for i, (s, result) in enumerate(zip(sizes, results, strict=True)):
        assert result["y"].tolist() == [i * s]  # each request its own answer
    assert all(len({shape[1:] for shape in [sh]}) == 1 for sh in shapes)
    assert sum(shape[0] for shape in shapes) == len(sizes) and len(shapes) < len(sizes)  # some batching happened
    await batcher.stop()


async def test_an_unbatched_model_runs_each_request_alone_outputs_whole() -> None:
    seen: list[int] = []

    def run(feeds: Tensors) -> Tensors:
        time.sleep(0.01)
        seen.append(len(feeds["x"]))
        return {"y": np.array([feeds["x"].sum()])}  # one row, whatever came in: no batch axis

    batcher = Batcher(run, ThreadPoolExecutor(1), Recorder(), max_batch_size=0, max_queue_delay_s=0,
                      max_queue_size=8, concurrency=1)
    batcher.start()
    results = await asyncio.gather(*[batcher.submit({"x": np.full((3,), i, np.float32)}, 1, 5) for i in range(5)])
    assert [r["y"].tolist() for r in results] == [[3.0 * i] for i in range(5)]
    assert seen == [3] * 5
    await batcher.stop()


async def test_a_request_taken_into_a_batch_is_answered_even_if_compute_outlasts_its_deadline() -> None:
    batcher, _ = make(run_delay=0.3)
    batcher.start()
    result = await batcher.submit(item(2), 1, 0.1)  # taken at once, computed for 0.3 s: still answered
    assert result["y"][0, 0] == 6
    await batcher.stop()


async def test_a_cancelled_queued_request_frees_its_place() -> None:
    batcher, _ = make(run_delay=0.2, max_queue_size=2)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(item(1), 1, 5))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(batcher.submit(item(1, n=2), 2, 5))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.sleep(0)
    assert (await batcher.submit(item(3, n=2), 2, 5))["y"].tolist() == [[9.0], [9.0]]
    await first
    await batcher.stop()


def threaded(run_delay: float, inline_s: float = 0.0, per_row: bool = False) -> tuple[Batcher, Recorder, list[int]]:
    """A batcher whose model records the thread it ran on; it takes ``run_delay``, or that per row."""
    recorder, threads = Recorder(), []

    def run(feeds: Tensors) -> Tensors:
        threads.append(threading.get_ident())
        time.sleep(run_delay * (len(feeds["x"]) if per_row else 1))
        return {"y": feeds["x"][:, :1]}

    batcher = Batcher(run, ThreadPoolExecutor(2), recorder, max_batch_size=8, max_queue_delay_s=0.0,
                      max_queue_size=64, concurrency=1, inline_s=inline_s)
    return batcher, recorder, threads


async def test_a_lone_request_of_a_fast_model_runs_in_the_event_loop() -> None:
    batcher, recorder, threads = threaded(0.0)
    batcher.start()
    await batcher.submit(item(1), 1, 5)  # the first is measured off the loop
    assert threads[-1] != threading.get_ident()
    for _ in range(3):
        assert (await batcher.submit(item(2), 1, 5))["y"].shape == (1, 1)
    assert threads[-3:] == [threading.get_ident()] * 3
    await batcher.submit(item(3, n=8), 8, 5)  # a large request: never inline
    assert threads[-1] != threading.get_ident()
    results = await asyncio.gather(*[batcher.submit(item(i), 1, 5) for i in range(6)])  # company: batched
    assert [r["y"][0, 0] for r in results] == list(range(6)) and max(recorder.batches[-5:]) > 1
    await batcher.stop()


async def test_a_slow_model_never_runs_in_the_event_loop() -> None:
    batcher, _, threads = threaded(0.003)
    batcher.start()
    for _ in range(4):
        await batcher.submit(item(1), 1, 5)
    assert threading.get_ident() not in threads
    await batcher.stop()


async def test_where_compute_shares_a_core_batches_under_load_compute_in_the_event_loop() -> None:
    """``inline_s`` (service.loading: one onnxruntime thread, a process per core): with requests queued behind
    them, batches of a model taking 2 ms a row compute in the loop, each request still answered with its own
    rows; without it they go to a thread."""
    for inline_s, in_loop in ((0.05, True), (0.0, False)):
        batcher, recorder, threads = threaded(0.002, inline_s=inline_s, per_row=True)
        batcher.start()
        await batcher.submit(item(0), 1, 5)  # the first is measured off the loop
        assert threads[-1] != threading.get_ident()
        results = await asyncio.gather(*[batcher.submit(item(i, n=1 + i % 3), 1 + i % 3, 5) for i in range(12)])
        assert [r["y"][:, 0].tolist() for r in results] == [[i] * (1 + i % 3) for i in range(12)]
        assert len(recorder.batches) > 2  # several batches, each taken with others queued behind it
        assert all((t == threading.get_ident()) == in_loop for t in threads[1:]), (inline_s, threads)
        await batcher.stop()


async def test_a_batch_expected_to_outlast_inline_s_computes_off_the_loop() -> None:
    batcher, _, threads = threaded(0.004, inline_s=0.01, per_row=True)  # 4 ms a row
    batcher.start()
    await batcher.submit(item(1), 1, 5)  # measured off the loop: 4 ms a row
    await batcher.submit(item(2), 1, 5)
    assert threads[-1] == threading.get_ident()  # 4 ms expected: in the loop
    await batcher.submit(item(3, n=8), 8, 5)
    assert threads[-1] != threading.get_ident()  # 32 ms expected: a thread
    await batcher.stop()


async def test_while_another_model_is_asked_for_long_batches_leave_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """service.traffic: a batch computing in the loop holds up every other model of the process, so with mixed
    traffic only batches as quick as a lone request's stay there; asked for alone again, a model gets its bound
    back."""
    monkeypatch.setattr(traffic_module, "MIXED_WINDOW_S", 0.5)
    traffic, threads = ModelTraffic(), []

    def run(feeds: Tensors) -> Tensors:
        threads.append(threading.get_ident())
        time.sleep(0.004 * len(feeds["x"]))  # 4 ms a row
        return {"y": feeds["x"][:, :1]}

    def batcher(name: str) -> Batcher:
        return Batcher(run, ThreadPoolExecutor(2), Recorder(), max_batch_size=8, max_queue_delay_s=0.0,
                       max_queue_size=64, concurrency=1, inline_s=0.05, name=name, traffic=traffic,
                       inline_mixed_s=INLINE_MAX_S)

    heavy, other = batcher("heavy:1"), batcher("other:1")
    heavy.start()
    other.start()
    await heavy.submit(item(1), 1, 5)  # measured off the loop
    await heavy.submit(item(2, n=2), 2, 5)
    assert threads[-1] == threading.get_ident()  # 8 ms expected, within 50 ms: in the loop
    await other.submit(item(3), 1, 5)
    await heavy.submit(item(4, n=2), 2, 5)
    assert threads[-1] != threading.get_ident()  # another model was asked for: off the loop
    await asyncio.sleep(0.6)
    await heavy.submit(item(5, n=2), 2, 5)
    assert threads[-1] == threading.get_ident()  # alone again: back in the loop
    await other.submit(item(6), 1, 5)
    reloaded = batcher("other:1")  # the same version reloaded: the new batcher starts before the old one stops
    reloaded.start()
    await other.stop()
    await heavy.submit(item(7, n=2), 2, 5)
    assert threads[-1] != threading.get_ident()  # the version is still served: its request still counts
    await reloaded.stop()  # unloaded: its last request no longer counts
    await heavy.submit(item(8, n=2), 2, 5)
    assert threads[-1] == threading.get_ident()
    await heavy.stop()


def timed(cost: Callable[[np.ndarray], float]) -> tuple[Callable[[Tensors], Tensors], list[tuple[int, bool]]]:
    """A model that sleeps ``cost(x)`` and records (rows, whether it ran on the event loop's thread)."""
    log: list[tuple[int, bool]] = []
    loop_thread = threading.get_ident()

    def run(feeds: Tensors) -> Tensors:
        time.sleep(cost(feeds["x"]))
        log.append((len(feeds["x"]), threading.get_ident() == loop_thread))
        return {"y": feeds["x"][:, :1]}
    return run, log


async def test_the_lone_sessions_speed_does_not_decide_for_the_batch_session(tmp_path: Path) -> None:
    """The lone session has every core: after quiet lone requests, the first burst's batch on the one-thread batch
    session is judged by the batch session's own time (here 80 ms against a 10 ms bound: off the loop)."""
    run, log = timed(lambda x: 0.020 * len(x))
    alone, alone_log = timed(lambda x: 0.002 * len(x))
    batcher = Batcher(run, ThreadPoolExecutor(2), Recorder(), max_batch_size=8, max_queue_delay_s=0.0,
                      max_queue_size=64, concurrency=1, run_alone=alone, board=ActivityBoard(None), inline_s=0.01)
    batcher.start()
    await batcher.submit(item(0), 1, 5)  # measured on the batch session: 20 ms a row
    for _ in range(3):
        await asyncio.sleep(0.06)  # quiet: the board lets the lone session run
        await batcher.submit(item(1), 1, 5)
    assert len(alone_log) >= 2 and alone_log[-1][1]  # 2 ms on the lone session: in the loop
    await asyncio.gather(*[batcher.submit(item(i), 1, 5) for i in range(4)])
    assert all(not on_loop for rows, on_loop in log if rows > 1), log
    await batcher.stop()


async def test_a_lone_request_is_judged_by_small_batches_not_by_the_time_per_row_of_full_ones() -> None:
    """20 ms a call plus 0.1 ms a row: full batches make a row look cheap, but a lone request still costs 20 ms,
    over the 1 ms a lone request may take in the loop."""
    run, log = timed(lambda x: 0.020 + 0.0001 * len(x))
    batcher = Batcher(run, ThreadPoolExecutor(2), Recorder(), max_batch_size=64, max_queue_delay_s=0.0,
                      max_queue_size=1024, concurrency=1)
    batcher.start()
    for _ in range(10):
        await asyncio.gather(*[batcher.submit(item(1, n=64), 64, 5) for _ in range(2)])
    for _ in range(2):  # the first measures what a small batch costs, the second is judged by it
        await batcher.submit(item(2, n=2), 2, 5)
        assert log[-1] == (2, False)
    await batcher.stop()


async def test_a_large_input_is_judged_by_its_size_not_by_the_count_of_its_rows() -> None:
    """A model that does not batch counts each request as one row; an input 50 times larger than the usual ones
    is expected to take 50 times longer (100 ms against a 50 ms bound: off the loop)."""
    run, log = timed(lambda x: 1e-6 * x.size)
    batcher = Batcher(run, ThreadPoolExecutor(2), Recorder(), max_batch_size=0, max_queue_delay_s=0.0,
                      max_queue_size=64, concurrency=1, inline_s=0.05)
    batcher.start()
    for _ in range(3):
        await batcher.submit({"x": np.zeros((1, 2000), np.float32)}, 1, 5)  # 2 ms each
    assert log[-1] == (1, True)
    await batcher.submit({"x": np.zeros((1, 100_000), np.float32)}, 1, 5)
    assert log[-1] == (1, False)
    await batcher.stop()


async def test_a_failure_inline_is_the_requests_alone() -> None:
    calls = []

    def run(feeds: Tensors) -> Tensors:
        calls.append(len(feeds["x"]))
        if feeds["x"][0, 0] < 0:
            raise RuntimeError("negative")
        return {"y": feeds["x"][:, :1]}

    batcher = Batcher(run, ThreadPoolExecutor(1), Recorder(), max_batch_size=8, max_queue_delay_s=0.0,
                      max_queue_size=64, concurrency=1)
    batcher.start()
    await batcher.submit(item(1), 1, 5)
    with pytest.raises(InferenceFailed, match="the backend failed on a batch of 1: negative"):
        await batcher.submit(item(-1), 1, 5)
    assert (await batcher.submit(item(2), 1, 5))["y"][0, 0] == 2
    await batcher.stop()


def lone_batcher(board: ActivityBoard) -> tuple[Batcher, Recorder, list[str]]:
    """A batcher whose model has a lone session: each call records which session ran it."""
    sessions: list[str] = []

    def on(session: str) -> Callable[[Tensors], Tensors]:
        def run(feeds: Tensors) -> Tensors:
            sessions.append(session)
            time.sleep(0.001)
            return {"y": feeds["x"][:, :1]}
        return run

    recorder = Recorder()
    batcher = Batcher(on("batch"), ThreadPoolExecutor(2), recorder, max_batch_size=8, max_queue_delay_s=0.0,
                      max_queue_size=64, concurrency=1, run_alone=on("lone"), board=board)
    return batcher, recorder, sessions


async def test_a_lone_request_runs_on_the_lone_session_while_nothing_else_computes(tmp_path: Path) -> None:
    board, other_process = ActivityBoard(tmp_path), ActivityBoard(tmp_path)
    batcher, recorder, sessions = lone_batcher(board)
    batcher.start()
    for i in range(3):
        assert (await batcher.submit(item(i), 1, 5))["y"][0, 0] == i
    assert sessions == ["lone"] * 3 and recorder.alone == [True] * 3
    results = await asyncio.gather(*[batcher.submit(item(i), 1, 5) for i in range(6)])  # company: batched
    assert [r["y"][0, 0] for r in results] == list(range(6))
    assert set(sessions[3:]) == {"batch"} and recorder.alone[-1] is False  # together: one batch
    await batcher.submit(item(1), 1, 5)
    assert sessions[-1] == "batch"  # just after a crowd: the batch session, until the crowd's hold passes
    await asyncio.sleep(CROWDED_HOLD_S + 0.02)
    other_process.crowded(running=True)  # another process computes batches: its cores are not free
    await batcher.submit(item(1), 1, 5)
    assert sessions[-1] == "batch"
    other_process.crowded(running=False)
    await asyncio.sleep(CROWDED_HOLD_S + 0.02)
    await batcher.submit(item(1), 1, 5)
    assert sessions[-1] == "lone"
    other_batcher, _, other_sessions = lone_batcher(board)  # a second model of this process
    other_batcher.start()
    await other_batcher.submit(item(1), 1, 5)
    assert other_sessions == ["batch"]  # the first one's lone threads still spin
    await batcher.stop()
    await other_batcher.stop()


async def test_a_batch_waits_for_the_company_its_first_item_expects_and_no_longer() -> None:
    batcher, recorder = make()
    batcher.start()
    try:
        async def later(value: float, delay: float, company: int) -> Tensors:
            if delay:
                await asyncio.sleep(delay)
            else:
                for _ in range(int(value)):  # one loop step after another
                    await asyncio.sleep(0)
            return await batcher.submit(item(value), 1, 5, company=company)

        # arriving apart, each alone when no company is expected: nothing waits
        await asyncio.gather(*[later(i, i * 0.005, 0) for i in range(3)])
        assert recorder.batches == [1, 1, 1]
        recorder.batches.clear()
        # arriving one loop step apart, with two more expected: one batch
        results = await asyncio.gather(*[later(i, 0, 2) for i in range(3)])
        assert recorder.batches == [3] and [float(r["y"][0, 0]) for r in results] == [0.0, 3.0, 6.0]
        recorder.batches.clear()
        start = time.perf_counter()
        await batcher.submit(item(1), 1, 5, company=5)  # expected, never comes: the wait is bounded
        assert recorder.batches == [1] and time.perf_counter() - start < 0.05
    finally:
        await batcher.stop()
