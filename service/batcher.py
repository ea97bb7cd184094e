"""The dynamic batcher of one served model.

Requests (already validated: one bad request never fails others) are queued as items of one or more samples.
A loop waits for a free compute slot, takes the first item, then everything else already queued up to
``max_batch_size`` samples; with ``max_queue_delay > 0`` it also waits for more, the remaining wait recomputed
after each arrival. With the default delay of 0 a lone request never waits for company: batches form from the
requests that arrive while earlier batches compute. Each batch is one onnxruntime call in a worker thread, off the
event loop; outputs are split back to each item's future. Items whose deadline passed while queued get
``DeadlineExceeded`` and are never computed; a full queue answers ``Overloaded``; ``stop()`` refuses new items,
drains what is queued, then ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from service.errors import DeadlineExceeded, InferenceFailed, NotReady, Overloaded

Tensors = dict[str, np.ndarray]


class BatchObserver(Protocol):
    def queued(self, depth: int) -> None: ...
    def waited(self, seconds: float) -> None: ...
    def computed(self, batch_size: int, seconds: float) -> None: ...


@dataclass(eq=False)
class Item:
    inputs: Tensors
    size: int
    future: asyncio.Future[Tensors]
    enqueued: float
    deadline: float


def merge(items: list[Item]) -> Tensors:
    """Concatenate the items' inputs along the batch axis, padding other axes (sequence time) to the longest."""
    if len(items) == 1:
        return items[0].inputs
    merged: Tensors = {}
    for name in items[0].inputs:
        arrays = [item.inputs[name] for item in items]
        if all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
            merged[name] = np.concatenate(arrays)
            continue
        longest = tuple(max(dims) for dims in zip(*(a.shape[1:] for a in arrays), strict=True))
        out = np.zeros((sum(len(a) for a in arrays), *longest), dtype=arrays[0].dtype)
        row = 0
        for a in arrays:
            out[(slice(row, row + len(a)), *(slice(0, d) for d in a.shape[1:]))] = a
            row += len(a)
        merged[name] = out
    return merged


class Batcher:
    def __init__(
        self,
        run: Callable[[Tensors], list[np.ndarray]],
        output_names: list[str],
        executor: Executor,
        observer: BatchObserver,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        concurrency: int,
        name: str = "model",
    ) -> None:
        self._run = run
        self._output_names = output_names
        self._executor = executor
        self._observer = observer
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.name = name
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._queued_samples = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._accepting = False

    def start(self) -> None:
        self._accepting = True
        self._loop_task = asyncio.get_running_loop().create_task(self._batch_loop(), name=f"batcher-{self.name}")

    async def submit(self, inputs: Tensors, size: int, timeout_s: float) -> Tensors:
        """Queue one validated item of ``size`` samples; return its outputs."""
        if not self._accepting:
            raise NotReady(f"model {self.name} is shutting down or unloaded; not accepting requests")
        if self._queued_samples + size > self.max_queue_size:
            raise Overloaded(
                f"model {self.name}: queue full ({self._queued_samples} of {self.max_queue_size} samples "
                f"waiting); retry later"
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        item = Item(inputs, size, loop.create_future(), now, now + timeout_s)
        self._queued_samples += size
        self._queue.put_nowait(item)
        self._observer.queued(self._queued_samples)
        # One timer per request (asyncio.wait_for would add a task-like wrapper and two callbacks); cancelling
        # the waiting task cancels the future, which the batch then skips.
        timer = loop.call_at(item.deadline, self._expire, item.future, timeout_s)
        try:
            return await item.future
        finally:
            timer.cancel()

    def _expire(self, future: asyncio.Future[Tensors], timeout_s: float) -> None:
        if not future.done():
            future.set_exception(DeadlineExceeded(
                f"model {self.name}: no result within the request timeout of {timeout_s * 1000:.0f} ms"))

    async def _next_batch(self, first: Item) -> tuple[list[Item], Item | None]:
        loop = asyncio.get_running_loop()
        batch, size = [first], first.size
        wait_until = loop.time() + self.max_queue_delay_s
        while size < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = wait_until - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if size + item.size > self.max_batch_size:
                return batch, item
            batch.append(item)
            size += item.size
        return batch, None

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        carried: Item | None = None
        while True:
            await self._slots.acquire()
            try:
                first = carried or await self._queue.get()
                batch, carried = await self._next_batch(first)
            except BaseException:
                self._slots.release()
                raise
            self._queued_samples -= sum(item.size for item in batch)
            self._observer.queued(self._queued_samples + (carried.size if carried else 0))
            task = loop.create_task(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list[Item]) -> None:
        try:
            loop = asyncio.get_running_loop()
            now = loop.time()
            live = []
            for item in batch:
                if item.future.done():  # the client went away or timed out
                    continue
                if item.deadline <= now:
                    item.future.set_exception(DeadlineExceeded(
                        f"model {self.name}: waited {(now - item.enqueued) * 1000:.0f} ms in the queue, past the "
                        f"request timeout; not computed"))
                    continue
                live.append(item)
                self._observer.waited(now - item.enqueued)
            if not live:
                return
            total = sum(item.size for item in live)
            start = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, merge(live))
                for name, out in zip(self._output_names, outputs, strict=True):
                    if len(out) != total:
                        raise InferenceFailed(f"model {self.name}: batch size mismatch: {total} samples in, "
                                              f"{len(out)} rows of {name} out")
            except Exception as error:  # one failed batch fails each of its futures, never the loop
                failure = error if isinstance(error, InferenceFailed) else InferenceFailed(
                    f"model {self.name}: onnxruntime failed on a batch of {total}: {error}")
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(failure)
                return
            self._observer.computed(total, time.perf_counter() - start)
            row = 0
            for item in live:
                if not item.future.done():
                    item.future.set_result({n: o[row:row + item.size] for n, o in
                                            zip(self._output_names, outputs, strict=True)})
                row += item.size
        finally:
            self._slots.release()

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new items, finish what is queued and computing, then end the loop."""
        self._accepting = False
        loop = asyncio.get_running_loop()
        give_up = loop.time() + drain_timeout_s
        while (self._queued_samples > 0 or self._tasks) and loop.time() < give_up:
            await asyncio.sleep(0.005)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(NotReady(f"model {self.name}: stopped before this request ran"))
