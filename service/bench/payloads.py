"""Request bodies for the benchmark, for each protocol: real test-set images or sequences for the built-in
models (their report names the data set), random tensors shaped by the config for any other model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.backends import Tensors
from service.config import ImageProcessor, SequenceProcessor
from service.datatypes import serialize_bytes
from service.loading import LoadedVersion
from service.processors.image import normalize_pixels
from service.processors.sequence import sequences_to_tensors
from service.warmup import example_feeds


@dataclass
class Sample:
    raw: Any  # /predict's "inputs" for one request
    tensors: Tensors  # the model's inputs for one request (OIP)


@dataclass
class Payload:
    path: str
    content_type: str
    bodies: list[bytes]
    headers: list[dict[str, str]]
    samples_per_request: int


def samples(model: LoadedVersion, data_dir: Path | None, count: int) -> list[Sample]:
    config, report = model.config, model.report
    dataset = report.dataset.name if report and report.dataset else ""
    if isinstance(config.processor, ImageProcessor) and dataset == "fashion-mnist":
        from training.data.idx import read_idx
        from training.data.sources import locate

        path, _ = locate("fashion-mnist", "t10k-images-idx3-ubyte.gz", data_dir)
        spec = config.processor
        datatype = config.input(spec.input).datatype
        return [Sample([image.tolist()], {spec.input: normalize_pixels(image[None], spec, datatype)})
                for image in read_idx(path)[:count]]
    if isinstance(config.processor, SequenceProcessor) and dataset == "japanese-vowels":
        from training.data import load_japanese_vowels

        seq_spec = config.processor
        return [Sample([s.tolist()], sequences_to_tensors([s], seq_spec))
                for s in load_japanese_vowels(data_dir).test_sequences[:count]]
    return _random_samples(model, count)


def _random_samples(model: LoadedVersion, count: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    config = model.config
    out = []
    for _ in range(min(count, 64)):
        tensors = example_feeds(config, model.backend.signature, 1)
        for name, array in tensors.items():
            if array.dtype.kind == "f":
                tensors[name] = rng.normal(size=array.shape).astype(array.dtype)
        raw: Any = {name: (a.astype(str) if a.dtype == object else a).tolist() for name, a in tensors.items()}
        spec = config.processor
        if isinstance(spec, ImageProcessor):
            shape = (spec.height, spec.width) + ((spec.channels,) if spec.channels > 1 else ())
            raw = [rng.integers(0, 256, size=shape).tolist()]
        out.append(Sample(raw, tensors))
    return out


def build(model: LoadedVersion, protocol: str, items: list[Sample]) -> Payload:
    """One body per sample; the load generator cycles through them."""
    name = model.config.name
    bodies: list[bytes] = []
    headers: list[dict[str, str]] = []
    for item in items if protocol != "grpc" else []:
        if protocol == "predict":
            bodies.append(orjson.dumps({"model": name, "inputs": item.raw}))
            headers.append({})
        elif protocol == "v2-json":
            bodies.append(orjson.dumps({"inputs": [
                {"name": n, "shape": list(t.shape), "datatype": _datatype(model, n),
                 "data": (t.astype(str) if t.dtype == object else t).ravel().tolist()}
                for n, t in item.tensors.items()]}))
            headers.append({})
        else:
            blobs = {n: serialize_bytes(t) if t.dtype == object else t.tobytes() for n, t in item.tensors.items()}
            head = orjson.dumps({
                "inputs": [{"name": n, "shape": list(t.shape), "datatype": _datatype(model, n),
                            "parameters": {"binary_data_size": len(blobs[n])}} for n, t in item.tensors.items()],
                "outputs": [{"name": o.name, "parameters": {"binary_data": True}} for o in model.config.outputs]})
            bodies.append(head + b"".join(blobs.values()))
            headers.append({"Inference-Header-Content-Length": str(len(head))})
    if protocol == "grpc":
        return Payload("/inference.GRPCInferenceService/ModelInfer", "application/grpc",
                       [grpc_frame(model, item.tensors) for item in items], [{} for _ in items], 1)
    content_type = "application/octet-stream" if protocol == "v2-binary" else "application/json"
    path = "/predict" if protocol == "predict" else f"/v2/models/{name}/infer"
    return Payload(path, content_type, bodies, headers, 1)


def grpc_frame(model: LoadedVersion, tensors: Tensors) -> bytes:
    """A ``ModelInferRequest`` with raw contents, framed as gRPC sends a message (flag byte, length, message)."""
    from service.protocols.grpc_proto import oip_pb2

    message = oip_pb2.ModelInferRequest(model_name=model.config.name)
    for name, array in tensors.items():
        message.inputs.add(name=name, datatype=_datatype(model, name), shape=array.shape)
        message.raw_input_contents.append(serialize_bytes(array) if array.dtype == object else array.tobytes())
    data = message.SerializeToString()
    return b"\0" + len(data).to_bytes(4, "big") + data


def _datatype(model: LoadedVersion, name: str) -> str:
    return model.config.input(name).datatype
