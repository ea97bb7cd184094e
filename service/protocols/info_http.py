"""``GET /models`` (every served model's card: ``service.model_views``), one version's card, its published samples
(``service.samples``) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.dataplane import DataPlane, parse_version
from service.errors import SampleNotFound
from service.model_views import model_card, model_samples
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

    @router.get("/models/{name}", summary="One model's card (its newest served version)")
    @router.get("/models/{name}/versions/{model_version}", summary="The card of one served version")
    async def card(name: str, model_version: str | None = None) -> Response:
        served = plane.model(name, parse_version(model_version))
        return json_response(model_card(served, sorted(registry.models[name]), registry.served()))

    @router.get("/models/{name}/samples", summary="Inputs to try the model on: published test-set samples with "
                "their true labels, or an example of every input built from the signature")
    @router.get("/models/{name}/versions/{model_version}/samples", summary="Inputs to try one version on")
    async def samples(name: str, model_version: str | None = None) -> Response:
        return json_response(model_samples(plane.model(name, parse_version(model_version))))

    @router.get("/models/{name}/versions/{model_version}/samples/{file}",
                summary="One published sample file: a PNG picture or a CSV of frames (one per line)")
    async def sample_file(name: str, model_version: str, file: str) -> Response:
        served = plane.model(name, parse_version(model_version))
        path = served.samples.file(served.path, file) if served.samples else None
        if path is None:
            listed = [item.file for item in served.samples.items] if served.samples else []
            raise SampleNotFound(f"model '{name}' version {served.version} publishes no sample {file!r} "
                                 f"(published: {listed or 'none'})")
        media = "image/png" if file.endswith(".png") else "text/csv; charset=utf-8"
        return Response(path.read_bytes(), media_type=media, headers={"Cache-Control": "max-age=3600"})

    @router.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(plane.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
