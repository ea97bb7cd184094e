"""Handing a body already read back to Starlette: ``Request.form()`` parses ``Request._body`` when it is set, instead
of the ASGI stream the endpoint has already drained (reading the messages ourselves, with the size limit, costs
less than ``Request.stream()``). A private attribute: the tested Starlette range is pinned in ``pyproject.toml`` and
``tests/service/test_hosting_canary.py`` fails when it moves."""

from __future__ import annotations

from starlette.requests import Request


def keep_body(request: Request, body: bytes) -> None:
    request._body = body
