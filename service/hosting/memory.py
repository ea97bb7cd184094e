"""Keeping a server's resident memory near what it uses.

onnxruntime runs without its CPU arena here (``Settings.memory_arena``): each batch's activations come from
malloc and go back to it. glibc keeps freed heap pages, per thread arena, so under load every worker would carry
its largest batches' activations (tens of MB) for good. ``malloc_trim`` hands free pages back: once after
loading (ONNX protobufs, the graph-optimisation candidate not kept) and then periodically, when the process has
been quiet for an interval (tests/e2e/test_memory.py shows what it hands back). Not while requests keep coming:
the next ones would fault the same pages back in. Trimming every second under load cost 65,000 page faults a
second and a tenth of a core in the kernel for a 3x224x224 model at 16 concurrent requests, and 10-15% of its
throughput (docs/benchmarks.md). Under unbroken load it still trims every ``BUSY_TRIM_EVERY`` intervals, so
fragments cannot pile up for good.

glibc itself hands memory back too, unasked, and in the middle of load: a freed block above its mmap threshold
is unmapped, and the top of a heap beyond its trim threshold is cut. onnxruntime's activations (a few MB to tens
of MB each, freed after every batch) crossed those lines batch after batch, and each time their pages were
faulted in anew: 0.1-0.5 M faults a second and 0.2 of a core in the kernel in some runs, none in others, as the
thresholds happened to move, or as a batch's activations spilled into a second heap of the computing thread's
arena, which glibc unmaps whenever it empties, whatever the thresholds (docs/benchmarks.md). ``keep_freed_memory``
fixes both thresholds at their highest sensible values and keeps every thread in the one main heap (``mallopt``),
leaving the hand-back to the trimmer.

Python's cyclic garbage collector runs on that same tick instead of whenever enough containers were allocated: a
JSON body of pixels is tens of thousands of small lists, alive until converted, and with several such requests in
flight the allocation-driven collector kept re-scanning them (16 concurrent 224x224x3 /predict requests: 27 req/s
with it, 58 without; docs/benchmarks.md). Nothing on the hot path makes reference cycles that must be freed
sooner than a second; the start-up heap is frozen out of the collector's way. A tick with no call begun or ended
since the last collection skips it, but for one every ``IDLE_COLLECT_EVERY`` ticks: collecting every second was
about a third of an idle server's own CPU (~0.4% of a core per process, a collection taking a few ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
from collections.abc import Callable

BUSY_TRIM_EVERY = 60  # intervals
IDLE_COLLECT_EVERY = 10  # intervals


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, where it is the C library (malloc_trim and mallopt are its own); None elsewhere (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (present, or AttributeError)
    except (OSError, AttributeError):
        return None
    return libc


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc refuses more on 64-bit systems
TRIM_THRESHOLD = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Whether glibc now keeps freed blocks of up to 32 MiB, and the free top of its heap, for reuse, with threads
    made from now on sharing the main heap (call it before the models load: their threads are made then)."""
    libc = _glibc()
    if libc is None:
        return False
    return all(libc.mallopt(parameter, value) for parameter, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1)))


def release_free_memory() -> None:
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


class MemoryTrimmer:
    """Every ``interval_s`` seconds, on the event loop until stopped: collect cyclic garbage (the collector's own
    triggers are off meanwhile) if ``activity()`` (a count of calls begun and ended) moved since the last collection or
    ``IDLE_COLLECT_EVERY`` intervals passed, then ``release_free_memory`` if it did not move during the interval
    but did since the last hand-back, or ``BUSY_TRIM_EVERY`` intervals passed. With ``interval_s`` 0 nothing
    changes."""

    def __init__(self, interval_s: float, activity: Callable[[], int]) -> None:
        self.interval_s = interval_s
        self.activity = activity
        self.trims = 0
        self.collections = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            gc.disable()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="memory-trimmer")

    async def _run(self) -> None:
        seen = trimmed = collected = self.activity()
        busy = 0  # intervals in a row with calls
        since_collected = 0
        while True:
            await asyncio.sleep(self.interval_s)
            now = self.activity()
            since_collected += 1
            if now != collected or since_collected >= IDLE_COLLECT_EVERY:
                gc.collect()
                self.collections += 1
                collected, since_collected = now, 0
            busy = busy + 1 if now != seen else 0
            if now != trimmed and (busy == 0 or busy >= BUSY_TRIM_EVERY):
                release_free_memory()
                trimmed, busy = now, 0
                self.trims += 1
            seen = now

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            gc.enable()
