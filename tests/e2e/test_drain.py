"""SIGTERM against a real ``nnserve serve``: requests provably in flight finish after the signal, readiness turns
503 at once, new connections are refused, a request sent on an idle keep-alive connection during the drain is
answered (with ``Connection: close``), the process exits 0; and under continuous keep-alive load, ten drills in a
row, every request is either answered 200 or refused at connect: none meets a reset."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.hosting.launcher import serve_subprocess

HEAVY = {"model": "resnet", "inputs": [[[0] * 28] * 28] * 64}
LIGHT = {"model": "mlp", "inputs": [[[0] * 28] * 28]}


def test_in_flight_finish_readiness_turns_503_new_connections_refused_exit_0(models_dir: Path) -> None:
    with serve_subprocess(models_dir, ["--model", "resnet", "--no-access-log"]) as (url, process, log):
        idle = httpx.Client(base_url=url, timeout=30)  # a keep-alive connection, idle when the signal comes
        assert idle.get("/v2/health/ready").status_code == 200

        async def scenario() -> tuple[list[tuple[int, float]], float]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                async def call() -> tuple[int, float]:
                    response = await client.post("/predict", json=HEAVY)
                    return response.status_code, time.monotonic()

                calls = [asyncio.ensure_future(call()) for _ in range(12)]  # ~0.3 s of ResNet work queued
                await asyncio.sleep(0.15)
                signalled = time.monotonic()
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*calls), signalled

        done, signalled = asyncio.run(scenario())
        assert [status for status, _ in done] == [200] * 12
        assert sum(finished > signalled for _, finished in done) >= 3, "no request was still in flight"
        ready = idle.get("/v2/health/ready")  # sent on the old connection, during the drain
        assert ready.status_code == 503 and ready.headers["connection"] == "close"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/v2/health/live", timeout=5)
        assert process.wait(30) == 0
        assert "drained and stopped" in log.read_text()
        idle.close()


def _client(url: str, stop: threading.Event, outcomes: list[str], lock: threading.Lock) -> None:
    """Posts until the server refuses a connection; records each outcome: 200, refused, or what went wrong."""
    client = httpx.Client(base_url=url, timeout=30)
    try:
        while True:
            try:
                status = client.post("/predict", json=LIGHT).status_code
                outcome = "200" if status == 200 else f"status {status}"
            except httpx.ConnectError:
                outcome = "refused"
            except httpx.HTTPError as error:  # a reset, or a response cut short: a lost request
                outcome = f"{type(error).__name__}: {error}"
            with lock:
                outcomes.append(outcome)
            if outcome == "refused" or (stop.is_set() and outcome != "200"):
                return
    finally:
        client.close()


def test_sigterm_under_keep_alive_load_loses_nothing_ten_times(models_dir: Path) -> None:
    lost: list[str] = []
    answered = 0
    for _ in range(10):
        with serve_subprocess(models_dir, ["--model", "mlp", "--no-access-log"]) as (url, process, _):
            outcomes: list[str] = []
            lock, stop = threading.Lock(), threading.Event()
            threads = [threading.Thread(target=_client, args=(url, stop, outcomes, lock)) for _ in range(32)]
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            stop.set()
            for thread in threads:
                thread.join(30)
            assert process.wait(30) == 0
        lost += [o for o in outcomes if o not in ("200", "refused")]
        answered += outcomes.count("200")
        ends = [o for o in outcomes if o != "200"]
        assert outcomes.count("refused") == 32, f"every client ends refused at connect, not {ends}"
    assert not lost, lost
    assert answered > 1000
