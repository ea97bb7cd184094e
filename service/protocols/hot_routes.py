"""A pure ASGI shortcut for the two inference routes, ``POST /predict`` and
``POST /v2/models/{name}[/versions/{version}]/infer``.

They are the hot path: at thousands of requests per second FastAPI's routing, dependency solving and middleware
stack are a measurable share of each request's CPU (docs/benchmarks.md). The shortcut sits in front of FastAPI
(``service.app.NNServeApp``), calls the very endpoint functions FastAPI has registered (so OpenAPI and behaviour
stay the same) and turns errors into the same answers as the app's handlers. Every other request goes through
FastAPI unchanged.
"""

from __future__ import annotations

import re

from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import NNServeError
from service.protocols.context import AppContext
from service.protocols.http_errors import error_response, unexpected_error_response

INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


class InferenceFastPath:
    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/predict":
            endpoint, params = self.ctx.endpoints["predict"], {}
        elif match := INFER_PATH.fullmatch(path):
            endpoint, params = self.ctx.endpoints["infer"], {"name": match[1], "model_version": match[2]}
        else:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await endpoint(request, **params)
        except ClientDisconnect:  # gone before its body arrived: nobody to answer
            return
        except NNServeError as error:
            response = error_response(error)
        except Exception as error:  # the same last resort as the app's handler: a 500 that names the type
            response = unexpected_error_response(request, error)
        await response(scope, receive, send)
