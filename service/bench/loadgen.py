"""Load generators: ``wrk`` (Debian's, one thread: the cheapest client on 2 cores) when installed, else a
small asyncio HTTP/1.1 keep-alive client. Both cycle through real request bodies for a fixed duration and
report requests, errors, latency percentiles and their own CPU time."""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from service.bench.payloads import Payload

WRK_SCRIPT = r"""
local reqs, n, i = {}, 0, 0
function init(args)
  local dir, count = args[1], tonumber(args[2])
  for k = 1, count do
    local f = io.open(dir .. "/body" .. k, "rb"); local body = f:read("*a"); f:close()
    local h = io.open(dir .. "/hdr" .. k, "rb"); local extra = h:read("*a"); h:close()
    local headers = {["Content-Type"] = args[4]}
    if extra ~= "" then headers["Inference-Header-Content-Length"] = extra end
    reqs[k] = wrk.format("POST", args[3], headers, body)
  end
  n = count
end
function request()
  i = i % n + 1
  return reqs[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class LoadResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    client_cpu_s: float
    generator: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_load(url: str, payload: Payload, concurrency: int, duration: float) -> LoadResult:
    if shutil.which("wrk"):
        return run_wrk(url, payload, concurrency, duration)
    return asyncio.run(run_asyncio(url, payload, concurrency, duration))


def run_wrk(url: str, payload: Payload, concurrency: int, duration: float) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="nnserve-bench-") as tmp:
        folder = Path(tmp)
        for k, (body, headers) in enumerate(zip(payload.bodies, payload.headers, strict=True), start=1):
            (folder / f"body{k}").write_bytes(body)
            (folder / f"hdr{k}").write_text(headers.get("Inference-Header-Content-Length", ""))
        (folder / "bench.lua").write_text(WRK_SCRIPT)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
                   "-s", str(folder / "bench.lua"), url, "--", str(folder), str(len(payload.bodies)),
                   payload.path, payload.content_type]
        output = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in output.splitlines() if x.startswith("{"))
    data = json.loads(line)
    return LoadResult(
        requests=data["requests"], seconds=data["duration_us"] / 1e6,
        errors=data["status_errors"] + data["socket_errors"], p50_ms=data["p50_us"] / 1e3,
        p90_ms=data["p90_us"] / 1e3, p99_ms=data["p99_us"] / 1e3,
        client_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), generator="wrk",
    )


PACED_TIMEOUT_S = 30.0  # as wrk's --timeout


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request and read its whole response; its status."""
    writer.write(request)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def run_asyncio(url: str, payload: Payload, concurrency: int, duration: float,
                      rate: float | None = None) -> LoadResult:
    """``concurrency`` keep-alive connections, each sending its next request once the last is answered; with
    ``rate``, each connection at most that many a second, a request never sooner than ``1 / rate`` after the one
    before it was sent (a late answer delays the next; missed slots are not made up in a burst), each answer
    awaited at most ``PACED_TIMEOUT_S``: another model's traffic while the measured load runs (``--beside``)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = []
    for body, headers in zip(payload.bodies, payload.headers, strict=True):
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = (f"POST {payload.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {payload.content_type}\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n")
        requests.append(head.encode() + body)
    latencies: list[float] = []
    errors = 0
    cpu_start, start = time.process_time(), time.perf_counter()
    deadline = start + duration

    async def connection(offset: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        i = offset
        try:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                exchange = _exchange(reader, writer, requests[i % len(requests)])
                status = await (asyncio.wait_for(exchange, PACED_TIMEOUT_S) if rate else exchange)
                i += 1
                latencies.append(time.perf_counter() - sent)
                if status >= 400:
                    errors += 1
                if rate:
                    await asyncio.sleep(max(0.0, sent + 1 / rate - time.perf_counter()))
        finally:
            writer.close()

    await asyncio.gather(*[connection(k) for k in range(concurrency)])
    seconds = time.perf_counter() - start
    lat = np.array(latencies) * 1e3 if latencies else np.zeros(1)
    return LoadResult(len(latencies), seconds, errors, float(np.percentile(lat, 50)), float(np.percentile(lat, 90)),
                      float(np.percentile(lat, 99)), time.process_time() - cpu_start, "asyncio")
