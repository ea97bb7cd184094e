"""The memory upkeep tick: the cyclic garbage collector runs on it (its own allocation triggers are off while the
server runs, back on after), so cyclic garbage is still freed within a tick of a call (idle, only every
``IDLE_COLLECT_EVERY`` ticks); freed memory is handed back once
calls stop, not while they keep coming (nor more than once per quiet spell), and under unbroken load only every
``BUSY_TRIM_EVERY`` ticks."""

from __future__ import annotations

import asyncio
import gc
import weakref

from service.hosting import memory
from service.hosting.memory import MemoryTrimmer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


async def test_cyclic_garbage_is_collected_on_the_tick_and_the_collector_comes_back_after() -> None:
    calls = [0]
    trimmer = MemoryTrimmer(0.05, lambda: calls[0])
    trimmer.start()
    await asyncio.sleep(0)  # the tick's task has started (and counted the calls so far)
    try:
        assert not gc.isenabled()
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None  # a cycle: reference counting alone does not free it
        calls[0] += 1  # a call came: the next tick collects
        for _ in range(40):
            await asyncio.sleep(0.05)
            if gone() is None:
                break
        assert gone() is None
    finally:
        await trimmer.stop()
    assert gc.isenabled()


async def test_idle_ticks_collect_only_every_idle_collect_every(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(memory, "IDLE_COLLECT_EVERY", 5)
    calls = [0]
    trimmer = MemoryTrimmer(0.01, lambda: calls[0])
    trimmer.start()
    try:
        await asyncio.sleep(0.033)  # three ticks, no call
        assert trimmer.collections == 0
        calls[0] += 1
        await asyncio.sleep(0.02)
        assert trimmer.collections == 1  # the tick after a call
        for _ in range(5 + 3):  # idle again: one more within five ticks
            await asyncio.sleep(0.01)
            if trimmer.collections == 2:
                break
        assert trimmer.collections == 2
    finally:
        await trimmer.stop()


async def test_no_upkeep_leaves_the_collector_alone() -> None:
    trimmer = MemoryTrimmer(0, lambda: 0)
    trimmer.start()
    assert gc.isenabled()
    await trimmer.stop()
    assert gc.isenabled()


async def test_memory_is_handed_back_when_calls_stop_not_while_they_come(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(memory, "BUSY_TRIM_EVERY", 8)
    calls = [0]
    trimmer = MemoryTrimmer(0.02, lambda: calls[0])

    async def ticks(n: int, busy: bool) -> None:
        for _ in range(n * 4):  # busy: a call every quarter tick, so every tick sees some
            if busy:
                calls[0] += 1
            await asyncio.sleep(0.005)

    trimmer.start()
    try:
        await ticks(10, busy=False)
        assert trimmer.trims == 0  # nothing happened since start: nothing to hand back
        await ticks(6, busy=True)
        busy_trims = trimmer.trims
        assert busy_trims == 0  # under load: kept
        await ticks(10, busy=False)
        assert trimmer.trims == 1  # quiet: handed back once
        await ticks(40, busy=True)
        assert 3 <= trimmer.trims <= 7  # unbroken load: every 8 ticks
    finally:
        await trimmer.stop()


def test_a_call_reports_its_end_also_when_it_fails() -> None:
    """The upkeep's activity counts calls ended too: a call begun before a tick and ended after it (its garbage
    made then) still moves the count at the next tick."""
    import pytest

    from service.dataplane import Call
    from service.errors import InvalidValue
    from service.metrics import ServiceMetrics

    ended = []
    with Call(ServiceMetrics(), "v2", {}, on_end=lambda: ended.append(1)):
        assert ended == []
    with pytest.raises(InvalidValue), Call(ServiceMetrics(), "v2", {}, on_end=lambda: ended.append(1)):
        raise InvalidValue("bad")
    assert ended == [1, 1]
