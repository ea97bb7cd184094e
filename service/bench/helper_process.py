"""A server the bench compares nnserve with (``--reference``, ``--bare``), run as a module in its own process group:
started, waited for until it is ready, stopped with every process it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import httpx


@contextlib.contextmanager
def helper_server(module: str, args: list[str], ready: str | Callable[[], bool], timeout_s: float) -> Iterator[int]:
    """``python -m module *args`` in a session of its own; yields its pid once ``ready`` (a URL that answers 200, or
    a check) holds; then SIGTERM to its whole process group, SIGKILL to what is left after 15 s."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.DEVNULL, stderr=errors,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + timeout_s
            while not _ready(ready):
                if process.poll() is not None:
                    errors.seek(0)
                    raise RuntimeError(f"{module} exited: {errors.read().decode(errors='replace')[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{module} was not ready within {timeout_s:g} s")
                time.sleep(0.1)
            yield process.pid
        finally:
            _stop_group(process)


def _ready(ready: str | Callable[[], bool]) -> bool:
    if callable(ready):
        return ready()
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(ready, timeout=1).status_code == 200
    return False


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(15)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # its children too: they may outlive it
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
