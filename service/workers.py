"""``nnserve serve --workers N``: N server processes on one listening socket, the started one among them.

uvicorn's own multi-process mode adds a supervisor process and multiprocessing's resource tracker beside its
workers: two more Python processes, about 50 MB of resident memory (docs/benchmarks.md). Here the process that was
started binds the socket, starts N-1 more ``nnserve serve`` processes that inherit it, and serves as well. It
forwards SIGTERM and SIGINT to them and waits, while draining itself, until each has drained and exited; it
restarts a process that dies while serving, and stops everything if one cannot start. A child dies with its
parent (``PR_SET_PDEATHSIG``), so none outlives a killed server.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType

import uvicorn

from service.settings import Settings

log = logging.getLogger("nnserve")
STARTUP_FAILURE = 3  # uvicorn's exit code when the app's start-up (loading the models) fails
PR_SET_PDEATHSIG = 1


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def die_with_parent(parent: int) -> None:
    """In a child: SIGTERM when the parent exits; and exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        sys.exit(0)


class WorkerGroup:
    """The N-1 child processes: start, watch (restart or give up), signal, wait."""

    def __init__(self, sock: socket.socket, count: int) -> None:
        self.sock = sock
        self.count = count
        self.children: list[subprocess.Popen[bytes]] = []
        self.stopping = threading.Event()
        self.failed = False
        self._watcher = threading.Thread(target=self._watch, name="nnserve-workers", daemon=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        fd = self.sock.fileno()
        env = {**os.environ, "NNSERVE_PARENT_PID": str(os.getpid())}
        return subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--listen-fd", str(fd)],
                                pass_fds=(fd,), env=env)

    def start(self) -> None:
        self.children = [self._spawn() for _ in range(self.count)]
        self._watcher.start()

    def _watch(self) -> None:
        from prometheus_client import multiprocess

        while not self.stopping.wait(0.5):
            for i, child in enumerate(self.children):
                code = child.poll()
                if code is None or self.stopping.is_set():
                    continue
                with contextlib.suppress(OSError):
                    multiprocess.mark_process_dead(child.pid)  # type: ignore[no-untyped-call]  # its gauges leave
                if code == STARTUP_FAILURE:
                    log.error("worker %d could not start (exit %d): stopping the server", child.pid, code)
                    self.failed = True
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                log.error("worker %d exited with %d while serving: starting another", child.pid, code)
                self.children[i] = self._spawn()

    def signal(self, sig: int) -> None:
        self.stopping.set()
        for child in self.children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(sig)

    def wait(self, timeout_s: float) -> None:
        """Until every child has exited; those still running after ``timeout_s`` are killed."""
        self.stopping.set()
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d still running %.0f s after the signal: killed", child.pid, timeout_s)
                child.kill()
                child.wait()


class GroupServer(uvicorn.Server):
    """uvicorn's server for the started process: signals reach the children too, and its shutdown ends only
    when theirs has (uvicorn re-raises the signal once ``serve`` returns, which would end this process)."""

    def __init__(self, config: uvicorn.Config, group: WorkerGroup, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.group = group
        self.drain_timeout_s = drain_timeout_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.group.signal(signal.SIGTERM if sig == signal.SIGTERM else sig)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        import asyncio

        self.group.signal(signal.SIGTERM)
        await super().shutdown(sockets)
        await asyncio.to_thread(self.group.wait, self.drain_timeout_s + 10)


def serve_group(settings: Settings, config: uvicorn.Config) -> int:
    sock = listening_socket(settings.host, settings.port)
    group = WorkerGroup(sock, settings.workers - 1)
    server = GroupServer(config, group, settings.drain_timeout_s)
    group.start()
    log.info("nnserve on http://%s:%d: this process (%d) and %s", settings.host, settings.port, os.getpid(),
             ", ".join(str(child.pid) for child in group.children))
    try:
        server.run(sockets=[sock])
    finally:
        group.signal(signal.SIGTERM)
        group.wait(settings.drain_timeout_s + 10)
    return STARTUP_FAILURE if group.failed else 0


def serve_inherited(fd: int, config: uvicorn.Config) -> int:
    """A child of ``serve_group``: serve the inherited listening socket."""
    parent = int(os.environ.get("NNSERVE_PARENT_PID", os.getppid()))
    die_with_parent(parent)
    sock = socket.socket(fileno=fd)  # family and type read from the descriptor
    uvicorn.Server(config).run(sockets=[sock])
    return 0
