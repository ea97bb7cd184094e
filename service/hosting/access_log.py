"""One JSON line per request on stdout, and the request id: ``X-Request-ID`` echoed, or generated.

A pure ASGI middleware (no per-request task or body copy): the endpoints leave model, version and batch size in
``request.state``, which lives in ``scope["state"]``. Lines are buffered, as nginx's ``access_log ... buffer=
flush=`` does: a busy server writes them in chunks instead of one system call per request, at most
``flush_after_s`` after they were produced, and every chunk ends on a line boundary and stays within ``PIPE_BUF``
bytes, so the lines of several worker processes sharing one pipe never interleave.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import select
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

QUIET_PATHS = frozenset({"/metrics", "/v2/health/live", "/v2/health/ready"})
CHUNK_BYTES = getattr(select, "PIPE_BUF", 4096)
MAX_PATH = 1024  # with the 128-character request id a line stays within CHUNK_BYTES (one atomic pipe write)
# unless its path or id is full of characters JSON must escape; such a line is still written whole, alone


class RequestIds:
    """Unique ids without a system call each: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):010x}"


class AccessLogWriter:
    def __init__(self, fd: int = 1, flush_after_s: float = 0.2) -> None:
        self.fd = fd
        self.flush_after_s = flush_after_s
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        atexit.register(self.flush)  # a forced exit skips the app's shutdown, which flushes too

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record) + b"\n"
        self._lines.append(line)
        self._size += len(line)
        if self._size >= CHUNK_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.flush_after_s, self.flush)
            except RuntimeError:  # no event loop: write at once
                self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines, self._size = self._lines, [], 0
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > CHUNK_BYTES:
                self._write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:  # stdout closed or gone: as the logging module does, never fail a request for its log
            pass


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, writer: AccessLogWriter | None) -> None:
        self.app = app
        self.writer = writer
        self.ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
                break
        if not request_id:
            request_id = self.ids.next()
        scope.setdefault("state", {})
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.writer is not None and scope["path"] not in QUIET_PATHS:
                state: dict[str, Any] = scope["state"]
                self.writer.write({
                    "ts": time.time(), "request_id": request_id, "method": scope["method"],
                    "path": scope["path"][:MAX_PATH], "status": status, "model": state.get("model"),
                    "version": state.get("version"),
                    "batch_size": state.get("batch_size"), "latency_ms": round((time.perf_counter() - start) * 1e3, 3),
                })
