"""``GET /models`` (what is served, from the manifests) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.protocols.context import AppContext
from service.protocols.http_io import json_response
from service.registry import ServedModel


def describe(served: ServedModel) -> dict[str, Any]:
    m = served.manifest
    return {
        "name": m.name, "version": m.version, "family": m.family, "task": m.task, "description": m.description,
        "inputs": [s.model_dump() for s in m.inputs], "outputs": [s.model_dump() for s in m.outputs],
        "labels": m.labels, "preprocessing": m.preprocessing.model_dump(),
        "accuracy": {"onnx_test": m.metrics.onnx_test_accuracy, "torch_test": m.metrics.torch_test_accuracy,
                     "per_class": m.metrics.per_class_accuracy},
        "providers": served.runtime.providers, "graph_optimization": served.runtime.graph_optimization,
        "sha256": m.sha256, "load_seconds": round(served.load_seconds, 3),
    }


def build_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(tags=["info"])

    @router.get("/models", summary="Served models: versions, inputs, labels, accuracy")
    async def models() -> Response:
        out = []
        for name in sorted(ctx.registry.models):
            versions = ctx.registry.models[name]
            entry = describe(versions[max(versions)])
            entry["versions"] = sorted(versions)
            out.append(entry)
        return json_response({"models": out})

    @router.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
