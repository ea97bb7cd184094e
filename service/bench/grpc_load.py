"""The gRPC load generator: ``h2load`` (Debian's nghttp2-client, C, one thread: cheap enough not to starve a server
on two cores; its CPU share is reported beside the figures), sending one framed ``ModelInferRequest`` again and
again on ``concurrency`` HTTP/2 connections of one stream each, for a fixed duration. Latency percentiles come
from its per-request log. A gRPC error travels in the trailers of an HTTP 200, which h2load does not read: the
benchmark counts those from the server's own metrics."""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from service.bench.loadgen import LoadResult
from service.bench.payloads import Payload


def run_h2load(target: str, payload: Payload, concurrency: int, duration: float) -> LoadResult:
    if not shutil.which("h2load"):
        raise SystemExit("the gRPC benchmark needs h2load: apt-get install nghttp2-client")
    with tempfile.TemporaryDirectory(prefix="nnserve-bench-grpc-") as tmp:
        body, log = Path(tmp) / "request", Path(tmp) / "requests.tsv"
        body.write_bytes(payload.bodies[0])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        command = ["h2load", "-t1", f"-c{concurrency}", "-m1", f"-D{max(1, round(duration))}", "-d", str(body),
                   "-H", f"content-type: {payload.content_type}", "-H", "te: trailers", "--log-file", str(log),
                   f"http://{target}{payload.path}"]
        output = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    finished = re.search(r"finished in ([\d.]+)(m?s)", output)
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1) if finished else duration
    failed = re.search(r"(\d+) failed, (\d+) errored", output)
    latencies = np.array([int(r[2]) for r in rows if len(r) > 2], dtype=np.float64) / 1e3 if rows else np.zeros(1)
    bad_status = sum(1 for r in rows if len(r) > 1 and r[1] != "200")
    return LoadResult(
        requests=len(rows), seconds=seconds,
        errors=(int(failed.group(1)) + int(failed.group(2)) if failed else 0) + bad_status,
        p50_ms=float(np.percentile(latencies, 50)), p90_ms=float(np.percentile(latencies, 90)),
        p99_ms=float(np.percentile(latencies, 99)),
        client_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), generator="h2load",
    )
