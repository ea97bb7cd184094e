"""Start a real ``nnserve serve`` process on 127.0.0.1, wait until it is ready, stop it with SIGTERM.
Used by ``nnserve bench`` and by the end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def all_processes_started(log: str) -> bool:
    """Whether every serving process has loaded its models and listens (the first one ready is not all of them:
    a load test's connections would all land on it)."""
    match = re.search(r"nnserve: (\d+) serving process", log)
    return match is None or log.count("Application startup complete") >= int(match.group(1))


@contextmanager
def serve_subprocess(repository: Path, args: Sequence[str] = (), port: int | None = None, timeout: float = 60,
                     env: dict[str, str] | None = None, cwd: Path | None = None, wrapper: Sequence[str] = (),
                     ) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """Yield (url, process, log file); the server's output goes to the log file, read on failure. ``env``
    adds variables (``NNSERVE_*`` settings without a flag) to this process's environment; ``cwd`` runs the
    ``service`` package found there (another checkout's, for ``nnserve bench --baseline``); ``wrapper`` goes
    before the command (``taskset -c 0``, which then execs the server: the process is still the server)."""
    port = port or free_port()
    grpc = [] if "--grpc-port" in args else ["--grpc-port", str(free_port())]  # never a fixed port in tests
    command = [*wrapper, sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--repository", str(repository), *grpc, *args]
    log_path = Path(tempfile.mkstemp(prefix=f"nnserve-{port}-", suffix=".log")[1])
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                   cwd=cwd)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"nnserve exited with {process.returncode}: {log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200 and \
                            all_processes_started(log_path.read_text(errors="replace")):
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nnserve not ready on {url} within {timeout} s: {log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            yield url, process, log_path
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
