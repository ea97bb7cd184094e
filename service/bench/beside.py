"""``nnserve bench --beside MODEL[:RATE]``: while each measured run goes on, one more connection sends MODEL's OIP
binary requests at RATE a second (default 100), and the tables give their latency: how long one model's load holds
up another model's requests in the same server (``service.traffic``). Against the started server (and a
``--baseline`` or ``--versus-args`` one) only: not the ``--unbatched`` or ``--reference`` ones."""

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
    error: str = ""


@contextmanager
def running_beside(url: str, beside: Beside | None, duration: float) -> Iterator[Running]:
    """The paced connection in a thread of its own for as long as wrk runs (whole seconds), none without
    ``--beside``; a failure of its own is kept in ``error``, not raised."""
    running = Running()
    if beside is None:
        yield running
        return

    def paced() -> None:
        try:
            running.result = asyncio.run(run_asyncio(url, beside.payload, 1, max(1, round(duration)),
                                                     rate=beside.rate))
        except Exception as error:  # reported in the table, the measured run goes on
            running.error = f"{type(error).__name__}: {error}"

    thread = threading.Thread(target=paced, name="bench-beside")
    thread.start()
    try:
        yield running
    finally:
        thread.join()


def milliseconds(result: LoadResult | None) -> str:
    """p50 / p99, and how many failed where some did (a 404 or 429 is quick: its latency alone would mislead)."""
    if result is None:
        return "-"
    failed = f" ({result.errors} of {result.requests} failed)" if result.errors else ""
    return f"{result.p50_ms:.2f} / {result.p99_ms:.2f}{failed}"
