"""One real ``nnserve serve`` with gRPC on for the session, over the built-in models and imported ones (every
datatype, FP16, a model that cannot batch)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.hosting.launcher import free_port, serve_subprocess
from service.importer import ImportOptions, import_model
from tests.imported.signatures import all_types, fp16, state_second_axis
from tests.service.conftest import metric_value


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
    args = ["--grpc-port", str(port), "--admin-token", "secret", "--request-timeout-ms", "5000", "--workers", "1",
            "--shared-memory"]
    with serve_subprocess(grpc_repository, args, env={"NNSERVE_WARMUP_BATCH_SIZES": "[1]"}) as (url, _, log):
        yield GrpcServer(url, f"127.0.0.1:{port}", grpc_repository, log)


HEAVY_JSON = json.dumps({"model": "resnet", "inputs": [[[0] * 28] * 28] * 64}).encode()  # 64 rows, encoded once


async def queue_resnet_work(http: httpx.AsyncClient, url: str, posts: int, rows: int
                            ) -> list[asyncio.Task[httpx.Response]]:
    """``posts`` requests of 64 ResNet rows each over HTTP, returned once at least ``rows`` of them wait in the
    server's queue (read from its metrics): what a test then sends is sure to queue behind that much work, however
    busy the machine."""
    load = [asyncio.ensure_future(http.post("/predict", content=HEAVY_JSON,
                                            headers={"content-type": "application/json"})) for _ in range(posts)]
    deadline = time.monotonic() + 30
    while metric_value(httpx.get(f"{url}/metrics").text, "nnserve_queue_depth", model="resnet") < rows:
        assert time.monotonic() < deadline, f"{rows} rows never waited in the queue"
        await asyncio.sleep(0.005)
    return load
