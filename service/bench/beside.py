"""``nnserve bench --beside MODEL[:RATE]``: while each measured run goes on, one more connection sends MODEL's OIP
binary requests at RATE a second (default 100), and the tables give their latency: how long one model's load holds
up another model's requests in the same server (``service.traffic``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from service.bench.loadgen import LoadResult, run_asyncio
from service.bench.payloads import Payload

DEFAULT_RATE = 100.0


@dataclass(frozen=True)
class Beside:
    model: str
    rate: float
    payload: Payload

    @property
    def label(self) -> str:
        return f"{self.model} at {self.rate:g}/s beside"


def parse(spec: str) -> tuple[str, float]:
    model, _, rate = spec.partition(":")
    try:
        value = float(rate) if rate else DEFAULT_RATE
    except ValueError:
        raise SystemExit(f"--beside {spec}: expected MODEL or MODEL:RATE (requests a second), "
                         f"got rate {rate!r}") from None
    if not model or value <= 0:
        raise SystemExit(f"--beside {spec}: expected MODEL or MODEL:RATE with a rate above 0")
    return model, value


@dataclass
class Running:
    result: LoadResult | None = None


@contextmanager
def running_beside(url: str, beside: Beside | None, duration: float) -> Iterator[Running]:
    """The paced connection in a thread of its own for ``duration`` seconds (none without ``--beside``)."""
    running = Running()
    if beside is None:
        yield running
        return

    def paced() -> None:
        running.result = asyncio.run(run_asyncio(url, beside.payload, 1, duration, rate=beside.rate))

    thread = threading.Thread(target=paced, name="bench-beside")
    thread.start()
    try:
        yield running
    finally:
        thread.join()


def milliseconds(result: LoadResult | None) -> str:
    return f"{result.p50_ms:.2f} / {result.p99_ms:.2f}" if result else "-"
