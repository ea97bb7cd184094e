"""prometheus-client's multiprocess mode without a ``getpid`` system call per sample (``service.metrics``): counting
and observing ask no pid, and a forked child still writes its own file, so the aggregate stays right. It leans on
``values.ValueClass`` and ``values.MultiProcessValue``'s process identifier: this fails if they move."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, sys
real_getpid = os.getpid
calls = [0]
def counted():
    calls[0] += 1
    return real_getpid()
os.getpid = counted  # before prometheus_client is imported: its default identifier is os.getpid as found then

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from service.metrics import ServiceMetrics

metrics = ServiceMetrics()
per_request = metrics.for_request("mlp", "1", "v2")
per_request.count("ok", "200")
calls[0] = 0
for _ in range(10):
    per_request.count("ok", "200")
    per_request.latency.observe(0.002)
    metrics.batch_size.labels("mlp", "1").observe(4)
print("getpid calls", calls[0])
child = os.fork()
if child == 0:
    metrics.for_request("mlp", "1", "v2").count("ok", "200")
    os._exit(0)
os.waitpid(child, 0)
registry = CollectorRegistry()
MultiProcessCollector(registry)
print("total", registry.get_sample_value("nnserve_requests_total", {"model": "mlp", "version": "1", "protocol": "v2",
                                                                  "outcome": "ok", "code": "200"}))
print("files", sorted(p for p in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]) if p.startswith("counter")))
print("pids", real_getpid(), child)
"""


def test_samples_ask_no_pid_and_a_forked_child_writes_its_own_file(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                          env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["getpid"] == "calls 0"
    assert float(lines["total"]) == 12.0  # 11 in the parent, 1 in the child
    parent, child = lines["pids"].split()
    assert lines["files"] == str(sorted([f"counter_{parent}.db", f"counter_{child}.db"]))
