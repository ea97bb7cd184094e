"""The model repository extension (``/v2/repository/...``), behind an admin bearer token.

Loading builds and warms the new version before swapping it in, in every process of the server: a broken model
leaves the serving version untouched and answers 400 ``model_load_failed`` naming what failed (and where).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service import repository_admin
from service.dataplane import DataPlane
from service.errors import MalformedRequest
from service.protocols.http_io import json_response, parse_json, read_body


def build_router(plane: DataPlane) -> APIRouter:
    router = APIRouter(prefix="/v2/repository", tags=["model repository (admin)"])
    settings = plane.settings

    def authorize(request: Request) -> None:
        repository_admin.authorize(settings, request.headers.get("authorization"))

    @router.post("/index", summary="Every model in the repository and its state")
    async def index(request: Request) -> Response:
        authorize(request)
        return json_response(repository_admin.index(plane.repository))

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
        served = await repository_admin.load(plane.repository, name, versions)
        return json_response({"name": name, "versions": served, "state": "READY"})

    @router.post("/models/{name}/unload", summary="Unload a model (drains its queue first)")
    async def unload(request: Request, name: str) -> Response:
        authorize(request)
        await repository_admin.unload(plane.repository, name)
        return json_response({"name": name, "state": "UNAVAILABLE"})

    return router
