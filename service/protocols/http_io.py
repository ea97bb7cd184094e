"""What every endpoint shares: bounded body reading, JSON in and out, and per-request metrics."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from service.errors import InvalidValue, MalformedRequest, NNServeError, PayloadTooLarge, rejection_reason
from service.metrics import RequestMetrics, ServiceMetrics
from service.registry import ServedModel

UNKNOWN = "_unknown"  # the model label of requests for models that are not served (bounded cardinality)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    while True:  # the ASGI messages themselves: Request.stream()'s async generator costs more than the copy
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body  # Starlette's own cache: form() then parses these bytes instead of the spent stream
    return body


def parse_json(data: bytes, what: str = "request body") -> Any:
    if not data:
        raise MalformedRequest(f"{what} is empty; expected a JSON object")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        if any(token in data for token in (b"NaN", b"Infinity", b"e999")):
            raise InvalidValue(f"{what}: NaN and infinite values are not accepted ({error})") from error
        raise MalformedRequest(f"{what} is not valid JSON: {error}") from error


def parse_version(value: Any) -> int | None:
    """A requested model version (path segment, JSON or form field): absent, or a non-negative integer."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise MalformedRequest(f"model version must be a non-negative integer, received {value!r}")


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    headers=headers, media_type="application/json")


class RequestTracker:
    """Counts one model request (outcome, code, latency) and keeps the in-flight gauge; feeds the access log."""

    def __init__(self, request: Request, metrics: ServiceMetrics, protocol: str) -> None:
        self.request = request
        self.metrics = metrics
        self.protocol = protocol
        self.bound: RequestMetrics | None = None  # until bind(): a request for no served model
        self.start = time.perf_counter()

    def bind(self, served: ServedModel) -> None:
        self.bound = self.metrics.for_request(served.name, str(served.version), self.protocol)
        state = self.request.scope.setdefault("state", {})  # what request.state wraps; the access log reads it
        state["model"], state["version"] = served.name, served.version
        self.bound.in_flight.inc()

    def preprocessed(self, start: float) -> None:
        if self.bound is not None:
            self.bound.preprocess.observe(time.perf_counter() - start)

    def __enter__(self) -> RequestTracker:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None,
                 ) -> None:
        bound = self.bound
        if bound is not None:
            bound.in_flight.dec()
        else:
            bound = self.metrics.for_request(UNKNOWN, "", self.protocol)
        if error is None:
            bound.count("success", "200")
        elif isinstance(error, NNServeError):
            reason = rejection_reason(error)
            if reason:
                bound.reject(reason)
            bound.count(reason or ("error" if error.status >= 500 else "invalid"), str(error.status))
        elif isinstance(error, Exception) and not isinstance(error, ClientDisconnect):
            bound.count("error", "500")
        else:  # cancelled or disconnected: the client went away
            bound.count("cancelled", "499")
        bound.latency.observe(time.perf_counter() - self.start)
