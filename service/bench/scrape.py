"""Reading a server's /metrics and a process's CPU and memory, for before/after differences."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx

_SAMPLE = re.compile(r'^(\w+)(?:\{(.*)\})? (\S+)$')


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            out[(match.group(1), labels)] = float(match.group(3))
    return out


def batch_histogram(before: dict, after: dict, model: str) -> dict[str, float]:  # type: ignore[type-arg]
    """Batches per ``le`` bucket of nnserve_batch_size during the run (cumulative counts), plus mean."""
    buckets: dict[str, float] = {}
    for (name, labels), value in after.items():
        lab = dict(labels)
        if name == "nnserve_batch_size_bucket" and lab.get("model") == model:
            buckets[lab["le"]] = buckets.get(lab["le"], 0) + value - before.get((name, labels), 0)
    buckets["mean"] = histogram_mean(before, after, "nnserve_batch_size", model)
    return buckets


def histogram_mean(before: dict, after: dict, histogram: str, model: str) -> float:  # type: ignore[type-arg]
    """The mean of what a histogram of ``model`` observed between the two scrapes (0 if nothing)."""
    total = sum(v - before.get(k, 0) for k, v in after.items()
                if k[0] == f"{histogram}_sum" and dict(k[1]).get("model") == model)
    count = sum(v - before.get(k, 0) for k, v in after.items()
                if k[0] == f"{histogram}_count" and dict(k[1]).get("model") == model)
    return total / count if count else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children that were waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_pids(pid: int) -> list[int]:
    """The process and its descendants (uvicorn workers)."""
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for child in Path("/proc").iterdir():
            if child.name.isdigit():
                try:
                    stat = (child / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[1]) == parent:
                    pids.append(int(child.name))
                    frontier.append(int(child.name))
    return pids


def grpc_failures(sample: dict, model: str) -> float:  # type: ignore[type-arg]
    """gRPC requests for ``model`` that failed, per the server's own counter (calls cancelled by the load generator
    stopping mid-flight are not failures)."""
    return float(sum(value for (name, labels), value in sample.items()
                     if name == "nnserve_requests_total" and dict(labels).get("protocol") == "grpc"
                     and dict(labels).get("model") == model
                     and dict(labels).get("outcome") not in ("success", "cancelled")))
