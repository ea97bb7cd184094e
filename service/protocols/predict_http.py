"""``POST /predict``: raw pixels, frames, named tensors or uploaded pictures in, predictions out. Decodes the
HTTP request into a ``PredictRequest``; the data plane does the rest."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from service.dataplane import DataPlane, PredictRequest, parse_version
from service.errors import InvalidValue, MalformedRequest
from service.preview import preview
from service.protocols.http_io import json_response, log_record, parse_json, read_body
from service.settings import Settings

OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"example": {"model": "cnn", "inputs": [[[0] * 28] * 28], "top_k": 3}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "model": {"type": "string"}, "version": {"type": "integer"}, "top_k": {"type": "integer"},
                "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        },
        "required": True,
    }
}


def from_json(body: bytes) -> PredictRequest:
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise MalformedRequest("request body: expected a JSON object {\"model\": ..., \"inputs\": [...]}")
    if "model" not in payload or not isinstance(payload["model"], str):
        raise MalformedRequest("request body: missing \"model\" (a string: one of GET /models)")
    if "inputs" not in payload:
        raise MalformedRequest("request body: missing \"inputs\" (images, sequences or named tensors)")
    return PredictRequest(payload["model"], parse_version(payload.get("version")), inputs=payload["inputs"],
                          top_k=payload.get("top_k"))


async def from_form(request: Request, max_files: int) -> PredictRequest:
    try:
        form = await request.form(max_files=max_files, max_fields=32)
    except Exception as error:  # python-multipart's parse errors
        raise MalformedRequest(f"multipart body cannot be parsed: {error}") from error
    model = form.get("model")
    if not isinstance(model, str):
        raise MalformedRequest("multipart: missing the \"model\" field")
    top = form.get("top_k")
    files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
    if not files:
        raise MalformedRequest("multipart: no \"file\" fields; attach one or more images as file=@picture")
    blobs = [(f.filename or f"file {i}", await f.read()) for i, f in enumerate(files)]
    return PredictRequest(model, parse_version(form.get("version")), files=blobs,
                          top_k=None if top is None else _int_field(top, "top_k"))


def _int_field(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidValue(f"{name}: expected an integer, received {value!r}") from None


async def decode(request: Request, body: bytes, settings: Settings) -> PredictRequest:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await from_form(request, settings.max_items_per_request)
    return from_json(body)  # any other content type is read as JSON


def build_router(plane: DataPlane) -> APIRouter:
    router = APIRouter(tags=["predict"])
    settings = plane.settings

    @router.post("/predict", openapi_extra=OPENAPI_BODY, summary="Predict labels for images or sequences")
    async def predict(request: Request) -> Response:
        with plane.call("predict", log_record(request)) as call:
            plane.require_accepting()
            body = await read_body(request, settings.max_body_bytes)
            call.decode_started()
            return json_response(await plane.predict(call, await decode(request, body, settings)))

    @router.post("/preview", openapi_extra=OPENAPI_BODY,
                 summary="What the model would see of a /predict body: the processed pictures and tensors")
    async def preview_inputs(request: Request) -> Response:
        body = await read_body(request, settings.max_body_bytes)
        return json_response(await preview(plane, await decode(request, body, settings)))

    return router
