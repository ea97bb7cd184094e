"""Per-version inference statistics, as Triton's ``ModelStatistics`` reports them: requests that succeeded or
failed with their time in the server, time queued, batches computed (per batch size) and rows inferred. Kept per
process (with ``--workers N``, each process reports its own; Prometheus has the totals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass
class ModelStats:
    inference_count: int = 0  # rows answered
    execution_count: int = 0  # backend calls (batches)
    last_inference_ms: int = 0  # wall-clock time of the last answer, milliseconds since the epoch
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=dict)  # batch size -> its calls and compute time

    def answered(self, rows: int, seconds: float) -> None:
        self.inference_count += rows
        self.success.add(seconds)
        self.last_inference_ms = int(time.time() * 1000)

    def failed(self, seconds: float) -> None:
        self.fail.add(seconds)

    def computed(self, batch_size: int, seconds: float) -> None:
        self.execution_count += 1
        self.compute.add(seconds)
        self.batches.setdefault(batch_size, Duration()).add(seconds)
