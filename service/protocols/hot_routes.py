"""A pure ASGI shortcut for the inference routes, ``POST /predict`` and
``POST /v2/models/{name}[/versions/{version}]/infer``.

They are the hot path: at thousands of requests per second FastAPI's routing, dependency solving and middleware
stack are a measurable share of each request's CPU (docs/benchmarks.md). The shortcut sits in front of FastAPI
(``service.app.NNServeApp``), matches a request against the very routes the app includes for those endpoints
(one route table), calls the endpoint FastAPI would with the path parameters it would pass, and answers errors
with the one HTTP error mapping (``http_errors``). Every other request goes through FastAPI unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ClientGone, NNServeError
from service.protocols.http_errors import error_response, unexpected_error_response

HOT_ENDPOINTS = frozenset({"predict", "infer"})  # the endpoints' function names


class InferenceFastPath:
    def __init__(self, app: ASGIApp, routers: Iterable[APIRouter]) -> None:
        self.app = app
        self.routes = [r for router in routers for r in router.routes
                       if isinstance(r, APIRoute) and r.name in HOT_ENDPOINTS]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path")
        if root and path.startswith(root):  # behind a proxy (--root-path): uvicorn puts the prefix in the path
            path = path[len(root):]
        for route in self.routes:  # Starlette's compiled pattern of each (Route.matches costs ~3 µs more)
            match = route.path_regex.match(path)
            if match is not None:
                break
        else:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request, **match.groupdict())
        except ClientGone:  # gone before its body arrived: nobody to answer
            return
        except NNServeError as error:
            response = error_response(error)
        except Exception as error:  # the same last resort as the app's handler: a 500 that names the type
            response = unexpected_error_response(request, error)
        await response(scope, receive, send)
