"""Admission by bytes: a bound on the request bodies one process holds at once, besides each body's own limit.

``--max-body-bytes`` bounds one body; nothing bounded how many arrive together: 200 concurrent 8 MB uploads are
1.6 GB buffered by uvicorn before a handler reads them, and more while they are parsed and decoded. Here a request
reserves its declared ``Content-Length`` from the process's budget (``--max-body-bytes-in-flight``) the moment
its headers arrive, before uvicorn buffers the body, and gives it back when its response has gone. One that does
not fit is answered 429 ``overloaded`` with ``Retry-After`` at once and its body is not kept (uvicorn discards the
rest of a request whose response is complete, and the connection stays usable); a body sent without a length
(chunked) reserves as its pieces arrive and is refused the same way when the next piece does not fit. A body the
budget could never hold is refused by ``--max-body-bytes`` first: the budget is at least that large.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import Overloaded
from service.protocols.http_errors import error_response


class BodyBudget:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.capacity:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size

    def refusal(self, size: int | None) -> Overloaded:
        this = f"this one's {size:,} bytes" if size is not None else "the next piece of this one"
        return Overloaded(f"the server holds {self.held:,} bytes of request bodies and {this} would pass the limit "
                          f"of {self.capacity:,} per process (--max-body-bytes-in-flight): retry shortly")


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """A request's ``Content-Length`` from its (lower-cased) ASGI headers; None when absent or not a number."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyAdmission:
    """ASGI: reserve each HTTP request's body from the budget, refuse what does not fit, give back at the end.
    ``on_refused(scope)`` counts a refusal made before any handler ran (the request's model is not known)."""

    def __init__(self, app: ASGIApp, budget: BodyBudget, on_refused: Callable[[Scope], None]) -> None:
        self.app = app
        self.budget = budget
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope.get("headers", ()))
        if declared is not None and not self.budget.take(declared):
            self.on_refused(scope)
            await error_response(self.budget.refusal(declared))(scope, receive, send)
            return
        held = declared or 0
        budget = self.budget

        async def receive_within_budget() -> Message:  # a body without a length: reserve piece by piece
            nonlocal held
            message = await receive()
            size = len(message.get("body", b""))
            if size:
                if not budget.take(size):
                    raise budget.refusal(None)  # to the handler reading it, whose request record counts it
                held += size
            return message

        try:
            await self.app(scope, receive if declared is not None else receive_within_budget, send)
        finally:
            budget.give(held)
