"""What the HTTP endpoints share: bounded body reading, JSON in and out, a requested version, and the per-request
record the access log writes (``scope["state"]``)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from service.errors import ClientGone, InvalidValue, MalformedRequest, PayloadTooLarge
from service.hosting.request_body import keep_body


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    while True:  # the ASGI messages themselves: Request.stream()'s async generator costs more than the copy
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    keep_body(request, body)  # form() then parses these bytes instead of the spent stream
    return body


def parse_json(data: bytes | memoryview, what: str = "request body") -> Any:
    if not data:
        raise MalformedRequest(f"{what} is empty; expected a JSON object")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        if any(token in bytes(data) for token in (b"NaN", b"Infinity", b"e999")):
            raise InvalidValue(f"{what}: NaN and infinite values are not accepted ({error})") from error
        raise MalformedRequest(f"{what} is not valid JSON: {error}") from error


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    headers=headers, media_type="application/json")


def log_record(request: Request) -> dict[str, Any]:
    """The request's access-log fields (``request.state`` lives in ``scope["state"]``)."""
    state: dict[str, Any] = request.scope.setdefault("state", {})
    return state


def peer(request: Request) -> tuple[str | None, str | None]:
    """The client's address and the addresses a proxy says it forwarded for (``X-Forwarded-For``)."""
    return request.client.host if request.client else None, request.headers.get("x-forwarded-for")
