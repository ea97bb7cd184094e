"""One JSON log line per request, and the request id: ``X-Request-ID`` echoed, or generated.

A pure ASGI middleware (no per-request task or body copy): the endpoints leave model, version and batch size in
``request.state``, which lives in ``scope["state"]``.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("nnserve.access")
QUIET_PATHS = frozenset({"/metrics", "/v2/health/live", "/v2/health/ready"})


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

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
            request_id = uuid.uuid4().hex
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
            if self.enabled and scope["path"] not in QUIET_PATHS:
                state: dict[str, Any] = scope["state"]
                log.info(orjson.dumps({
                    "ts": time.time(), "request_id": request_id, "method": scope["method"], "path": scope["path"],
                    "status": status, "model": state.get("model"), "version": state.get("version"),
                    "batch_size": state.get("batch_size"), "latency_ms": round((time.perf_counter() - start) * 1e3, 3),
                }).decode())
