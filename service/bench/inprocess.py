"""The ceiling: raw in-process onnxruntime throughput of the same model on the same machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.backends import Tensors
from service.loading import LoadedVersion
from service.repository import MODEL_FILE


def cpu_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """One session on all cores (or ``threads``), graph optimisation ALL, onnxruntime's own defaults (spin on)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
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


def raw_throughput(model: LoadedVersion, sample: Tensors, batch_sizes: tuple[int, ...] = (1, 8, 32, 64, 128),
                   seconds: float = 1.5, threads: int | None = None) -> dict[int, float]:
    """Samples/s at each batch size (only 1 for a model that does not batch): one session, all cores,
    onnxruntime's own defaults (spin on), the benchmark's own inputs; the best of these is what a server could
    reach with zero overhead."""
    session = cpu_session(model.folder / MODEL_FILE, threads)
    if not model.policy.batching:
        return {1: samples_per_s(session, repeat_rows(sample, None), 1, seconds)}
    return {batch: samples_per_s(session, repeat_rows(sample, batch), batch, seconds) for batch in batch_sizes}
