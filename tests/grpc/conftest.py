"""One real ``nnserve serve`` with gRPC on for the session, over the built-in models and imported ones (every
datatype, FP16, a model that cannot batch)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.hosting.launcher import free_port, serve_subprocess
from service.importer import ImportOptions, import_model
from tests.imported.signatures import all_types, fp16, state_second_axis


@dataclass
class GrpcServer:
    url: str  # HTTP
    target: str  # gRPC, host:port
    repository: Path
    log: Path


@pytest.fixture(scope="session")
def grpc_repository(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("grpc") / "models"
    for family in ("mlp", "lstm", "resnet"):
        shutil.copytree(models_dir / family, root / family)
    for name, build in (("all-types", all_types), ("fp16", fp16), ("state-second-axis", state_second_axis)):
        source = root.parent / f"{name}.onnx"
        build(source)
        import_model(source, ImportOptions(name=name, repository=root))
    return root


@pytest.fixture(scope="session")
def grpc_server(grpc_repository: Path) -> Iterator[GrpcServer]:
    port = free_port()
    # One process: the deadline and cancellation tests fill one queue and read one batcher's counts.
    args = ["--grpc-port", str(port), "--admin-token", "secret", "--request-timeout-ms", "5000", "--workers", "1"]
    with serve_subprocess(grpc_repository, args, env={"NNSERVE_WARMUP_BATCH_SIZES": "[1]"}) as (url, _, log):
        yield GrpcServer(url, f"127.0.0.1:{port}", grpc_repository, log)
