"""The one place an error becomes an HTTP answer: ``{"error": message, "code": code}`` with its status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from service.errors import ClientGone, NNServeError
from service.protocols.http_io import json_response

log = logging.getLogger("nnserve")


def error_response(error: NNServeError) -> Response:
    return json_response({"error": error.message, "code": error.code}, error.status, error.headers)


def unexpected_error_response(request: Request, error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return json_response({"error": f"internal error: {type(error).__name__}", "code": "internal_error"}, 500)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NNServeError)
    async def nnserve_error(request: Request, error: NNServeError) -> Response:
        return error_response(error)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: ClientGone) -> Response:
        return Response(status_code=499)  # nobody is left to read it

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        message = f"{request.method} {request.url.path}: {error.detail}"
        return json_response({"error": message, "code": code}, error.status_code, getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        return json_response({"error": f"invalid request: {error.errors()}", "code": "malformed_request"}, 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        return unexpected_error_response(request, error)
