"""Loading one version folder: its file checked against its sha256, its backend built, its config completed from
the graph and checked, the batching decided (and probed), the model warmed up. The registry serves what this
returns; ``nnserve import`` runs the same function on a version before publishing it, so a file it publishes is
one the server will load.

Batching: a config's ``max_batch_size`` is obeyed (and a model that does not keep one output row per input row at
batch sizes 1 and 3 is refused). Left out, a model batches, up to the server's ``--max-batch-size``, when every
input and output has an open first axis and that probe passes; otherwise it runs one request at a time, and
``BatchPolicy.reason`` says why.

Where the model's compute and the event loop share one core anyway (one onnxruntime thread, one batch at a time,
as many server processes as usable cores, on the CPU: ``nnserve serve``'s default), its batches of up to
``INLINE_SATURATED_S`` of compute run in the event loop (``BatchPolicy.inline_s``; ``service.batcher``), while no
other model of the process is being asked for (``service.traffic``); ``--event-loop-compute-ms`` sets that bound
for every model instead, and a model's own ``batching.event_loop_compute_ms`` for that model, whatever the traffic.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from service.backends import PLATFORMS, Backend, RuntimeOptions, build_backend
from service.backends.onnx import CPU, CUDA, ProviderUnavailable
from service.batch_sizes import allowed_batch_sizes
from service.batcher import INLINE_MAX_S
from service.config import DEFAULT_PLATFORM, ModelConfig, RuntimeConfig, read_config_file
from service.config_from_graph import ConfigError, batch_blocker, complete_config
from service.errors import ModelLoadFailed
from service.report import TrainingReport
from service.repository import MODEL_FILE, model_bytes, sha256_of
from service.samples import SampleIndex
from service.settings import Settings, usable_cpus
from service.warmup import batching_problem, describe_feeds, example_feeds


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int  # 0: one request at a time
    max_queue_delay_s: float
    max_queue_size: int
    concurrency: int
    timeout_s: float
    reason: str  # how it was decided
    inline_s: float = 0.0  # the longest batch computed in the event loop whatever is queued (module doc)
    batch_sizes: tuple[int, ...] = ()  # the sizes batches are padded to, each its own session (service.batch_sizes)
    inline_mixed_s: float = 0.0  # inline_s while other models of the process are asked for (service.traffic)
    compute_niceness: int = 0  # how much lower than the loop its batches off the loop compute (compute_threads)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0


@dataclass(eq=False)
class LoadedVersion:
    config: ModelConfig
    report: TrainingReport | None
    backend: Backend
    policy: BatchPolicy
    folder: Path
    load_seconds: float
    warmup: str  # the warm-up feeds' shapes, for the import's summary
    samples: SampleIndex | None = None


def runtime_options(settings: Settings, overrides: RuntimeConfig) -> RuntimeOptions:
    threads = overrides.intra_op_threads if overrides.intra_op_threads is not None else settings.onnxruntime_threads()
    lone = overrides.lone_request_threads if overrides.lone_request_threads is not None else \
        settings.lone_threads()
    return RuntimeOptions(settings.providers, threads, overrides.graph_optimization or settings.graph_optimization,
                          settings.spin_wait,
                          settings.memory_arena if overrides.memory_arena is None else overrides.memory_arena, lone)


def load_version(folder: Path, name: str, version: int, settings: Settings) -> LoadedVersion:
    start = time.perf_counter()
    where = f"model '{name}' version {version}"
    try:
        raw = read_config_file(folder)
        overrides = RuntimeConfig.model_validate(raw.get("runtime", {}))
        report = TrainingReport.load(folder)
        samples = SampleIndex.load(folder)
    except (OSError, ValueError, ValidationError) as error:
        raise ModelLoadFailed(f"{where}: bad config.json, report.json or samples/index.json: {error}") from error
    platform = raw.get("platform", DEFAULT_PLATFORM)
    if not isinstance(platform, str) or platform not in PLATFORMS:
        raise ModelLoadFailed(f"{where}: platform {platform!r} is not one of {list(PLATFORMS)}")
    sha = sha256_of(folder / MODEL_FILE)
    if raw.get("sha256") not in (None, sha):
        raise ModelLoadFailed(f"{where}: model.onnx sha256 {sha} does not match the config's {raw['sha256']}")
    try:
        backend = build_backend(platform, folder / MODEL_FILE, runtime_options(settings, overrides))
    except ProviderUnavailable:
        raise
    except Exception as error:  # onnxruntime raises its own types for a broken graph
        raise ModelLoadFailed(f"{where}: onnxruntime cannot load model.onnx: {error}") from error
    try:
        config = complete_config(raw, backend.signature, name=name, version=version, sha256=sha)
    except ConfigError as error:
        raise ModelLoadFailed(f"{where}: {error}") from error
    policy = _decide_batching(backend, config, settings, where, model_bytes(folder))
    signature = backend.signature
    shapes = describe_feeds(example_feeds(config, signature, 1))
    try:
        feeds = example_feeds(config, signature, min(32, policy.max_batch_size) or 1)
        shapes = describe_feeds(feeds)
        backend.tune(feeds)
        _pin_batch_sizes(backend, policy, where)
        for rows in _warmup_sizes(settings, policy):
            feeds = example_feeds(config, signature, rows)
            shapes = describe_feeds(feeds)
            backend.run(feeds)
        if backend.runs_alone:
            feeds = example_feeds(config, signature, 1)
            shapes = describe_feeds(feeds)
            for _ in range(2):
                backend.run_alone(feeds)
    except ModelLoadFailed:
        raise
    except Exception as error:
        raise _warmup_failed(where, shapes, error) from error
    return LoadedVersion(config, report, backend, policy, folder, time.perf_counter() - start,
                         describe_feeds(example_feeds(config, signature, 1)), samples)


def _decide_batching(backend: Backend, config: ModelConfig, settings: Settings, where: str,
                     model_bytes: int) -> BatchPolicy:
    size, reason = config.max_batch_size, "max_batch_size in config.json"
    if size is None:
        blocker = batch_blocker(config)
        size, reason = (0, blocker) if blocker else (settings.max_batch_size, "every tensor has an open first axis")
    if size:
        try:
            problem = batching_problem(backend, config, backend.signature)
        except Exception as error:
            raise _warmup_failed(where, describe_feeds(example_feeds(config, backend.signature, 1)), error) from error
        if problem and config.max_batch_size:
            raise ModelLoadFailed(f"{where}: max_batch_size is {config.max_batch_size} but the model does not "
                                  f"batch on its first axis: {problem}")
        if problem:
            size, reason = 0, f"the first axis is not a batch axis: {problem}"
    b = config.batching
    concurrency = b.concurrency or settings.batch_concurrency
    shares_a_core = _shares_a_core(backend, concurrency, settings)
    inline_s, inline_mixed_s = _inline_bounds(shares_a_core, settings, b.event_loop_compute_ms)
    try:
        sizes = allowed_batch_sizes(b.allowed_batch_sizes, settings.allowed_batch_sizes, size,
                                    backend.describe().get("providers", [])[:1] == [CUDA], model_bytes,
                                    own_max=config.max_batch_size is not None)
    except ValueError as error:
        raise ModelLoadFailed(f"{where}: {error}") from error
    return BatchPolicy(
        max_batch_size=size,
        max_queue_delay_s=(b.max_queue_delay_ms if b.max_queue_delay_ms is not None else
                           settings.max_queue_delay_ms) / 1000,
        max_queue_size=b.max_queue_size or settings.max_queue_size,
        concurrency=concurrency,
        timeout_s=(b.request_timeout_ms or settings.request_timeout_ms) / 1000,
        reason=reason,
        inline_s=inline_s,
        inline_mixed_s=inline_mixed_s,
        batch_sizes=sizes,
        compute_niceness=settings.compute_niceness if shares_a_core else 0,
    )


INLINE_SATURATED_S = 0.05  # how long other requests of a process may wait for a batch computing in its loop


def _inline_bounds(shares_a_core: bool, settings: Settings, own_ms: float | None) -> tuple[float, float]:
    """The longest batch computed in the event loop, and the same while other models of the process are asked for:
    the model's config, else ``--event-loop-compute-ms``, both as given; else the default where the core is shared,
    and while other models are asked for no more than a lone quick request's (``service.traffic``)."""
    given = own_ms if own_ms is not None else settings.event_loop_compute_ms
    if given is not None:
        return given / 1000, given / 1000
    bound = INLINE_SATURATED_S if shares_a_core else 0.0
    return bound, min(bound, INLINE_MAX_S)


