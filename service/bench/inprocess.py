"""The ceiling: raw in-process onnxruntime throughput of the same model on the same machine."""

from __future__ import annotations

import os
import time

import numpy as np
import onnxruntime as ort

from service.backends import Tensors
from service.loading import LoadedVersion
from service.repository import MODEL_FILE


def raw_throughput(model: LoadedVersion, sample: Tensors, batch_sizes: tuple[int, ...] = (1, 8, 32, 64, 128),
                   seconds: float = 1.5, threads: int | None = None) -> dict[int, float]:
    """Samples/s at each batch size (only 1 for a model that does not batch): one session, all cores,
    onnxruntime's own defaults (spin on), the benchmark's own inputs; the best of these is what a server could
    reach with zero overhead."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model.folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])
    batching = model.policy.batching
    results = {}
    for batch in batch_sizes if batching else (1,):
        feeds = {name: np.repeat(array, batch, axis=0) if batching else array for name, array in sample.items()}
        feeds = {name: a.astype(str) if a.dtype == object else a for name, a in feeds.items()}
        session.run(None, feeds)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, feeds)
            count += batch
        results[batch] = count / (time.perf_counter() - start)
    return results
