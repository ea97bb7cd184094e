"""The ceiling: raw in-process onnxruntime throughput of the same model on the same machine, at each batch size
the better of one session on every core and one single-threaded session per core side by side (what a server of
one process per core runs: for a model that does not batch, the ResNet-50 architecture at batch 1, two sessions
of one thread beat one of two by ~10%)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.backends import Tensors
from service.loading import LoadedVersion
from service.repository import MODEL_FILE
from service.settings import usable_cpus


def cpu_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """One session on all cores (or ``threads``), graph optimisation ALL, onnxruntime's own defaults (spin on)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cpus()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def samples_per_s(session: ort.InferenceSession, feeds: Tensors, rows: int, seconds: float) -> float:
    """``feeds`` (``rows`` samples) run back to back for ``seconds`` after one unmeasured run."""
    session.run(None, feeds)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, feeds)
        count += rows
    return count / (time.perf_counter() - start)


def repeat_rows(sample: Tensors, batch: int | None) -> Tensors:
    """One sample's feeds repeated to ``batch`` rows (as they are for ``None``: a model that does not batch),
    strings as ``str``, as onnxruntime takes them."""
    feeds = {name: np.repeat(array, batch, axis=0) if batch else array for name, array in sample.items()}
    return {name: a.astype(str) if a.dtype == object else a for name, a in feeds.items()}


def side_by_side(sessions: list[ort.InferenceSession], feeds: Tensors, rows: int, seconds: float) -> float:
    """Each session in its own thread (onnxruntime lets go of the GIL), ``feeds`` back to back for ``seconds``
    after one unmeasured run each: their samples/s together."""
    for session in sessions:
        session.run(None, feeds)
    counts = [0] * len(sessions)
    start = time.perf_counter()
    stop = start + seconds

    def run(index: int) -> None:
        while time.perf_counter() < stop:
            sessions[index].run(None, feeds)
            counts[index] += rows

    with ThreadPoolExecutor(len(sessions)) as pool:
        list(pool.map(run, range(len(sessions))))
    return sum(counts) / (time.perf_counter() - start)


def raw_throughput(model: LoadedVersion, sample: Tensors, batch_sizes: tuple[int, ...] = (1, 8, 32, 64, 128),
                   seconds: float = 1.5) -> dict[str, float]:
    """Samples/s by arrangement: ``"8"`` one session on every core at batch 8, ``"8, 2x1 thread"`` two
    single-threaded sessions side by side (only batch 1 for a model that does not batch); onnxruntime's own
    defaults (spin on), the benchmark's own inputs. The best of these is what a server could reach with zero
    overhead. Side by side only while the sessions hold no more rows at once than the largest batch does alone:
    each keeps its batch's activations, and on a machine of many cores a big model's would not fit."""
    path = model.folder / MODEL_FILE
    cores = usable_cpus()
    one = cpu_session(path)
    per_core = [cpu_session(path, 1) for _ in range(cores)] if cores > 1 else []
    results: dict[str, float] = {}
    for batch in batch_sizes if model.policy.batching else (None,):
        feeds, rows = repeat_rows(sample, batch), batch or 1
        results[str(rows)] = samples_per_s(one, feeds, rows, seconds)
        if per_core and rows * cores <= max(batch_sizes):
            results[f"{rows}, {cores}x1 thread"] = side_by_side(per_core, feeds, rows, seconds)
    return results
