"""``nnserve serve --workers N``: N server processes on one port, the started one among them.

uvicorn's own multi-process mode adds a supervisor process and multiprocessing's resource tracker beside its
workers (two more Python processes, about 50 MB of resident memory), and its workers share one listening socket:
whichever wakes first accepts every connection waiting, so a burst of long-lived connections can land on one
process (measured: all 64 of a benchmark's, half the throughput). Here every process binds its own socket to the
port with ``SO_REUSEPORT`` and the kernel spreads new connections over them; a socket starts listening only once
its process has loaded its models. Every process follows the repository API's orders through one control folder
(``service.model_control``). The started process serves as well, passes SIGTERM or SIGINT on to the others
(as SIGTERM) and waits, while draining itself, until each has drained and exited; it restarts one that dies while
serving, and stops everything if one cannot start. A child dies with its parent (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

import uvicorn

from service.hosting.uvicorn_server import NNServeServer
from service.model_control import ControlFolder
from service.settings import Settings

log = logging.getLogger("nnserve")
STARTUP_FAILURE = 3  # uvicorn's exit code when the app's start-up (loading the models) fails
PR_SET_PDEATHSIG = 1


def port_socket(host: str, port: int) -> socket.socket:
    """Bound to the port beside the other workers' sockets, not yet listening (uvicorn listens once the app has
    started, so no connection waits on a process still loading its models)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise RuntimeError("--workers > 1 needs SO_REUSEPORT (Linux); run one process per port instead")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def die_with_parent(parent: int) -> None:
    """In a child: SIGTERM when the parent exits; and exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        sys.exit(0)


class WorkerGroup:
    """The N-1 child processes: start, watch (restart, or stop the server), signal, wait."""

    def __init__(self, count: int, control: ControlFolder) -> None:
        self.count = count
        self.control = control  # a dead child's progress is forgotten: the repository API waits for the living
        self.children: list[subprocess.Popen[bytes]] = []
        self.stopping = threading.Event()
        self.failed = False  # a child could not start: the server stops (GroupServer.on_tick)
        self._lock = threading.Lock()  # spawning and signalling never interleave
        self._restarts = 0
        self._watcher = threading.Thread(target=self._watch, name="nnserve-workers", daemon=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--worker-of", str(os.getpid())])

    def start(self) -> None:
        self.children = [self._spawn() for _ in range(self.count)]
        self._watcher.start()

    def _watch(self) -> None:
        from prometheus_client import multiprocess

        started = {child.pid: time.monotonic() for child in self.children}
        while not self.stopping.wait(0.5):
            for i, child in enumerate(self.children):
                code = child.poll()
                if code is None:
                    continue
                with contextlib.suppress(OSError):
                    multiprocess.mark_process_dead(child.pid)  # type: ignore[no-untyped-call]  # its gauges leave
                self.control.forget(child.pid)
                if code == STARTUP_FAILURE:
                    log.error("worker %d could not start (exit %d): stopping the server", child.pid, code)
                    self.failed = True
                    return
                # Back off when replacements keep dying (a model that crashes or is killed while loading).
                lived = time.monotonic() - started.pop(child.pid, 0.0)
                self._restarts = 0 if lived > 60 else self._restarts + 1
                delay = min(30.0, 0.5 * 2 ** (self._restarts - 1)) if self._restarts > 1 else 0.0
                log.error("worker %d exited with %d while serving: starting another%s", child.pid, code,
                          f" in {delay:.0f} s" if delay else "")
                if delay and self.stopping.wait(delay):
                    return
                with self._lock:
                    if self.stopping.is_set():
                        return
                    self.children[i] = self._spawn()
                    started[self.children[i].pid] = time.monotonic()

    def signal(self, sig: int) -> None:
        with self._lock:
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


class GroupServer(NNServeServer):
    """uvicorn's server for the started process: signals reach the children too, and its shutdown ends only
    when theirs has."""

    def __init__(self, config: uvicorn.Config, group: WorkerGroup, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.group = group
        self.drain_timeout_s = drain_timeout_s
        self.forwarded = False  # the children were told to stop

    def _forward(self) -> None:
        # Once only, and the flag first: a second signal may interrupt the first one's handler inside
        # group.signal(), whose locks would then wait forever for the very thread holding them.
        if not self.forwarded:
            self.forwarded = True
            # Always SIGTERM: a terminal's Ctrl+C has reached the children already, and a second SIGINT would
            # make them stop without draining.
            self.group.signal(signal.SIGTERM)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._forward()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        # A child that could not start stops the server here, without a signal uvicorn would re-raise at exit
        # (which would replace the start-up failure's exit code).
        return await super().on_tick(counter) or self.group.failed

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        import asyncio

        self._forward()
        await super().shutdown(sockets)
        await asyncio.to_thread(self.group.wait, self.drain_timeout_s + 10)


def serve_group(settings: Settings, config: uvicorn.Config) -> int:
    sock = port_socket(settings.host, settings.port)
    os.environ["NNSERVE_PORT"] = str(sock.getsockname()[1])  # the children bind the same port (even if 0 was asked)
    control = ControlFolder(Path(tempfile.mkdtemp(prefix="nnserve-control-")))
    os.environ["NNSERVE_CONTROL_DIR"] = str(control.folder)  # every process follows the repository API's orders
    group = WorkerGroup((settings.workers or 1) - 1, control)
    server = GroupServer(config, group, settings.drain_timeout_s)
    group.start()
    log.info("nnserve on http://%s:%s: this process (%d) and %s", settings.host, os.environ["NNSERVE_PORT"],
             os.getpid(), ", ".join(str(child.pid) for child in group.children))
    try:
        server.run(sockets=[sock])
    finally:
        group.signal(signal.SIGTERM)
        group.wait(settings.drain_timeout_s + 10)
        shutil.rmtree(control.folder, ignore_errors=True)
    return STARTUP_FAILURE if group.failed else 0


def serve_worker(parent: int, settings: Settings, config: uvicorn.Config) -> int:
    """A child of ``serve_group``."""
    die_with_parent(parent)
    NNServeServer(config).run(sockets=[port_socket(settings.host, settings.port)])
    return 0
