"""The deploy shell scripts and the image's health check: syntax, lint, and the health check's behaviour."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, require_tool, run

SCRIPTS = sorted(DEPLOY.glob("*.sh"))


def test_scripts_exist_and_are_executable() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"build-base.sh", "build-wheelhouse.sh", "build-image.sh", "ci-setup.sh",
            "start-dockerd.sh"} <= names, names
    for script in SCRIPTS:
        assert script.stat().st_mode & 0o111, f"{script.name} is not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script: Path) -> None:
    run(["bash", "-n", str(script)])


def test_shellcheck() -> None:
    shellcheck = require_tool("shellcheck", "apt-get install shellcheck (deploy/ci-setup.sh)")
    run([shellcheck, *map(str, SCRIPTS)])


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/v2/health/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def _healthcheck(port: int) -> int:
    env = {"NNSERVE_PORT": str(port), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py")], env=env, capture_output=True,
                          timeout=10).returncode


def test_healthcheck_follows_readiness(health_server: tuple[int, type[_Handler]]) -> None:
    port, handler = health_server
    assert _healthcheck(port) == 0
    handler.status = 503
    assert _healthcheck(port) == 1


def test_healthcheck_fails_when_nothing_listens() -> None:
    from tests.deploy.conftest import free_port

    assert _healthcheck(free_port()) == 1
