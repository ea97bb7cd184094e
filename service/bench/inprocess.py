"""The ceiling: raw in-process onnxruntime throughput of the same model on the same machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.manifest import Manifest


def raw_throughput(folder: Path, batch_sizes: tuple[int, ...] = (1, 8, 32, 64, 128), seconds: float = 1.5,
                   threads: int | None = None) -> dict[int, float]:
    """Samples/s at each batch size: one session, all cores, onnxruntime's own defaults (spin on), real data
    shapes; the best of these is what a server could reach with zero overhead."""
    manifest = Manifest.load(folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    results = {}
    for batch in batch_sizes:
        feeds = {}
        for spec in manifest.inputs:
            shape = [batch if i == 0 else (20 if d == -1 else d) for i, d in enumerate(spec.shape)]
            feeds[spec.name] = np.full(shape, 20, np.int64) if spec.dtype == "int64" else \
                rng.normal(size=shape).astype(np.float32)
        session.run(None, feeds)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, feeds)
            count += batch
        results[batch] = count / (time.perf_counter() - start)
    return results
