"""``nnserve serve``: flags -> settings -> uvicorn. Flags win over ``NNSERVE_*`` environment variables."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.repository import newest_model_bytes
from service.settings import Settings, cuda_offered, default_workers, usable_cpus

log = logging.getLogger("nnserve")

FLAGS: list[tuple[str, type, str]] = [
    ("host", str, "address to bind (default 127.0.0.1; 0.0.0.0 in the container)"),
    ("port", int, "port (default 8000)"),
    ("grpc-port", int, "gRPC port, the Open Inference Protocol (default 8001; 0 turns gRPC off)"),
    ("grpc-server", str, "nnserve (default: nnserve's own HTTP/2 front) | grpcio (grpcio's grpc.aio server)"),
    ("grpc-max-connection-age-s", float, "ask a gRPC connection to go after this long, its calls finishing, so "
     "clients spread over replicas again (default 0: never)"),
    ("grpc-max-message-bytes", int, "largest gRPC message (default 64 MiB)"),
    ("workers", int, "server processes, each with every model (default: one per CPU this process may use, a "
     "container's CPU quota counted; on CUDA 4, at most one per CPU, or one where the models' files add up to more "
     "than 128 MiB: each process holds its own copies in GPU memory)"),
    ("repository", str, "model repository folder (default models/)"),
    ("repository-poll-s", float, "check the repository for new, changed and removed versions this often "
     "(default 5; 0 = never)"),
    ("version-policy", str, "versions served where a model's config says nothing: latest[:N] | all | "
     "specific:V[,V...] (default latest:1)"),
    ("providers", str, "execution providers: auto | cpu | cuda (default auto)"),
    ("intra-op-threads", int, "onnxruntime threads per call (default: CPU cores / workers)"),
    ("lone-request-threads", int, "onnxruntime threads of a request computed while nothing else is: a second "
     "session per model whose threads spin while used (default: every usable core; 0: none)"),
    ("graph-optimization", str, "auto | all | extended | basic | disable (default auto: measured at load)"),
    ("max-batch-size", int, "largest batch per onnxruntime call (default 64)"),
    ("allowed-batch-sizes", str, "batch sizes a model runs at, a batch padded to the next, each size on a session "
     "of its own: auto | any | a list such as 1,8,64 (default auto: powers of two up to each model's max batch size "
     "where it runs on CUDA, whose convolutions rebuild their plans on every new shape, and its file is at most "
     "256 MiB; any size otherwise)"),
    ("max-queue-delay-ms", float, "longest wait for a batch to fill (default 0: never wait)"),
    ("max-queue-size", int, "queued samples per model before 429 (default 1024)"),
    ("batch-concurrency", int, "batches of one model computing at once (default 1)"),
    ("event-loop-compute-ms", float, "the longest batch a process computes in its event loop whatever is queued "
     "(default: 50 where each process's compute and loop share one core, the default on the CPU, 1 while another "
     "model of the process is asked for too; else 0: a lone quick request only)"),
    ("compute-niceness", int, "how much lower (Linux nice, 0-19) than the event loop the threads computing batches "
     "off the loop run, where a model's compute and the loop share a core (the CPU default): another model's "
     "requests are read and answered without waiting for a batch to finish; a busy program at normal priority in "
     "the same container or session then slows those batches down (default 0: the same priority)"),
    ("request-timeout-ms", float, "queued longer than this -> 504 (default 10000)"),
    ("max-body-bytes", int, "request body limit (default 16 MiB)"),
    ("max-body-bytes-in-flight", int, "request bodies held at once per process before 429 (default 128 MiB)"),
    ("max-image-pixels", int, "uploaded picture limit in pixels (default 4096*4096)"),
    ("root-path", str, "path prefix a proxy in front strips, e.g. /nnserve (default: none)"),
    ("admin-token", str, "bearer token of the /v2/repository API (default: API disabled)"),
    ("log-level", str, "debug | info | warning (default info)"),
]


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    for name, kind, text in FLAGS:
        parser.add_argument(f"--{name}", type=kind, default=None, help=text)
    parser.add_argument("--model", action="append", default=None, metavar="NAME[:VERSION]",
                        help="serve only this model (repeatable); NAME:V pins a version")
    parser.add_argument("--no-access-log", action="store_true", help="no JSON line per request")
    parser.add_argument("--shared-memory", action="store_true",
                        help="take Triton's system shared memory extension from clients on this host (default: off)")
    parser.add_argument("--worker-of", type=int, default=None, help=argparse.SUPPRESS)  # --workers' children


def apply_flags(args: argparse.Namespace) -> None:
    """Turn given flags into NNSERVE_* variables, so worker processes build the same Settings."""
    for name, _, _ in FLAGS:
        value = getattr(args, name.replace("-", "_"), None)
        if value is not None:
            os.environ[f"NNSERVE_{name.replace('-', '_').upper()}"] = str(value)
    if args.model:
        names: list[str] = []
        pins: dict[str, list[int]] = {}
        for spec in args.model:
            name, _, version = spec.partition(":")
            names.append(name)
            if version:
                pins.setdefault(name, []).append(int(version))
        os.environ["NNSERVE_MODELS"] = json.dumps(sorted(set(names)))
        if pins:
            os.environ["NNSERVE_MODEL_VERSIONS"] = json.dumps(pins)
    if args.no_access_log:
        os.environ["NNSERVE_ACCESS_LOG"] = "false"
    if args.shared_memory:
        os.environ["NNSERVE_SHARED_MEMORY"] = "true"


def prepare_multiprocess_metrics() -> None:
    """Workers share metrics through files in PROMETHEUS_MULTIPROC_DIR: a fresh, empty folder per server."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="nnserve-metrics-")


