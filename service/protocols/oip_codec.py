"""Open Inference Protocol (KServe V2) tensors: JSON and Triton's binary tensor extension, in and out.

A binary request is ``<JSON header><raw tensor bytes...>``; the header's length is in the
``Inference-Header-Content-Length`` HTTP header and each binary input declares ``parameters.binary_data_size``;
the tensors follow in input order. Every check names what was expected and what came.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidDatatype, InvalidShape, InvalidValue, MalformedRequest
from service.manifest import Manifest, SequencePreprocessing
from service.preprocess import check_finite
from service.protocols.http_io import parse_json

HEADER = "inference-header-content-length"
TO_NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
            "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
            "FP32": np.float32, "FP64": np.float64}
FROM_MANIFEST = {"float32": "FP32", "int64": "INT64"}
DTYPES = {name: np.dtype(t) for name, t in TO_NUMPY.items()}
DATATYPES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    batch: int
    binary_outputs: set[str]
    outputs: list[str]


def split_body(body: bytes, header_length: str | None) -> tuple[Any, bytes]:
    if header_length is None:
        return parse_json(body), b""
    try:
        length = int(header_length)
    except ValueError:
        raise MalformedRequest(f"Inference-Header-Content-Length: expected an integer, received {header_length!r}"
                               ) from None
    if not 0 < length <= len(body):
        raise MalformedRequest(f"Inference-Header-Content-Length is {length} but the body has {len(body)} bytes")
    return parse_json(body[:length], "inference header"), body[length:]


def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):
        raise MalformedRequest(f"input '{name}': shape must be a list of non-negative integers, received {value!r}")
    return value


def decode_request(body: bytes, header_length: str | None, manifest: Manifest, max_batch: int) -> InferRequest:
    payload, binary = split_body(body, header_length)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise MalformedRequest("inference request: expected a JSON object with an \"inputs\" list")
    specs = {s.name: s for s in manifest.inputs}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for raw in payload["inputs"]:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise MalformedRequest("each input needs \"name\", \"shape\", \"datatype\" and data")
        name = raw["name"]
        if name not in specs:
            raise MalformedRequest(f"unknown input '{name}'; model '{manifest.name}' takes {sorted(specs)}")
        if name in arrays:
            raise MalformedRequest(f"input '{name}' given twice")
        spec = specs[name]
        shape = _shape(raw.get("shape"), name)
        datatype = raw.get("datatype")
        expected_type = FROM_MANIFEST[spec.dtype]
        if datatype != expected_type:
            raise InvalidDatatype(f"input '{name}': expected datatype {expected_type}, received {datatype!r}")
        dtype = DTYPES[expected_type]
        count = math.prod(shape)
        params = raw.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0:
                raise MalformedRequest(f"input '{name}': binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise MalformedRequest(f"input '{name}': binary_data_size {size} at offset {offset} runs past the "
                                       f"{len(binary)} binary bytes after the header")
            if size != count * dtype.itemsize:
                raise InvalidShape(f"input '{name}': shape {shape} of {expected_type} needs "
                                   f"{count * dtype.itemsize} bytes, binary_data_size is {size}")
            array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
        else:
            if "data" not in raw:
                raise MalformedRequest(f"input '{name}': no \"data\" and no binary_data_size")
            try:
                array = np.asarray(raw["data"], dtype=dtype)
            except (ValueError, TypeError, OverflowError) as error:
                raise InvalidDatatype(f"input '{name}': data is not a (regular) array of {expected_type} numbers: "
                                      f"{error}") from None
            if array.size != count:
                raise InvalidShape(f"input '{name}': shape {shape} holds {count} values, data has {array.size}")
            array = array.reshape(shape)
        _check_shape(array, spec.shape, name, max_batch)
        arrays[name] = array
    if offset != len(binary):
        raise MalformedRequest(f"{len(binary)} binary bytes follow the header but the inputs declare {offset}")
    missing = sorted(set(specs) - set(arrays))
    if missing:
        raise MalformedRequest(f"missing input(s) {missing}; model '{manifest.name}' takes {sorted(specs)}")
    batch = _batch(arrays)
    for name, array in arrays.items():
        check_finite(array, f"input '{name}'")
    if isinstance(manifest.preprocessing, SequencePreprocessing):
        _check_lengths(arrays, manifest.preprocessing)
    outputs, binary_outputs = _requested_outputs(payload, manifest)
    request_id = payload.get("id")
    return InferRequest(request_id if isinstance(request_id, str) else None, arrays, batch, binary_outputs, outputs)


def _check_shape(array: np.ndarray, expected: list[int], name: str, max_batch: int) -> None:
    if array.ndim != len(expected) or any(d != -1 and d != a for d, a in zip(expected, array.shape, strict=True)):
        pretty = ", ".join(str(d) for d in expected)
        raise InvalidShape(f"input '{name}': expected shape [{pretty}], received {list(array.shape)}")
    if array.shape[0] == 0 or 0 in array.shape:
        raise InvalidShape(f"input '{name}': empty tensor {list(array.shape)}")
    if array.shape[0] > max_batch:
        raise InvalidShape(f"input '{name}': batch of {array.shape[0]} exceeds the limit of {max_batch}")


def _batch(arrays: dict[str, np.ndarray]) -> int:
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise InvalidShape(f"inputs disagree on the batch size: {sizes}")
    return int(next(iter(sizes.values())))


def _check_lengths(arrays: dict[str, np.ndarray], spec: SequencePreprocessing) -> None:
    time_steps = arrays["sequence"].shape[1]
    lengths = arrays["lengths"]
    if time_steps > spec.max_length:
        raise InvalidShape(f"input 'sequence': {time_steps} time steps exceed the limit of {spec.max_length}")
    if lengths.min() < 1 or lengths.max() > time_steps:
        raise InvalidValue(f"input 'lengths': each length must be 1..{time_steps} (the sequence tensor's time "
                           f"axis), received {lengths.min()}..{lengths.max()}")


def _requested_outputs(payload: dict[str, Any], manifest: Manifest) -> tuple[list[str], set[str]]:
    names = [o.name for o in manifest.outputs]
    params = payload.get("parameters") if isinstance(payload.get("parameters"), dict) else {}
    all_binary = bool(params.get("binary_data_output", False)) if params else False
    requested = payload.get("outputs")
    if requested is None:
        return names, set(names) if all_binary else set()
    if not isinstance(requested, list):
        raise MalformedRequest("\"outputs\" must be a list of {\"name\": ...}")
    chosen, binary = [], set()
    for out in requested:
        name = out.get("name") if isinstance(out, dict) else None
        if name not in names:
            raise MalformedRequest(f"unknown output {name!r}; model '{manifest.name}' has {names}")
        chosen.append(name)
        out_params = out.get("parameters") or {}
        if all_binary or (isinstance(out_params, dict) and out_params.get("binary_data")):
            binary.add(name)
    return chosen, binary


def encode_response(model: str, version: int, request: InferRequest, outputs: dict[str, np.ndarray],
                    ) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    described, blobs = [], []
    for name in request.outputs:
        array = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {"name": name, "datatype": _datatype(array), "shape": list(array.shape)}
        if name in request.binary_outputs:
            data = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            entry["data"] = array.ravel()
        described.append(entry)
    head: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": described}
    if request.id is not None:
        head["id"] = request.id
    header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def _datatype(array: np.ndarray) -> str:
    return DATATYPES.get(array.dtype, "BYTES")
