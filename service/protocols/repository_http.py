"""The model repository extension (``/v2/repository/...``), behind an admin bearer token.

Loading builds and warms the new version before swapping it in: a broken model leaves the serving version
untouched and answers 400 ``model_load_failed``.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.dataplane import DataPlane
from service.errors import Conflict, MalformedRequest, Unauthorized
from service.protocols.http_io import json_response, parse_json, read_body
from service.repository import list_models, list_versions


def build_router(plane: DataPlane) -> APIRouter:
    router = APIRouter(prefix="/v2/repository", tags=["model repository (admin)"])
    registry = plane.registry
    settings = plane.settings

    def authorize(request: Request) -> None:
        token = settings.admin_token
        if not token:
            raise Unauthorized("the repository API is disabled: start the server with NNSERVE_ADMIN_TOKEN set")
        if settings.workers > 1:
            raise Conflict("the repository API needs --workers 1: with several server processes a load or "
                           "unload would reach only the one process that received it")
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), token.encode()):
            raise Unauthorized()

    @router.post("/index", summary="Every model in the repository and its state")
    async def index(request: Request) -> Response:
        authorize(request)
        rows = []
        for name in list_models(registry.root):
            loaded = registry.models.get(name, {})
            for v in list_versions(registry.root / name):
                row = {"name": name, "version": str(v), "state": "READY" if v in loaded else "UNAVAILABLE"}
                if v not in loaded and name in registry.failures:
                    row["reason"] = registry.failures[name]
                rows.append(row)
        return json_response(rows)

    @router.post("/models/{name}/load", summary="Load (or reload) a model's versions")
    async def load(request: Request, name: str) -> Response:
        authorize(request)
        body = await read_body(request, settings.max_body_bytes)
        versions = None
        if body.strip():
            payload = parse_json(body)
            params = payload.get("parameters", {}) if isinstance(payload, dict) else {}
            if isinstance(params, dict) and "versions" in params:
                raw = params["versions"]
                if not isinstance(raw, list) or not all(isinstance(v, int) for v in raw):
                    raise MalformedRequest("parameters.versions: expected a list of integers")
                versions = raw
        loaded = await registry.load(name, versions)
        return json_response({"name": name, "versions": [str(m.version) for m in loaded], "state": "READY"})

    @router.post("/models/{name}/unload", summary="Unload a model (drains its queue first)")
    async def unload(request: Request, name: str) -> Response:
        authorize(request)
        await registry.unload(name)
        return json_response({"name": name, "state": "UNAVAILABLE"})

    return router


