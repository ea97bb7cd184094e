"""Shared helpers for the deploy tests: the repository's paths, tools that may be missing, and a live nnserve.

A missing tool or engine skips the tests that need it, with the reason in the skip message (``pytest -rs``
prints it); nothing here passes silently. A server that exists but does not come up is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.hosting.launcher import serve_subprocess

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# The model repository served by the live tests; NNSERVE_TEST_MODELS points them at another one.
MODELS = Path(os.environ.get("NNSERVE_TEST_MODELS", REPO / "models")).resolve()
VENV_BIN = Path(sys.executable).parent


def require_tool(name: str, hint: str) -> str:
    """The tool's path, or skip: ``hint`` says how to get it (usually deploy/ci-setup.sh)."""
    path = shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).exists() else None)
    if path is None:
        pytest.skip(f"{name} not found: {hint}")
    return path


def run(
    cmd: list[str], timeout: float = 120, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion message carries its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def served_models() -> dict[str, dict[str, Any]]:
    """name -> config.json of the newest version of each model in the committed repository."""
    found: dict[str, dict[str, Any]] = {}
    for config in sorted(MODELS.glob("*/*/config.json"), key=lambda p: (p.parent.parent.name, int(p.parent.name))):
        found[config.parent.parent.name] = json.loads(config.read_text())
    return found


def example_input(config: dict[str, Any], value: float = 0.0) -> Any:
    """One valid raw input for a model, from its config's processor."""
    pre = config["processor"]
    if pre["kind"] == "image":
        return [[value] * pre["width"] for _ in range(pre["height"])]
    return [[value] * pre["features"] for _ in range(max(pre.get("min_length", 1), 8))]


def wait_http(url: str, deadline_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    import httpx

    end = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode} before {url} answered 200")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise AssertionError(f"{url} not 200 within {deadline_s}s (last: {last})")


@dataclass
class LiveServer:
    url: str
    port: int
    models: dict[str, dict[str, Any]]
    log: Path


def _serve_available() -> str | None:
    """Why a live server cannot be started here, or None."""
    if not served_models():
        return f"no model in {MODELS} (train and publish first: nnserve pipeline)"
    return None


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real ``nnserve serve`` on 127.0.0.1 with its default processes, ready (all models loaded and warmed);
    stopped with SIGTERM. It serves a copy of the repository with one more version of the first model, broken,
    so the load-failure series exist too (prometheus-client lists a metric across processes only once it has a
    sample) while the version before it stands in."""
    reason = _serve_available()
    if reason:
        pytest.skip(f"no live nnserve: {reason}")
    repository = tmp_path_factory.mktemp("live") / "models"
    shutil.copytree(MODELS, repository)
    first = sorted(served_models())[0]
    newest = max((p for p in (repository / first).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    broken = repository / first / str(int(newest.name) + 1)
    shutil.copytree(newest, broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    port = free_port()
    with serve_subprocess(repository, ["--log-level", "warning", "--providers", "cpu"], port=port, timeout=120) as (
        url, _, log,
    ):
        yield LiveServer(url, port, served_models(), log)


def send_predictions(server: LiveServer, per_model: int = 5) -> int:
    """``per_model`` predictions to every served model through /predict; each must succeed."""
    import httpx

    sent = 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for name, manifest in server.models.items():
            for i in range(per_model):
                body = {"model": name, "inputs": [example_input(manifest, float(i % 255))] * (1 + i % 3)}
                response = client.post("/predict", json=body)
                assert response.status_code == 200, f"{name}: {response.status_code} {response.text[:300]}"
                sent += 1
    return sent
