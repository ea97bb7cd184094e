"""``POST /preview``: what a model would see of a ``/predict`` request, without running it.

The same body as ``/predict`` (JSON ``inputs`` or uploaded ``file``s) goes through the model's own input processor,
the very code ``/predict`` runs, and the answer shows the result: for a picture, the pixels after decoding,
orientation, transparency, greyscale, inversion and resizing (a PNG), with each step in words; for every input
tensor its datatype, shape and value range; for a sequence model the standardised frames themselves. Nothing is
queued or computed, so it is not counted in the inference metrics.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from service.backends import Tensors
from service.config import ImageProcessor, SequenceProcessor
from service.dataplane import DataPlane, PredictRequest
from service.datatypes import datatype_of
from service.errors import PayloadTooLarge, UnsupportedMediaType
from service.processors import from_files
from service.processors.image import ImageInput, Picture, pixels_from_json
from service.samples import png_bytes


async def preview(plane: DataPlane, request: PredictRequest) -> dict[str, Any]:
    plane.require_accepting()
    served = plane.model(request.model, request.version)
    processor, spec = served.inputs, served.config.processor
    if spec is None:
        raise UnsupportedMediaType(f"model '{served.name}' has no processor: the tensors sent to /predict are what "
                                   f"it sees, so there is nothing to preview")
    if len(request.files) > plane.settings.max_items_per_request:
        raise PayloadTooLarge(f"{len(request.files)} files in one request; the limit is "
                              f"{plane.settings.max_items_per_request}")
    pictures: list[Picture] = []
    if request.files and isinstance(processor, ImageInput):
        pictures = await asyncio.to_thread(processor.pictures, request.files)
        tensors = processor.from_pictures(pictures)
    elif request.files:
        tensors = from_files(processor, served.name, request.files)  # refused: 415 naming what it takes
    elif isinstance(spec, ImageProcessor):
        pixels = pixels_from_json(request.inputs, spec)
        pictures = [Picture(_as_uint8(p, spec), [f"raw pixel values in [{spec.pixel_min:g}, {spec.pixel_max:g}], "
                                                 "taken as they are"]) for p in pixels]
        tensors = processor.from_json(request.inputs)
    else:
        tensors = processor.from_json(request.inputs)
    names = [name for name, _ in request.files] or [f"inputs[{i}]" for i in range(len(pictures))]
    return {
        "model": served.name, "version": served.version, "processor": spec.kind,
        "pictures": [_picture_json(name, picture, spec) for name, picture in zip(names, pictures, strict=False)
                     if isinstance(spec, ImageProcessor)],
        "tensors": _tensors_json(tensors, with_data=isinstance(spec, SequenceProcessor)),
    }


def _as_uint8(pixels: np.ndarray, spec: ImageProcessor) -> np.ndarray:
    scaled = (pixels - spec.pixel_min) * (255.0 / (spec.pixel_max - spec.pixel_min))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _picture_json(name: str, picture: Picture, spec: ImageProcessor) -> dict[str, Any]:
    pixels = picture.pixels[:, :, ::-1] if spec.color_mode == "BGR" else picture.pixels  # shown as RGB
    height, width = pixels.shape[:2]
    return {"source": name, "width": width, "height": height, "channels": spec.channels,
            "steps": picture.steps, "inverted": picture.inverted,
            "png": base64.b64encode(png_bytes(np.ascontiguousarray(pixels))).decode()}


def _tensors_json(tensors: Tensors, with_data: bool) -> dict[str, Any]:
    out = {}
    for name, array in tensors.items():
        summary: dict[str, Any] = {"datatype": datatype_of(array), "shape": list(array.shape)}
        if array.size and array.dtype.kind in "fiub":
            summary.update(min=float(array.min()), max=float(array.max()), mean=float(array.mean()))
        if with_data:
            summary["data"] = array.tolist()
        out[name] = summary
    return out
