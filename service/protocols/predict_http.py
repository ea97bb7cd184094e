"""``POST /predict``: raw pixels, raw frames or uploaded pictures in, labelled predictions out."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from service.batcher import Tensors
from service.errors import InvalidValue, MalformedRequest, PayloadTooLarge, UnsupportedMediaType
from service.manifest import ImagePreprocessing
from service.preprocess import (
    decode_image,
    normalize_pixels,
    pixels_from_json,
    sequences_from_json,
    sequences_to_tensors,
    top_k_count,
)
from service.protocols.context import AppContext
from service.protocols.http_io import RequestTracker, json_response, parse_json, parse_version, read_body
from service.registry import ServedModel

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


def predictions(served: ServedModel, probabilities: np.ndarray, top_k: int) -> list[dict[str, Any]]:
    labels = served.manifest.labels
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    out = []
    for row, ranked in zip(probabilities.tolist(), order.tolist(), strict=True):
        best = ranked[0]
        out.append({
            "label": labels[best], "index": best, "probability": row[best],
            "top_k": [{"label": labels[i], "index": i, "probability": row[i]} for i in ranked],
        })
    return out


def _count(n: int, limit: int) -> None:
    if n > limit:
        raise PayloadTooLarge(f"{n} inputs in one request; the limit is {limit}")


def tensors_from_json(served: ServedModel, inputs: Any, limit: int) -> tuple[Tensors, int]:
    spec = served.manifest.preprocessing
    if isinstance(spec, ImagePreprocessing):
        if isinstance(inputs, list):
            _count(len(inputs), limit)
        pixels = pixels_from_json(inputs, spec)
        return {served.manifest.inputs[0].name: normalize_pixels(pixels, spec)}, len(pixels)
    if isinstance(inputs, list):
        _count(len(inputs), limit)
    sequences = sequences_from_json(inputs, spec)
    batch, lengths = sequences_to_tensors(sequences, spec)
    return {"sequence": batch, "lengths": lengths}, len(sequences)


def build_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(tags=["predict"])
    settings = ctx.settings

    async def run(request: Request, tracker: RequestTracker, served: ServedModel, feeds: Tensors, n: int,
                  top_k: int) -> Response:
        request.state.batch_size = n
        outputs = await served.infer(feeds, n, settings.request_timeout_ms / 1000)
        probabilities = outputs[served.runtime.output_names[0]]
        return json_response({"model": served.name, "version": served.version,
                              "predictions": predictions(served, probabilities, top_k)})

    async def from_json(request: Request, tracker: RequestTracker, body: bytes) -> Response:
        payload = parse_json(body)
        if not isinstance(payload, dict):
            raise MalformedRequest("request body: expected a JSON object {\"model\": ..., \"inputs\": [...]}")
        if "model" not in payload or not isinstance(payload["model"], str):
            raise MalformedRequest("request body: missing \"model\" (a string: one of GET /models)")
        if "inputs" not in payload:
            raise MalformedRequest("request body: missing \"inputs\" (a list of images or sequences)")
        served = ctx.registry.get(payload["model"], parse_version(payload.get("version")))
        tracker.bind(served)
        start = time.perf_counter()
        top_k = top_k_count(payload.get("top_k"), len(served.manifest.labels))
        feeds, n = tensors_from_json(served, payload["inputs"], settings.max_items_per_request)
        tracker.preprocessed(start)
        return await run(request, tracker, served, feeds, n, top_k)

    async def from_form(request: Request, tracker: RequestTracker) -> Response:
        try:
            form = await request.form(max_files=settings.max_items_per_request, max_fields=32)
        except Exception as error:  # python-multipart's parse errors
            raise MalformedRequest(f"multipart body cannot be parsed: {error}") from error
        model = form.get("model")
        if not isinstance(model, str):
            raise MalformedRequest("multipart: missing the \"model\" field")
        served = ctx.registry.get(model, parse_version(form.get("version")))
        tracker.bind(served)
        spec = served.manifest.preprocessing
        if not isinstance(spec, ImagePreprocessing):
            raise UnsupportedMediaType(f"model '{model}' takes sequences: send JSON {{\"inputs\": [...]}}, "
                                       f"not multipart files")
        top = form.get("top_k")
        top_k = top_k_count(None if top is None else _int_field(top, "top_k"), len(served.manifest.labels))
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        if not files:
            raise MalformedRequest("multipart: no \"file\" fields; attach one or more images as file=@picture")
        start = time.perf_counter()
        blobs = [(await f.read(), f.filename or f"file {i}") for i, f in enumerate(files)]
        pixels = await asyncio.to_thread(
            lambda: np.stack([decode_image(data, spec, settings.max_image_pixels, name) for data, name in blobs]))
        tracker.preprocessed(start)
        feeds = {served.manifest.inputs[0].name: normalize_pixels(pixels, spec)}
        return await run(request, tracker, served, feeds, len(files), top_k)

    @router.post("/predict", openapi_extra=OPENAPI_BODY, summary="Predict labels for images or sequences")
    async def predict(request: Request) -> Response:
        with RequestTracker(request, ctx.metrics, "predict") as tracker:
            ctx.require_accepting()
            content_type = request.headers.get("content-type", "")
            body = await read_body(request, settings.max_body_bytes)
            if content_type.startswith("multipart/form-data"):
                return await from_form(request, tracker)
            return await from_json(request, tracker, body)  # any other content type is read as JSON

    ctx.endpoints["predict"] = predict
    return router


def _int_field(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidValue(f"{name}: expected an integer, received {value!r}") from None
