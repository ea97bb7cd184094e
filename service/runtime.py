"""One onnxruntime session: execution providers, threads, graph optimisation, ``run``, warm-up.

Providers: ``cpu``; ``cuda`` (fails at start-up, naming what is missing, unless CUDA is really active after the
session is created — onnxruntime itself would fall back to the CPU silently); ``auto`` (CUDA when onnxruntime-gpu
and a GPU are present, else CPU). What is active is read back from the session, never assumed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.manifest import TensorSpec

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ProviderUnavailable(RuntimeError):
    """The requested execution provider cannot run here."""


@dataclass(frozen=True)
class RuntimeOptions:
    providers: str = "auto"
    intra_op_threads: int = 1
    graph_optimization: str = "auto"
    spin_wait: bool = False
    memory_arena: bool = False


def requested_providers(choice: str) -> list[str]:
    available = ort.get_available_providers()
    if choice == "cpu":
        return [CPU]
    if choice == "cuda":
        if CUDA not in available:
            raise ProviderUnavailable(
                f"providers=cuda, but this onnxruntime ({ort.__version__}, package "
                f"{'onnxruntime-gpu' if 'gpu' in ort.get_device().lower() else 'onnxruntime'}) offers only "
                f"{available}: install onnxruntime-gpu and run on a machine with an NVIDIA GPU, or use "
                f"providers=cpu"
            )
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in available else [CPU]


def session_options(options: RuntimeOptions, level: str) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = _LEVELS[level]
    # Spin-waiting burns the core the HTTP side needs (../PERF-NOTES: p99 700 ms -> 61 ms with it off).
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spin_wait else "0")
    # The arena keeps each session's peak (batch 64 activations) resident for good; measured no faster here.
    so.enable_cpu_mem_arena = options.memory_arena
    so.log_severity_level = 3
    return so


class Runtime:
    def __init__(self, path: Path, inputs: list[TensorSpec], options: RuntimeOptions) -> None:
        self.path = path
        self.inputs = inputs
        self.options = options
        providers = requested_providers(options.providers)
        levels = ["all", "basic"] if options.graph_optimization == "auto" else [options.graph_optimization]
        sessions = {level: self._create(providers, level) for level in levels}
        self.graph_optimization = min(sessions, key=lambda lv: self._time(sessions[lv])) if len(levels) > 1 \
            else levels[0]
        self.session = sessions[self.graph_optimization]
        self.providers: list[str] = self.session.get_providers()
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _create(self, providers: list[str], level: str) -> ort.InferenceSession:
        session = ort.InferenceSession(str(self.path), session_options(self.options, level), providers=providers)
        active = session.get_providers()
        if self.options.providers == "cuda" and (not active or active[0] != CUDA):
            raise ProviderUnavailable(
                f"providers=cuda: onnxruntime offers CUDA but the session came up on {active} "
                f"(CUDA/cuDNN libraries missing or no GPU visible); refusing to fall back silently"
            )
        return session

    def example(self, batch: int, time_steps: int = 16) -> dict[str, np.ndarray]:
        """Zero-valued feeds for warm-up and timing (valid lengths for sequence models)."""
        feeds: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            shape = [batch if i == 0 else (time_steps if d == -1 else d) for i, d in enumerate(spec.shape)]
            if spec.dtype == "int64":
                feeds[spec.name] = np.full(shape, time_steps, dtype=np.int64)
            else:
                feeds[spec.name] = np.zeros(shape, dtype=np.float32)
        return feeds

    def _time(self, session: ort.InferenceSession, batch: int = 32, repeats: int = 8) -> float:
        feeds = self.example(batch)
        session.run(None, feeds)
        start = time.perf_counter()
        for _ in range(repeats):
            session.run(None, feeds)
        return time.perf_counter() - start

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feeds)  # type: ignore[no-any-return]

    def warmup(self, batch_sizes: list[int]) -> None:
        for batch in batch_sizes:
            self.run(self.example(batch))