def http_protocol(max_body_bytes: int) -> Any:
    """uvicorn's httptools protocol with coalesced writes, whole bodies read at once, large ones straight into one
    buffer (service.hosting.http_protocol); uvicorn's choice without httptools."""
    try:
        from service.hosting.http_protocol import DirectBodyHttpProtocol, read_whole_bodies
    except ImportError:
        return "auto"
    read_whole_bodies(max_body_bytes)
    return DirectBodyHttpProtocol


def uvicorn_config(settings: Settings) -> Any:
    import uvicorn

    return uvicorn.Config(
        "service.app:app_from_environment", factory=True, host=settings.host, port=settings.port,
        log_level=settings.log_level, access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
        loop="auto", http=http_protocol(settings.max_body_bytes), root_path=settings.root_path,
    )


def settings_problem(error: ValidationError) -> str:
    """``nnserve serve``'s refusal of bad settings: each named as its flag (and its variable), what came, and why."""
    lines = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "settings"
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(f"--{field.replace('_', '-')} (NNSERVE_{field.upper()}): {message}; got {problem['input']!r}")
    return "nnserve serve: " + "\n  ".join(lines)


def serve(args: argparse.Namespace) -> int:
    from service.hosting.uvicorn_server import NNServeServer
    from service.hosting.workers import serve_group, serve_worker

    apply_flags(args)
    try:
        settings = Settings()
    except ValidationError as error:
        raise SystemExit(settings_problem(error)) from None
    if args.worker_of is not None:  # one of the processes of `--workers N`
        return serve_worker(args.worker_of, settings, uvicorn_config(settings))
    if settings.workers is None:  # resolved once, here, so every process splits the cores the same way
        cpus, cuda = usable_cpus(), cuda_offered()
        model_bytes = newest_model_bytes(settings.repository, settings.models) if cuda else 0
        os.environ["NNSERVE_WORKERS"] = str(default_workers(settings.providers, cpus, cuda, model_bytes))
        settings = Settings()
    if (settings.workers or 1) > 1:
        prepare_multiprocess_metrics()  # before anything imports prometheus_client (it reads this at import)
    from service.app import configure_logging

    configure_logging(settings.log_level)
    log.info("nnserve: %d serving process(es), %d onnxruntime thread(s) each (%d CPU(s) usable here%s)",
             settings.workers or 1, settings.onnxruntime_threads(), usable_cpus(),
             "; CUDA offered" if settings.providers != "cpu" and cuda_offered() else "")
    if (settings.workers or 1) > 1:
        return serve_group(settings, uvicorn_config(settings))
    NNServeServer(uvicorn_config(settings)).run()
    return 0
