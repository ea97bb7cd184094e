"""``GET /models`` (every served model's card: ``service.model_views``) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.dataplane import DataPlane
from service.model_views import model_card
from service.protocols.http_io import json_response


def build_router(plane: DataPlane) -> APIRouter:
    router = APIRouter(tags=["info"])
    registry = plane.registry

    @router.get("/models", summary="Served models: versions, inputs, labels, batching, training report")
    async def models() -> Response:
        out = []
        everything = registry.served()
        for name in sorted(registry.models):
            versions = registry.models[name]
            out.append(model_card(versions[max(versions)], sorted(versions), everything))
        return json_response({"models": out})

    @router.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(plane.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
