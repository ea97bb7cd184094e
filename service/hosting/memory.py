"""Keeping a server's resident memory near what it uses.

onnxruntime runs without its CPU arena here (``Settings.memory_arena``): each batch's activations come from
malloc and go back to it. glibc keeps freed heap pages, per thread arena, so under load every worker would carry
its largest batches' activations (tens of MB) for good. ``malloc_trim`` hands free pages back: once after
loading (ONNX protobufs, the graph-optimisation candidate not kept) and then periodically: a fraction of a
millisecond a second, and the benchmarks in docs/benchmarks.md run with it (tests/e2e/test_memory.py shows
what it hands back).

Python's cyclic garbage collector runs on that same tick instead of whenever enough containers were allocated: a
JSON body of pixels is tens of thousands of small lists, alive until converted, and with several such requests in
flight the allocation-driven collector kept re-scanning them (16 concurrent 224x224x3 /predict requests: 27 req/s
with it, 58 without; docs/benchmarks.md). Nothing on the hot path makes reference cycles that must be freed
sooner than a second; the start-up heap is frozen out of the collector's way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to hand back this way
        return None
    return trim


def release_free_memory() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class MemoryTrimmer:
    """Every ``interval_s`` seconds, on the event loop until stopped: collect cyclic garbage (the collector's own
    triggers are off meanwhile), then ``release_free_memory``. With ``interval_s`` 0 nothing changes."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            gc.disable()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="memory-trimmer")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            gc.collect()
            release_free_memory()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            gc.enable()