def _shares_a_core(backend: Backend, concurrency: int, settings: Settings) -> bool:
    """Whether the model's compute and the event loop of a process share one core's worth of CPU (module doc)."""
    runtime = backend.describe()
    return runtime.get("providers", [CUDA])[:1] == [CPU] and runtime.get("intra_op_threads") == 1 and \
        concurrency == 1 and (settings.workers or 1) >= usable_cpus()


def _pin_batch_sizes(backend: Backend, policy: BatchPolicy, where: str) -> None:
    if not policy.batch_sizes:
        return
    try:
        backend.pin_batch_sizes(policy.batch_sizes)
    except Exception as error:  # out of GPU memory, most likely
        raise ModelLoadFailed(
            f"{where}: could not create a session for each allowed batch size {list(policy.batch_sizes)}: "
            f"{str(error).strip()[:600]} — allow fewer sizes (batching.allowed_batch_sizes in config.json, "
            f"--allowed-batch-sizes), or 'any' for one session") from error


def _warmup_sizes(settings: Settings, policy: BatchPolicy) -> list[int]:
    """Each allowed batch size where there are some (each its own session, whose plans are built on its first run:
    ~34 ms for the ResNet on CUDA; service.batch_sizes), else the server's warm-up sizes."""
    if not policy.batching:
        return [1]
    if policy.batch_sizes:
        return list(policy.batch_sizes)
    return sorted({min(b, policy.max_batch_size) for b in settings.warmup_batch_sizes}) or [1]


def _warmup_failed(where: str, shapes: str, error: Exception) -> ModelLoadFailed:
    return ModelLoadFailed(
        f"{where}: a warm-up inference with inputs {shapes} failed: {str(error).strip()[:600]} — give sizes that "
        f"suit the model for its open axes, or values for its inputs, in config.json's \"warmup\", e.g. "
        + json.dumps({"warmup": {"INPUT": {"shape": [1, 16000]}, "OTHER_INPUT": {"value": 16000}}}))
