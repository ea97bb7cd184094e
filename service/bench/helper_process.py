"""A server the bench compares nnserve with (``--reference``, ``--bare``), run as a module in its own process: started,
waited for until it answers, stopped."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx


@contextlib.contextmanager
def helper_server(module: str, args: list[str], ready_url: str, timeout_s: float) -> Iterator[int]:
    """``python -m module *args``; yields its pid once ``ready_url`` answers 200; SIGTERM (then SIGKILL) after."""
    process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{module} exited: {process.stderr.read().decode()[-2000:]}"
                                   if process.stderr else f"{module} exited")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{module} did not answer within {timeout_s:g} s")
            time.sleep(0.1)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
