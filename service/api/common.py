"""What every endpoint shares: bounded body reading, JSON in and out, and per-request metrics."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from service.errors import InvalidValue, MalformedRequest, NNServeError, PayloadTooLarge, rejection_reason
from service.metrics import ServiceMetrics
from service.registry import ServedModel

UNKNOWN = "_unknown"  # the model label of requests for models that are not served (bounded cardinality)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
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
        self.model = UNKNOWN
        self.version = ""
        self.start = time.perf_counter()
        self._bound = False

    def bind(self, served: ServedModel) -> None:
        self.model, self.version = served.name, str(served.version)
        self.request.state.model = self.model
        self.request.state.version = served.version
        self.metrics.in_flight.labels(self.model, self.version).inc()
        self._bound = True

    def preprocessed(self, start: float) -> None:
        self.metrics.preprocess_latency.labels(self.model, self.version, self.protocol).observe(
            time.perf_counter() - start)

    def __enter__(self) -> RequestTracker:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None,
                 ) -> None:
        if self._bound:
            self.metrics.in_flight.labels(self.model, self.version).dec()
        if error is None:
            outcome, code = "success", 200
        elif isinstance(error, NNServeError):
            code = error.status
            reason = rejection_reason(error)
            outcome = reason or ("error" if code >= 500 else "invalid")
            if reason:
                self.metrics.rejections.labels(self.model, self.version, reason).inc()
        elif isinstance(error, Exception):
            outcome, code = "error", 500
        else:  # cancelled: the client went away
            outcome, code = "cancelled", 499
        self.metrics.requests.labels(self.model, self.version, self.protocol, outcome, str(code)).inc()
        self.metrics.request_latency.labels(self.model, self.version, self.protocol).observe(
            time.perf_counter() - self.start)
