"""The memory upkeep tick: the cyclic garbage collector runs on it (its own allocation triggers are off while the
server runs, back on after), so cyclic garbage is still freed within a tick."""

from __future__ import annotations

import asyncio
import gc
import weakref

from service.hosting.memory import MemoryTrimmer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


async def test_cyclic_garbage_is_collected_on_the_tick_and_the_collector_comes_back_after() -> None:
    trimmer = MemoryTrimmer(0.05)
    trimmer.start()
    try:
        assert not gc.isenabled()
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None  # a cycle: reference counting alone does not free it
        for _ in range(40):
            await asyncio.sleep(0.05)
            if gone() is None:
                break
        assert gone() is None
    finally:
        await trimmer.stop()
    assert gc.isenabled()


async def test_no_upkeep_leaves_the_collector_alone() -> None:
    trimmer = MemoryTrimmer(0)
    trimmer.start()
    assert gc.isenabled()
    await trimmer.stop()
    assert gc.isenabled()
