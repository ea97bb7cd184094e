"""The Open Inference Protocol (KServe V2) under ``/v2``: server and model metadata, health, and inference with
JSON or binary tensors. Routes only translate and delegate to the registry and ``v2_codec``."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.errors import NotReady
from service.protocols.context import AppContext
from service.protocols.http_io import RequestTracker, json_response, parse_version, read_body
from service.protocols.oip_codec import FROM_MANIFEST, HEADER, decode_request, encode_response
from service.registry import ServedModel

EXTENSIONS = ["binary_tensor_data", "model_repository", "model_repository(unload_dependents)"]


def server_version() -> str:
    try:
        return version("nnserve")
    except PackageNotFoundError:
        return "0+unknown"


def model_metadata(served: ServedModel, versions: list[int]) -> dict[str, Any]:
    m = served.manifest
    return {
        "name": m.name,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": s.name, "datatype": FROM_MANIFEST[s.dtype], "shape": s.shape} for s in m.inputs],
        "outputs": [{"name": s.name, "datatype": FROM_MANIFEST[s.dtype], "shape": s.shape} for s in m.outputs],
        "parameters": {
            "version": m.version, "family": m.family, "task": m.task, "labels": m.labels,
            "providers": served.runtime.providers, "graph_optimization": served.runtime.graph_optimization,
            "intra_op_threads": served.runtime.options.intra_op_threads,
            "sha256": m.sha256, "onnx_test_accuracy": m.metrics.onnx_test_accuracy,
        },
    }


def model_config(served: ServedModel, ctx: AppContext) -> dict[str, Any]:
    """Triton's model configuration view of a served model (what ``get_model_config`` shows)."""
    s, m = ctx.settings, served.manifest

    def dims(shape: list[int]) -> list[int]:
        return shape[1:]  # Triton leaves the batch axis out when max_batch_size > 0

    return {
        "name": m.name, "platform": "onnxruntime_onnx", "backend": "onnxruntime", "max_batch_size": s.max_batch_size,
        "input": [{"name": t.name, "data_type": f"TYPE_{FROM_MANIFEST[t.dtype]}", "dims": dims(t.shape)}
                  for t in m.inputs],
        "output": [{"name": t.name, "data_type": f"TYPE_{FROM_MANIFEST[t.dtype]}", "dims": dims(t.shape),
                    "label_filename": ""} for t in m.outputs],
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(s.max_queue_delay_ms * 1000),
            "default_queue_policy": {"max_queue_size": s.max_queue_size, "timeout_action": "REJECT",
                                     "default_timeout_microseconds": int(s.request_timeout_ms * 1000)},
        },
        "instance_group": [{"count": s.batch_concurrency, "kind": "KIND_GPU" if "CUDA" in
                            served.runtime.providers[0] else "KIND_CPU"}],
        "version_policy": {"specific": {"versions": sorted(ctx.registry.models[m.name])}},
    }


def build_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["open inference protocol"])
    registry = ctx.registry
    settings = ctx.settings

    @router.get("", summary="Server metadata")
    async def server_metadata() -> Response:
        return json_response({"name": "nnserve", "version": server_version(), "extensions": EXTENSIONS})

    @router.get("/health/live", summary="Liveness: the process answers")
    async def live() -> Response:
        return json_response({"live": True})

    @router.get("/health/ready", summary="Readiness: every model loaded and warmed, not shutting down")
    async def ready() -> Response:
        ok = ctx.ready
        return json_response({"ready": ok}, 200 if ok else 503)

    @router.get("/models/{name}", summary="Model metadata (newest served version)")
    @router.get("/models/{name}/versions/{model_version}", summary="Model metadata of one version")
    async def metadata(name: str, model_version: str | None = None) -> Response:
        served = registry.get(name, parse_version(model_version))
        return json_response(model_metadata(served, sorted(registry.models[name])))

    @router.get("/models/{name}/config", summary="Model configuration, as Triton shows it")
    @router.get("/models/{name}/versions/{model_version}/config", summary="Model configuration of one version")
    async def config(name: str, model_version: str | None = None) -> Response:
        return json_response(model_config(registry.get(name, parse_version(model_version)), ctx))

    @router.get("/models/{name}/ready", summary="Model readiness")
    @router.get("/models/{name}/versions/{model_version}/ready", summary="Model version readiness")
    async def model_ready(name: str, model_version: str | None = None) -> Response:
        served = registry.get(name, parse_version(model_version))
        if not ctx.accepting:
            raise NotReady(f"model '{name}': server is shutting down")
        return json_response({"name": served.name, "version": str(served.version), "ready": True})

    @router.post("/models/{name}/infer", summary="Inference (JSON or binary tensors)")
    @router.post("/models/{name}/versions/{model_version}/infer", summary="Inference on one version")
    async def infer(request: Request, name: str, model_version: str | None = None) -> Response:
        with RequestTracker(request, ctx.metrics, "v2") as tracker:
            ctx.require_accepting()
            served = registry.get(name, parse_version(model_version))
            tracker.bind(served)
            body = await read_body(request, settings.max_body_bytes)
            start = time.perf_counter()
            decoded = decode_request(body, request.headers.get(HEADER), served.manifest,
                                     settings.max_items_per_request)
            tracker.preprocessed(start)
            request.state.batch_size = decoded.batch
            outputs = await served.infer(decoded.inputs, decoded.batch, settings.request_timeout_ms / 1000)
            content, header_length = encode_response(served.name, served.version, decoded, outputs)
            if header_length is None:
                return Response(content, media_type="application/json")
            return Response(content, media_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(header_length)})

    ctx.endpoints["infer"] = infer
    return router
