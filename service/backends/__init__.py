"""Backends: what runs a model file. The registry builds the one a model's config names (``platform``); a new
runtime is one module here and one entry in ``PLATFORMS`` (``service.loading`` refuses a platform not in it).

A backend reads its file's signature, runs a batch of named numpy tensors (``BYTES`` tensors as object arrays of
``bytes``, whatever the runtime wants inside) and returns every output by name, describes how it runs (execution
providers, threads...) for metadata, and lets go of its resources on ``close``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from service.signature import GraphSignature

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class RuntimeOptions:
    providers: str = "auto"
    intra_op_threads: int = 1
    graph_optimization: str = "auto"
    spin_wait: bool = False
    memory_arena: bool = False
    lone_threads: int = 0  # threads of the session a lone request runs on (< 2: no such session)


class Backend(Protocol):
    signature: GraphSignature

    def run(self, feeds: Tensors) -> Tensors: ...

    @property
    def runs_alone(self) -> bool:
        """Whether ``run_alone`` differs from ``run``."""

    def run_alone(self, feeds: Tensors) -> Tensors:
        """Run ``feeds`` while nothing else computes on this machine's cores (``service.activity``): with every
        core, threads spinning, where the backend can."""

    def tune(self, feeds: Tensors) -> None:
        """Choose among equivalent ways to run (e.g. graph optimisation levels) by timing ``feeds``."""

    def pin_batch_sizes(self, sizes: tuple[int, ...]) -> None:
        """Run each of these batch sizes on its own session from now on, the largest on the current one: where a
        runtime keeps per-shape state of the last shape only (service.batch_sizes)."""

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def onnxruntime_backend(path: Path, options: RuntimeOptions) -> Backend:
    from service.backends.onnx import OnnxBackend

    return OnnxBackend(path, options)


@dataclass(frozen=True)
class Platform:
    backend: str  # Triton's name for the backend that runs this platform (its model configuration's ``backend``)
    build: Callable[[Path, RuntimeOptions], Backend]


PLATFORMS: dict[str, Platform] = {"onnxruntime_onnx": Platform("onnxruntime", onnxruntime_backend)}


def build_backend(platform: str, path: Path, options: RuntimeOptions) -> Backend:
    return PLATFORMS[platform].build(path, options)
