"""The Open Inference Protocol (KServe V2) over HTTP under ``/v2``: server and model metadata, health, Triton's
model configuration view, and inference with JSON or binary tensors. Routes decode (``oip_codec``), call the data
plane, and encode; what they show of a model comes from ``service.model_views``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.dataplane import DataPlane, parse_version
from service.errors import NotReady
from service.model_views import model_metadata, server_metadata, triton_config
from service.protocols.http_io import json_response, log_record, peer, read_body
from service.protocols.oip_codec import HEADER, decode_request, encode_response
from service.shared_memory import SharedAccess


def build_router(plane: DataPlane) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["open inference protocol"])
    settings = plane.settings

    @router.get("", summary="Server metadata")
    async def server() -> Response:
        return json_response(server_metadata(plane.shared_memory is not None))

    @router.get("/health/live", summary="Liveness: the process answers")
    async def live() -> Response:
        return json_response({"live": True})

    @router.get("/health/ready", summary="Readiness: every model loaded and warmed, not shutting down")
    async def ready() -> Response:
        ok = plane.ready
        return json_response({"ready": ok}, 200 if ok else 503)

    @router.get("/models/{name}", summary="Model metadata (newest served version)")
    @router.get("/models/{name}/versions/{model_version}", summary="Model metadata of one version")
    async def metadata(name: str, model_version: str | None = None) -> Response:
        served = plane.model(name, parse_version(model_version))
        return json_response(model_metadata(served, sorted(plane.registry.models[name]), plane.registry.served()))

    @router.get("/models/{name}/config", summary="Model configuration, as Triton shows it")
    @router.get("/models/{name}/versions/{model_version}/config", summary="Model configuration of one version")
    async def config(name: str, model_version: str | None = None) -> Response:
        served = plane.model(name, parse_version(model_version))
        return json_response(triton_config(served, sorted(plane.registry.models[name])))

    @router.get("/models/{name}/ready", summary="Model readiness")
    @router.get("/models/{name}/versions/{model_version}/ready", summary="Model version readiness")
    async def model_ready(name: str, model_version: str | None = None) -> Response:
        served = plane.model(name, parse_version(model_version))
        if not plane.accepting:
            raise NotReady(f"model '{name}': server is shutting down")
        return json_response({"name": served.name, "version": str(served.version), "ready": True})

    @router.post("/models/{name}/infer", summary="Inference (JSON or binary tensors)")
    @router.post("/models/{name}/versions/{model_version}/infer", summary="Inference on one version")
    async def infer(request: Request, name: str, model_version: str | None = None) -> Response:
        with plane.call("v2", log_record(request)) as call:
            plane.require_accepting()
            version = parse_version(model_version)
            body = await read_body(request, settings.max_body_bytes)
            call.decode_started()
            client, forwarded = peer(request)
            shared = SharedAccess(plane.shared_memory, client, settings.max_body_bytes, plane.body_budget, forwarded)
            try:
                decoded = decode_request(body, request.headers.get(HEADER), name, version, shared)
                response = await plane.infer(call, decoded.request)
                content, header_length = encode_response(response, decoded)
            finally:
                shared.release()
            if header_length is None:
                return Response(content, media_type="application/json")
            return Response(content, media_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(header_length)})

    return router
