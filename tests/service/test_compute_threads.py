"""--compute-niceness (service.compute_threads) through the real app: batches computed off the event loop run on
threads niced by it, for a model whose compute shares a core with the loop, while the loop keeps its priority;
unset, or for a model with threads of its own, nothing is niced."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.service.conftest import running_app

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")


def thread_nice_values() -> list[int]:
    """Every thread of this process's nice value (field 19 of /proc/self/task/<tid>/stat)."""
    values = []
    for task in Path("/proc/self/task").iterdir():
        stat = (task / "stat").read_text()
        values.append(int(stat[stat.rindex(")") + 2:].split()[16]))
    return values


async def batch_off_the_loop(models: Path, niceness: int, **settings: object) -> tuple[dict[str, object], list[int]]:
    """A 64-row ResNet batch with no event-loop bound (computed off the loop): the model's batching view and the
    threads' nice values after it."""
    cores = len(os.sched_getaffinity(0))
    async with running_app(models, providers="cpu",
                           models=["resnet"], event_loop_compute_ms=0, compute_niceness=niceness,
                           **{"workers": cores, "intra_op_threads": 1, **settings}) as client:
        response = await client.post("/predict", json={"model": "resnet", "inputs": np.zeros((64, 28, 28)).tolist()})
        assert response.status_code == 200
        view = (await client.get("/models")).json()
        return next(m for m in view["models"] if m["name"] == "resnet")["batching"], thread_nice_values()


async def test_batches_off_the_loop_run_niced_and_the_loop_does_not(models_dir: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)  # this thread's, the event loop's (0 unless pytest runs niced)
    batching, nice = await batch_off_the_loop(models_dir, 7)
    assert batching["off_loop_compute_niceness"] == 7
    assert min(base + 7, 19) in nice and os.getpriority(os.PRIO_PROCESS, 0) == base  # a computing thread niced


async def test_unset_or_with_threads_of_its_own_nothing_is_niced(models_dir: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    batching, nice = await batch_off_the_loop(models_dir, 0)
    assert batching["off_loop_compute_niceness"] == 0 and set(nice) == {base}
    batching, nice = await batch_off_the_loop(models_dir, 7, intra_op_threads=2)  # its compute does not share one core
    assert batching["off_loop_compute_niceness"] == 0 and set(nice) == {base}
