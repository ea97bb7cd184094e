"""The dynamic batcher of one served model version.

Requests (already validated: one bad request never fails others) are queued as items of one or more rows. A loop
waits for a free compute slot, takes the oldest item, then every other queued item that may share its batch, up to
``max_batch_size`` rows: items may share a batch only when their tensors agree on every axis but the batch axis
and the config's ragged axes (their ``key``), so requests of different shapes are never padded together. With
``max_queue_delay > 0`` it also waits for more. With the default delay of 0 a lone request never waits for
company: batches form from what arrives while earlier batches compute. The exception is an item whose protocol
expects ``company`` (other clients' requests coming shortly): the batch it starts waits up to ``COMPANY_WAIT_S``
for that many more. gRPC needs it: calls of separate clients arrive one at a time and a lone batch of a fast model
computes at once, so with dozens of clients each call found an empty queue, and ran alone (docs/benchmarks.md).
A model that cannot batch (``max_batch_size 0``) runs each item alone, outputs whole. Where the model has allowed
batch sizes (on CUDA by default), a batch is padded to the next of them and the padding's outputs dropped
(``service.batch_sizes``).

Each batch is one backend call in a worker thread, off the event loop; outputs are split back by rows. Two
exceptions run a batch in the event loop instead, as the simplest server would, skipping the two thread hand-offs
(on the order of 0.1–0.2 ms, more than the MLP's own compute; docs/benchmarks.md); both judge a batch by the
model's recent compute time:
- A small batch of a fast model taken when nothing else is queued or computing (a lone request, in practice).
  Company that arrived before the batch was taken still joins it.
- Any batch expected (from the recent time per input element on the session that will run it) to take at most
  ``inline_s``, which the registry sets (``service.loading``) where the model's compute and the event loop share
  one core anyway: one onnxruntime thread, one batch at a time, as many server processes as cores (the default
  on CPU). A thread there buys no overlap, only hand-offs and a compute thread the event loop preempts; in the
  loop the next bodies wait in the socket meanwhile (docs/benchmarks.md: the imported 3x224x224 classifier
  1.11x). ``inline_s`` bounds how long other requests of the process wait; while another model of the process
  is being asked for too, ``inline_mixed_s`` does (by default ``INLINE_MAX_S`` at most: ``service.loading``,
  ``service.traffic``).

An item still queued at its deadline gets ``DeadlineExceeded`` and is never computed; once its batch is taken,
the deadline no longer applies (a computed result is never thrown away).

A batch of one request taken while nothing else computes, here or in the server's other processes, runs on the
model's lone session where it has one (``run_alone``: every core, threads spinning), everything else on the batch
session; the board (``service.activity``) says who computes, and each run tells it. A full queue answers ``Overloaded``;
``stop()`` refuses new items, drains what is queued, then ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from service.activity import ActivityBoard
from service.backends import Tensors
from service.batch_sizes import padded_size
from service.errors import DeadlineExceeded, InferenceFailed, NotReady, Overloaded
from service.traffic import ModelTraffic

INLINE_MAX_S = 0.001  # a lone request computes in the event loop only if small batches take less than this
INLINE_MAX_ROWS = 4  # ... and only if it is small itself
COMPANY_WAIT_S = 0.001  # the longest a batch waits for the company its first item expects


class BatchObserver(Protocol):
    def queued(self, depth: int) -> None: ...
    def waited(self, seconds: float) -> None: ...
    def computed(self, batch_size: int, seconds: float, alone: bool, padding: int) -> None: ...


@dataclass(eq=False)
class Item:
    inputs: Tensors
    size: int
    key: Hashable
    future: asyncio.Future[Tensors]
    enqueued: float
    deadline: float
    timer: asyncio.TimerHandle | None = None
    taken: bool = False
    queued_at: float = 0.0  # perf_counter(), for the queue-wait metric (the loop's clock ticks in milliseconds)
    company: int = 0  # other items expected shortly (module doc)


def _recent(known: float, measured: float) -> float:
    """A recent compute time: the first measurement (``known`` is inf until then), then 4/5 of the past and 1/5
    of the new one."""
    return measured if known == float("inf") else 0.8 * known + 0.2 * measured


def merge(items: list[Item], pad_values: dict[str, float], rows: int = 0) -> Tensors:
    """Concatenate the items' inputs along the batch axis; a ragged axis is padded to the batch's longest. Up to
    ``rows`` rows, copies of the first row follow (an allowed batch size: ``service.batch_sizes``), in the same
    single copy."""
    total = sum(item.size for item in items)
    if len(items) == 1 and rows <= total:
        return items[0].inputs
    merged: Tensors = {}
    for name in items[0].inputs:
        arrays = [item.inputs[name] for item in items]
        if rows > total:
            arrays.append(np.repeat(arrays[0][:1], rows - total, axis=0))
        if all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
            merged[name] = np.concatenate(arrays)
            continue
        longest = tuple(max(dims) for dims in zip(*(a.shape[1:] for a in arrays), strict=True))
        out = np.full((sum(len(a) for a in arrays), *longest), pad_values.get(name, 0), dtype=arrays[0].dtype)
        row = 0
        for a in arrays:
            out[(slice(row, row + len(a)), *(slice(0, d) for d in a.shape[1:]))] = a
            row += len(a)
        merged[name] = out
    return merged


class Batcher:
    def __init__(
        self,
        run: Callable[[Tensors], Tensors],
        executor: Executor,
        observer: BatchObserver,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        concurrency: int,
        pad_values: dict[str, float] | None = None,
        name: str = "model",
        run_alone: Callable[[Tensors], Tensors] | None = None,
        board: ActivityBoard | None = None,
        inline_s: float = 0.0,
        batch_sizes: tuple[int, ...] = (),
        traffic: ModelTraffic | None = None,
        inline_mixed_s: float = 0.0,
    ) -> None:
        self._run = run
        self._run_alone = run_alone if board is not None else None
        self._board = board
        self._executor = executor
        self._observer = observer
        self.max_batch_size = max_batch_size  # 0: unbatched, each item alone
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.name = name
        self._pad_values = pad_values or {}
        self._queue: deque[Item] = deque()
        self._queued_samples = 0
        self._arrival: asyncio.Future[None] | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._accepting = False
        self._inline_s = inline_s  # the longest batch computed in the event loop whatever else is queued
        self._batch_sizes = batch_sizes  # the sizes a batch is padded to; () any (service.batch_sizes)
        self._traffic = traffic  # the process's models' latest requests (service.traffic)
        self._inline_mixed_s = inline_mixed_s  # inline_s while other models of the process are asked for
        self._small_batch_s = float("inf")  # recent compute time of batches of a few rows (unknown at first)
        # recent compute time per input element, on the batch session (False) and on the lone one (True): a row's
        # cost varies with its shape (open axes, a model that does not batch), and the lone session has every core
        self._element_s = {False: float("inf"), True: float("inf")}
        self._computing = 0  # batches taken and not yet computed

    def start(self) -> None:
        self._accepting = True
        if self._traffic is not None:
            self._traffic.started(self.name)
        self._loop_task = asyncio.get_running_loop().create_task(self._batch_loop(), name=f"batcher-{self.name}")

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def submit(self, inputs: Tensors, size: int, timeout_s: float, key: Hashable = None,
                     company: int = 0) -> Tensors:
        """Queue one validated item of ``size`` rows (at most ``max_batch_size``); return its outputs. ``company``:
        other items its protocol expects shortly, which a batch it starts waits for (module doc)."""
        if not self._accepting:
            raise NotReady(f"model {self.name} is shutting down or unloaded; not accepting requests")
        if self._queued_samples + size > self.max_queue_size:
            raise Overloaded(
                f"model {self.name}: queue full ({self._queued_samples} of {self.max_queue_size} samples "
                f"waiting); retry later"
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        item = Item(inputs, size, key, loop.create_future(), now, now + timeout_s, queued_at=time.perf_counter(),
                    company=company)
        self._queued_samples += size
        self._queue.append(item)
        if self._traffic is not None:
            self._traffic.arrived(self.name, now)
        self._observer.queued(self._queued_samples)
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)
        # One timer per request; cancelling the waiting task cancels the future, which the batch then skips.
        item.timer = loop.call_at(item.deadline, self._expire, item, timeout_s)
        try:
            return await item.future
        finally:
            item.timer.cancel()
            if not item.taken:  # expired or cancelled while queued: its place is free again
                self._forget(item)

    def _checked(self, outputs: Tensors, rows: int, total: int) -> Tensors:
        """The outputs of a batch of ``rows`` rows, ``total`` of them the items' own (the rest padding, dropped)."""
        if self.max_batch_size:
            for name, out in outputs.items():
                if out.ndim == 0 or len(out) != rows:
                    raise InferenceFailed(f"model {self.name}: batch size mismatch: {rows} rows in, "
                                          f"output {name} of shape {list(out.shape)} out")
            if rows != total:
                return {name: out[:total] for name, out in outputs.items()}
        return outputs

    def _failure(self, error: Exception, total: int) -> InferenceFailed:
        return error if isinstance(error, InferenceFailed) else InferenceFailed(
            f"model {self.name}: the backend failed on a batch of {total}: {error}")

    def _computed(self, total: int, rows: int, elements: int, seconds: float, compute_s: float,
                  alone: bool) -> None:
        """A batch of ``total`` rows computed as ``rows`` (the rest padding to an allowed size)."""
        self._observer.computed(total, seconds, alone, rows - total)
        # the model's own time, not the thread hand-off's (which a busy machine makes long: it would then keep
        # every batch off the loop for good)
        if total <= INLINE_MAX_ROWS:  # what a lone request costs: whether the next one runs inline when idle
            self._small_batch_s = _recent(self._small_batch_s, compute_s)
        self._element_s[alone] = _recent(self._element_s[alone], compute_s / max(elements, 1))

    def _inline(self, idle: bool, total: int, elements: int, alone: bool, now: float) -> bool:
        """Whether a batch computes in the event loop (module doc)."""
        mixed = self._traffic is not None and self._traffic.mixed(self.name, now)  # they would wait behind it
        bound = self._inline_mixed_s if mixed else self._inline_s
        return elements * self._element_s[alone] <= bound or (
            idle and total <= INLINE_MAX_ROWS and self._small_batch_s < INLINE_MAX_S)

    def _timed_run(self, merged: Tensors, alone: bool = False) -> tuple[Tensors, float]:
        """Run on the batch session, or on the lone one (``alone``); tell the other processes (module doc)."""
        board = self._board
        start = time.perf_counter()
        if board is None:
            outputs = self._run(merged)
        elif alone:
            board.spinning(id(self), running=True)
            try:
                outputs = self._run_alone(merged)  # type: ignore[misc]
            finally:
                board.spinning(id(self), running=False)
        else:
            board.crowded(running=True)
            try:
                outputs = self._run(merged)
            finally:
                board.crowded(running=False)
        return outputs, time.perf_counter() - start

    def _forget(self, item: Item) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(item)
            self._queued_samples -= item.size
            self._observer.queued(self._queued_samples)

    def _expire(self, item: Item, timeout_s: float) -> None:
        if not item.future.done():
            item.future.set_exception(DeadlineExceeded(
                f"model {self.name}: still queued after the request timeout of {timeout_s * 1000:.0f} ms; "
                f"not computed"))

    def _take(self, batch: list[Item], size: int) -> int:
        """Move the queued items that may join ``batch`` into it, oldest first; return its size in rows."""
        key = batch[0].key
        keep: deque[Item] = deque()
        while self._queue and size < self.max_batch_size:
            item = self._queue.popleft()
            if item.key != key:
                keep.append(item)
            elif size + item.size > self.max_batch_size:
                keep.append(item)
                break
            else:
                batch.append(item)
                size += item.size
        if keep:
            keep.extend(self._queue)
            self._queue = keep
        return size

    async def _next_batch(self) -> list[Item]:
        loop = asyncio.get_running_loop()
        while not self._queue:
            self._arrival = loop.create_future()
            await self._arrival
        first = self._queue.popleft()
        batch = [first]
        if self.max_batch_size == 0:
            return batch
        size = self._take(batch, first.size)
        wait_until = loop.time() + self.max_queue_delay_s
        if first.company and len(batch) <= first.company:
            wait_until = max(wait_until, loop.time() + COMPANY_WAIT_S)
        while size < self.max_batch_size and (remaining := wait_until - loop.time()) > 0 and \
                (self.max_queue_delay_s or len(batch) <= first.company):
            self._arrival = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrival, remaining)
            size = self._take(batch, size)
        return batch

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            for item in batch:
                item.taken = True
                if item.timer is not None:
                    item.timer.cancel()  # from here on the result, once computed, is delivered
            self._queued_samples -= sum(item.size for item in batch)
            self._observer.queued(self._queued_samples)
            self._computing += 1
            task = loop.create_task(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list[Item]) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._computing -= 1
                self._slots.release()

        try:
            loop = asyncio.get_running_loop()
            now, measured = loop.time(), time.perf_counter()
            live = []
            for item in batch:
                if item.future.done():  # the client went away, or its deadline passed
                    continue
                if item.deadline <= now:  # past it before its timer could run: still never computed
                    self._expire(item, item.deadline - item.enqueued)
                    continue
                live.append(item)
                self._observer.waited(measured - item.queued_at)
            if live:
                await self._compute(loop, live, release)
        finally:
            release()

    async def _compute(self, loop: asyncio.AbstractEventLoop, live: list[Item], release: Callable[[], None]) -> None:
        """Run the batch, free its compute slot, then answer its items: the batch loop wakes before the items'
        requesters do, so the next batch starts computing while these answers are encoded and sent."""
        total = sum(item.size for item in live)
        start = time.perf_counter()
        idle = self._computing == 1 and not self._queue
        alone = idle and len(live) == 1 and self._run_alone is not None and \
            self._board.calm(id(self))  # type: ignore[union-attr]
        rows = total if alone else padded_size(self._batch_sizes, total)  # the lone session has no sizes
        merged = merge(live, self._pad_values, rows)
        try:
            elements = sum(int(a.size) for a in merged.values())
            if self._inline(idle, total, elements, alone, loop.time()):
                outputs, compute_s = self._timed_run(merged, alone)  # no thread hand-off (module doc)
            else:
                outputs, compute_s = await loop.run_in_executor(self._executor, self._timed_run, merged, alone)
            release()
            outputs = self._checked(outputs, rows, total)
        except Exception as error:  # one failed batch fails each of its futures, never the loop
            failure = self._failure(error, total)
            for item in live:
                if not item.future.done():
                    item.future.set_exception(failure)
            return
        self._computed(total, rows, elements, time.perf_counter() - start, compute_s, alone)
        if not self.max_batch_size:
            if not live[0].future.done():
                live[0].future.set_result(outputs)
            return
        row = 0
        for item in live:
            if not item.future.done():
                item.future.set_result({n: o[row:row + item.size] for n, o in outputs.items()})
            row += item.size

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new items, finish what is queued and computing, then end the loop."""
        if self._traffic is not None and self._accepting:  # started, and not stopped yet
            self._traffic.stopped(self.name)
        self._accepting = False
        loop = asyncio.get_running_loop()
        give_up = loop.time() + drain_timeout_s
        while (self._queue or self._tasks) and loop.time() < give_up:
            await asyncio.sleep(0.005)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(NotReady(f"model {self.name}: stopped before this request ran"))
