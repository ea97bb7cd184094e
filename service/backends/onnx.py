"""The onnxruntime backend: execution providers, threads, graph optimisation, the file's signature, ``run``.

Providers: ``cpu``; ``cuda`` (fails at start-up, naming what is missing, unless CUDA is really active after the
session is created — onnxruntime itself would fall back to the CPU silently); ``auto`` (CUDA when onnxruntime-gpu
and a GPU are present, else CPU). What is active is read back from the session, never assumed.

Graph optimisation ``auto`` keeps the faster of ``all`` and ``basic`` on the model's own warm-up feeds (``all``
was 2.8x faster on the ResNet, slower on the MLP at large batches). String tensors go in as ``str`` (onnxruntime
would turn a ``bytes`` element into the text ``"b'...'"``) and come back as ``bytes``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.backends import RuntimeOptions, Tensors
from service.datatypes import ORT_TYPES
from service.signature import Dim, GraphSignature, GraphTensor

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# cuDNN's exhaustive search for the fastest convolution runs again for every new input shape, and a dynamic batcher
# makes a new shape of every batch size: served on an H200, the ResNet at c=64 fell to 136 req/s (p50 463 ms) while
# batches of sizes not met before searched. Its heuristic choice costs nothing per shape (docs/benchmarks.md).
PROVIDER_OPTIONS: dict[str, dict[str, str]] = {"CUDAExecutionProvider": {"cudnn_conv_algo_search": "HEURISTIC"}}
TUNING_BUDGET_S = 0.3  # per candidate level: enough repeats to rank them, bounded for large models


class ProviderUnavailable(RuntimeError):
    """The requested execution provider cannot run here."""


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
    so.log_severity_level = 4  # its errors reach the caller in the exception; no second copy on stderr
    return so


def _dim(value: Any) -> Dim:
    if isinstance(value, int):
        return value if value >= 0 else None
    return value if isinstance(value, str) and value else None


def _tensor(arg: Any) -> GraphTensor:
    datatype = ORT_TYPES.get(arg.type, "")
    shape = arg.shape if isinstance(arg.shape, list) else []
    return GraphTensor(arg.name, datatype, tuple(_dim(d) for d in shape), "" if datatype else str(arg.type))


def read_signature(session: ort.InferenceSession) -> GraphSignature:
    meta = session.get_modelmeta()
    return GraphSignature(
        inputs=tuple(_tensor(i) for i in session.get_inputs()),
        outputs=tuple(_tensor(o) for o in session.get_outputs()),
        metadata=dict(meta.custom_metadata_map),
    )


class OnnxBackend:
    def __init__(self, path: Path, options: RuntimeOptions) -> None:
        self.path = path
        self.options = options
        self._providers = requested_providers(options.providers)
        self.graph_optimization = "all" if options.graph_optimization == "auto" else options.graph_optimization
        self.session = self._create(self.graph_optimization)
        self.providers: list[str] = self.session.get_providers()
        self.alone = self._create_alone()
        self._sized: dict[int, ort.InferenceSession] = {}  # batch size -> its own session (pin_batch_sizes)
        self.signature = read_signature(self.session)
        self._strings_in = [t.name for t in self.signature.inputs if t.datatype == "BYTES"]
        self._strings_out = [t.name for t in self.signature.outputs if t.datatype == "BYTES"]
        self._output_names = [t.name for t in self.signature.outputs]

    def _create(self, level: str) -> ort.InferenceSession:
        session = ort.InferenceSession(str(self.path), session_options(self.options, level),
                                       providers=[(p, PROVIDER_OPTIONS.get(p, {})) for p in self._providers])
        active = session.get_providers()
        if self.options.providers == "cuda" and (not active or active[0] != CUDA):
            raise ProviderUnavailable(
                f"providers=cuda: onnxruntime offers CUDA but the session came up on {active} "
                f"(CUDA/cuDNN libraries missing or no GPU visible); refusing to fall back silently"
            )
        return session

    def _create_alone(self) -> ort.InferenceSession | None:
        """The lone request's session (``service.activity``): every core, threads spinning while it runs and
        ~20 ms after (onnxruntime's defaults; the ResNet at batch 1 took 0.30 ms so against 0.44 ms on one thread,
        the MLP 0.04 against 0.09 ms). None where it would run as the batch session does, or on CUDA."""
        options = self.options
        if options.lone_threads < 2 or self.providers[0] != CPU or (
                options.spin_wait and options.intra_op_threads in (0, options.lone_threads)):
            return None
        alone = dataclasses.replace(options, intra_op_threads=options.lone_threads, spin_wait=True)
        return ort.InferenceSession(str(self.path), session_options(alone, self.graph_optimization),
                                    providers=[CPU])

    def tune(self, feeds: Tensors) -> None:
        if self.options.graph_optimization != "auto":
            return
        candidates = {"all": self.session, "basic": self._create("basic")}
        timings = {level: self._time(session, feeds) for level, session in candidates.items()}
        self.graph_optimization = min(timings, key=lambda level: timings[level])
        self.session = candidates[self.graph_optimization]
        if self.alone is not None and self.graph_optimization != "all":
            self.alone = self._create_alone()

    def _time(self, session: ort.InferenceSession, feeds: Tensors) -> float:
        feeds = self._ort_feeds(feeds)
        session.run(None, feeds)
        runs, start = 0, time.perf_counter()
        while runs < 2 or (runs < 8 and time.perf_counter() - start < TUNING_BUDGET_S):
            session.run(None, feeds)
            runs += 1
        return (time.perf_counter() - start) / runs

    def _ort_feeds(self, feeds: Tensors) -> Tensors:
        if not self._strings_in:
            return feeds
        out = dict(feeds)
        for name in self._strings_in:
            out[name] = np.vectorize(bytes.decode, otypes=[object])(feeds[name]) if feeds[name].size else \
                feeds[name].astype(object)
        return out

    @property
    def runs_alone(self) -> bool:
        return self.alone is not None

    def pin_batch_sizes(self, sizes: tuple[int, ...]) -> None:
        self._sized = {size: self.session if size == sizes[-1] else self._create(self.graph_optimization)
                       for size in sizes}

    def run(self, feeds: Tensors) -> Tensors:
        if self._sized:
            first = next(iter(feeds.values()))
            return self._run(self._sized.get(first.shape[0] if first.ndim else 0, self.session), feeds)
        return self._run(self.session, feeds)

    def run_alone(self, feeds: Tensors) -> Tensors:
        return self._run(self.alone or self.session, feeds)

    def _run(self, session: ort.InferenceSession, feeds: Tensors) -> Tensors:
        results = session.run(self._output_names, self._ort_feeds(feeds))
        outputs = dict(zip(self._output_names, results, strict=True))
        for name in self._strings_out:
            array = np.asarray(outputs[name], dtype=object)
            outputs[name] = np.vectorize(str.encode, otypes=[object])(array) if array.size else array
        return outputs

    def describe(self) -> dict[str, Any]:
        return {"providers": self.providers, "graph_optimization": self.graph_optimization,
                "intra_op_threads": self.options.intra_op_threads,
                "lone_request_threads": self.options.lone_threads if self.alone is not None else 0,
                "memory_arena": self.options.memory_arena, "batch_size_sessions": sorted(self._sized)}

    def close(self) -> None:
        del self.session
        self.alone = None
        self._sized = {}
