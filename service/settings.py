"""Service settings: every field from a ``nnserve serve`` flag or an ``NNSERVE_<FIELD>`` environment variable.

Built once per app and passed into ``create_app(settings)``; nothing reads the environment at import time.
Defaults are the ones measured best on a 2-core CPU machine (see docs/benchmarks.md).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.version_policy import VersionPolicy


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NNSERVE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = Field(8001, ge=0, description="the Open Inference Protocol over gRPC; 0 = off")
    grpc_server: Literal["nnserve", "grpcio"] = Field(
        "nnserve", description="which gRPC server: nnserve's own HTTP/2 front (service.hosting.grpc_calls) or "
        "grpcio's grpc.aio; both serve the same methods")
    grpc_max_connection_age_s: float = Field(
        0.0, ge=0, description="a gRPC connection older than this is asked to go (GOAWAY; its calls finish) so that "
        "clients reconnect, perhaps to another replica behind the same Service; 0 = never")
    grpc_max_message_bytes: int = Field(
        64 * 1024 * 1024, ge=4 * 1024 * 1024, description="largest gRPC message either way (gRPC's own default, "
        "4 MB, is less than a batch of 16 pictures of 3x224x224 FP32)")
    workers: int | None = Field(
        None, ge=1, description="server processes, each with every model; `nnserve serve` defaults to one per CPU "
        "this process may use (service.settings.default_workers); an app built directly is one process")
    repository: Path = Path("models")
    models: list[str] = Field(default_factory=list, description="serve only these models (default: all)")
    model_versions: dict[str, list[int]] = Field(
        default_factory=dict, description='pinned versions, e.g. {"cnn": [1, 2]}; default: the version policy'
    )
    version_policy: str = Field("latest:1", description="which versions of a model are served where its newest "
                                "config.json says nothing: latest[:N], all, specific:V[,V...]")
    repository_poll_s: float = Field(5.0, ge=0, description="how often the repository is checked for new, changed "
                                     "and removed versions; 0 = never (service.repository_sync)")
    control_dir: Path | None = Field(None, description="internal: the folder through which the processes of one "
                                     "server follow the repository API's orders (service.model_control)")

    providers: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int | None = Field(
        None, ge=0, description="onnxruntime threads per call; default: this process's share of the CPU cores "
        "(cores / workers); 0: onnxruntime decides")
    graph_optimization: Literal["auto", "all", "extended", "basic", "disable"] = "auto"
    spin_wait: bool = False
    lone_request_threads: int | None = Field(
        None, ge=0, description="onnxruntime threads of a request computed while nothing else computes (a second "
        "session per model, threads spinning while it is used; service.activity); default: every usable core; "
        "0 or 1: none")
    memory_arena: bool = Field(False, description="onnxruntime's CPU arena: no faster here, keeps peaks resident")
    memory_trim_interval_s: float = Field(
        1.0, ge=0, description="collect cyclic garbage this often, and hand freed memory back when an interval "
        "passed without calls (under unbroken load every 60 intervals); 0 = never (the garbage collector then "
        "runs on its own triggers, and glibc hands memory back its own way)")

    max_batch_size: int = Field(64, ge=1)
    allowed_batch_sizes: str = Field(
        "auto", description="the batch sizes a model runs at, "
        "a batch padded to the next (service.batch_sizes): auto (powers of two up to each model's max_batch_size "
        "on CUDA for model files up to 256 MiB, else any size) | any | a list such as 1,8,64")
    max_queue_delay_ms: float = Field(0.0, ge=0, description="longest wait for company; 0 = take what is queued")
    max_queue_size: int = Field(1024, ge=1, description="samples waiting per model before 429")
    batch_concurrency: int = Field(1, ge=1, description="batches of one model computing at once")
    event_loop_compute_ms: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="the longest batch (expected compute) a process runs in its "
        "event loop whatever is queued; default: 50 where each process's compute and event loop share one core (one "
        "onnxruntime thread, one batch at a time, a process per usable core: service.loading) and 1 while another "
        "model of the process is asked for too (service.traffic), else 0 (a lone quick request only); set, it holds "
        "whatever the traffic")
    compute_niceness: int = Field(
        0, ge=0, le=19, description="how much lower than the event loop the threads computing batches off the loop "
        "run (Linux's nice, per thread), for models whose compute shares a core with the loop: another model's "
        "requests are then read and answered at once, not after the batch computing on its core "
        "(service.compute_threads); 0 = the same")
    request_timeout_ms: float = Field(10_000, gt=0, description="a request still queued after this gets 504")
    warmup_batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 64])

    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_body_bytes_in_flight: int = Field(
        128 * 1024 * 1024, ge=1024, description="request bodies one process holds at once; a request over it gets "
        "429 (service.hosting.body_budget); at least --max-body-bytes")
    max_image_pixels: int = Field(4096 * 4096, ge=1)
    max_items_per_request: int = Field(256, ge=1)

    root_path: str = Field(
        "", pattern=r"^(/[A-Za-z0-9._~-]+)*$", description="the path prefix a proxy in front strips (uvicorn's "
        "root_path: e.g. /nnserve for an ingress serving https://host/nnserve/); the page at / and the OpenAPI "
        "docs build their links on it")
    admin_token: str | None = None
    log_level: str = "info"
    access_log: bool = True
    shared_memory: bool = Field(False, description="Triton's system shared memory extension, for clients on this "
                                "host (service.shared_memory); off: every region refused")
    drain_timeout_s: float = 30.0

    @model_validator(mode="after")
    def _budget_holds_a_body(self) -> Settings:
        if self.max_body_bytes_in_flight < self.max_body_bytes:
            raise ValueError(f"max_body_bytes_in_flight ({self.max_body_bytes_in_flight}) is smaller than "
                             f"max_body_bytes ({self.max_body_bytes}): a request of the largest size could never "
                             f"be admitted")
        return self

    @field_validator("allowed_batch_sizes")
    @classmethod
    def _sizes(cls, value: str) -> str:
        if not re.fullmatch(r"auto|any|[1-9][0-9]*(,[1-9][0-9]*)*", value):
            raise ValueError("expected auto, any, or batch sizes above 0 separated by commas, such as 1,8,64")
        return value

    @field_validator("version_policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        VersionPolicy.parse(value)
        return value

    def lone_threads(self) -> int:
        return self.lone_request_threads if self.lone_request_threads is not None else usable_cpus()

    def onnxruntime_threads(self) -> int:
        """The intra-op thread count: as set, or every core this process may use shared among the workers —
        one call with all of them measured faster than several calls with one each (docs/benchmarks.md)."""
        if self.intra_op_threads is not None:
            return self.intra_op_threads
        return max(1, usable_cpus() // (self.workers or 1))


CUDA_WORKERS = 4  # an H100's ResNet at c=64 served by 1, 2, 3, 4, 8 processes: 6.0k, 8.9k, 14.5k, 14.0k, 8.0k req/s
# More model file than this: one process on CUDA. Each process holds its own copies, up to 7 sessions of each
# model (service.batch_sizes): 4 x 7 x 128 MiB = 3.5 GiB of weights at most, within a 16 GB GPU.
CUDA_WORKERS_MODEL_BYTES = 128 * 1024 * 1024


def default_workers(providers: str, cpus: int, cuda_offered: bool, model_bytes: int = 0) -> int:
    """``nnserve serve``'s process count when none is given: one per CPU, because one process's event loop is the
    limit (at c=64 it keeps 55% of two cores busy on the MLP; docs/benchmarks.md). On CUDA the event loop is the
    limit too, once batches stop rebuilding their convolution plans (service.batch_sizes), but processes share one
    GPU and each holds its own copy of every model in GPU memory: ``CUDA_WORKERS`` (at most one per CPU) where the
    served model files (counted at start) add up to at most ``CUDA_WORKERS_MODEL_BYTES``, else one
    (docs/benchmarks.md)."""
    if providers == "cuda" or (providers == "auto" and cuda_offered):
        return max(1, min(CUDA_WORKERS, cpus)) if model_bytes <= CUDA_WORKERS_MODEL_BYTES else 1
    return max(1, cpus)


def cuda_offered() -> bool:
    """Whether onnxruntime here offers CUDA (onnxruntime-gpu installed; whether a GPU answers shows at load)."""
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a container's CPU quota (cgroup v2 ``cpu.max`` or
    v1 ``cpu.cfs_quota_us``), which the affinity does not show (a 2-CPU pod on a 32-core node)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def _cgroup_quota(root: Path) -> float | None:
    try:
        if (root / "cpu.max").exists():
            limit, period = (root / "cpu.max").read_text().split()[:2]
            return None if limit == "max" else int(limit) / int(period)
        limit_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if limit_us <= 0 else limit_us / period_us
    except (OSError, ValueError):
        return None
