"""An in-process app (lifespan running) over the committed model repository, real images and sequences."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.settings import Settings
from training.data import load_fashion_mnist, load_japanese_vowels


@asynccontextmanager
async def running_app(repository: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    # no memory upkeep: its mallopt settings are the whole process's, and glibc's one shared heap left in this
    # test process slowed the 32 client threads of a later drill to a few dozen requests (tests/e2e/test_drain.py
    # after any test here, run in one pytest process); tests/e2e/test_memory.py checks the upkeep in a real server
    settings = Settings(**{"repository": repository, "warmup_batch_sizes": [1], "graph_optimization": "all",
                           "access_log": False, "grpc_port": 0, "memory_trim_interval_s": 0, **overrides})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, root_path=settings.root_path)  # as uvicorn's --root-path
        async with httpx.AsyncClient(transport=transport, base_url="http://nnserve") as client:
            yield client


@pytest.fixture
async def client(models_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(models_dir, admin_token="secret") as c:
        yield c


@pytest.fixture(scope="session")
def fashion(data_dir: Path) -> Any:
    return load_fashion_mnist(data_dir)


@pytest.fixture(scope="session")
def vowels(data_dir: Path) -> Any:
    return load_japanese_vowels(data_dir)


def png_bytes(pixels: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total
