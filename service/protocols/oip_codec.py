"""Open Inference Protocol (KServe V2) tensors over HTTP: JSON and Triton's binary tensor extension, in and out.

A binary request is ``<JSON header><raw tensor bytes...>``; the header's length is in the
``Inference-Header-Content-Length`` HTTP header and each binary input declares ``parameters.binary_data_size``;
the tensors follow in input order. Every datatype of ``service.datatypes`` travels both ways, ``BYTES`` as JSON
strings or as length-prefixed elements, scalars with shape ``[]``; or, for a client on this host, in a registered
system shared memory region (``parameters.shared_memory_region``, ``_byte_size``, ``_offset``:
``service.shared_memory``), inputs read from it and outputs written to it. Decoding checks only what the protocol itself
says (a shape that does not hold the data given, sizes past the body, values that do not fit their datatype);
whether the tensors fit the model is the data plane's check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.dataplane import InferRequest, InferResponse
from service.datatypes import DTYPES, datatype_of
from service.errors import InvalidDatatype, InvalidSharedMemory, MalformedRequest
from service.protocols.http_io import parse_json
from service.protocols.tensor_data import tensor_bytes, tensor_from_bytes, tensor_from_json
from service.shared_memory import Place, SharedAccess

HEADER = "inference-header-content-length"


@dataclass
class DecodedInfer:
    request: InferRequest
    binary_outputs: set[str]  # outputs asked for as binary data
    all_binary: bool  # parameters.binary_data_output: every output binary
    shared_outputs: dict[str, Place] = field(default_factory=dict)  # outputs to write to shared memory


def split_body(body: bytes, header_length: str | None) -> tuple[Any, memoryview]:
    """The JSON header and a view of the binary part (a view: a 600 KB picture is not copied again)."""
    if header_length is None:
        return parse_json(body), memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        raise MalformedRequest(f"Inference-Header-Content-Length: expected an integer, received {header_length!r}"
                               ) from None
    if not 0 < length <= len(body):
        raise MalformedRequest(f"Inference-Header-Content-Length is {length} but the body has {len(body)} bytes")
    view = memoryview(body)
    return parse_json(view[:length], "inference header"), view[length:]


def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):
        raise MalformedRequest(f"input '{name}': shape must be a list of non-negative integers, received {value!r}")
    return value


def _shared_place(access: SharedAccess | None, params: dict[str, Any], what: str) -> Place:
    if access is None:
        raise InvalidSharedMemory(f"{what}: system shared memory is not taken here")
    regions = access.regions(what)
    if "shared_memory_byte_size" not in params:
        raise MalformedRequest(f"{what}: shared_memory_region needs shared_memory_byte_size")
    return regions.place(params["shared_memory_region"], params.get("shared_memory_offset", 0),
                         params["shared_memory_byte_size"], what)


def shared_input(access: SharedAccess | None, params: dict[str, Any], what: str) -> memoryview:
    """The bytes an input's ``shared_memory_*`` parameters name (``params`` holds ``shared_memory_region``)."""
    place = _shared_place(access, params, what)
    assert access is not None
    return access.read(place)


def shared_output(access: SharedAccess | None, params: dict[str, Any], what: str) -> Place:
    """Where a requested output's ``shared_memory_*`` parameters say it goes, checked before anything computes."""
    return _shared_place(access, params, what)


def decode_request(body: bytes, header_length: str | None, model: str, version: int | None,
                   shared: SharedAccess | None = None) -> DecodedInfer:
    payload, binary = split_body(body, header_length)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise MalformedRequest("inference request: expected a JSON object with an \"inputs\" list")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for raw in payload["inputs"]:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise MalformedRequest("each input needs \"name\", \"shape\", \"datatype\" and data")
        name = raw["name"]
        if name in arrays:
            raise MalformedRequest(f"input '{name}' given twice")
        shape = _shape(raw.get("shape"), name)
        datatype = raw.get("datatype")
        if datatype not in DTYPES:
            raise InvalidDatatype(f"input '{name}': datatype {datatype!r} is not one of {list(DTYPES)}")
        params = raw.get("parameters") or {}
        if not isinstance(params, dict):
            raise MalformedRequest(f"input '{name}': \"parameters\" must be an object")
        size = params.get("binary_data_size")
        if "shared_memory_region" in params:
            if size is not None or "data" in raw:
                raise MalformedRequest(f"input '{name}': shared_memory_region and "
                                       f"{'binary_data_size' if size is not None else 'data'} both given; give one")
            arrays[name] = tensor_from_bytes(shared_input(shared, params, f"input '{name}'"), datatype, shape, name,
                                             "shared_memory_byte_size")
        elif size is not None:
            if not isinstance(size, int) or size < 0:
                raise MalformedRequest(f"input '{name}': binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise MalformedRequest(f"input '{name}': binary_data_size {size} at offset {offset} runs past the "
                                       f"{len(binary)} binary bytes after the header")
            arrays[name] = tensor_from_bytes(binary[offset:offset + size], datatype, shape, name)
            offset += size
        else:
            if "data" not in raw:
                raise MalformedRequest(f"input '{name}': no \"data\" and no binary_data_size")
            arrays[name] = tensor_from_json(raw["data"], datatype, shape, name)
    if offset != len(binary):
        raise MalformedRequest(f"{len(binary)} binary bytes follow the header but the inputs declare {offset}")
    outputs, binary_outputs, all_binary, shared_outputs = _requested_outputs(payload, shared)
    request_id = payload.get("id")
    return DecodedInfer(InferRequest(model, version, arrays, outputs, request_id if isinstance(request_id, str)
                                     else None), binary_outputs, all_binary, shared_outputs)


def _requested_outputs(payload: dict[str, Any], shared: SharedAccess | None
                       ) -> tuple[list[str] | None, set[str], bool, dict[str, Place]]:
    params = payload.get("parameters") if isinstance(payload.get("parameters"), dict) else {}
    all_binary = bool(params.get("binary_data_output", False)) if params else False
    requested = payload.get("outputs")
    if requested is None:
        return None, set(), all_binary, {}
    if not isinstance(requested, list):
        raise MalformedRequest("\"outputs\" must be a list of {\"name\": ...}")
    chosen, binary, in_shared = [], set(), {}
    for out in requested:
        name = out.get("name") if isinstance(out, dict) else None
        if not isinstance(name, str):
            raise MalformedRequest(f"each requested output needs a \"name\", received {out!r:.60}")
        chosen.append(name)
        out_params = out.get("parameters") or {}
        if isinstance(out_params, dict) and "shared_memory_region" in out_params:
            if out_params.get("binary_data"):
                raise MalformedRequest(f"output '{name}': shared_memory_region and binary_data both asked for; "
                                       f"give one")
            in_shared[name] = shared_output(shared, out_params, f"output '{name}'")
        elif isinstance(out_params, dict) and out_params.get("binary_data"):
            binary.add(name)
    return chosen, binary, all_binary, in_shared


def write_shared(slot: Place, array: np.ndarray) -> dict[str, Any]:
    """An output written to its place in shared memory; what the response says of it instead of its data."""
    data = tensor_bytes(array) if array.dtype == object else np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
    slot.write(data)
    return {"shared_memory_byte_size": len(data)}


def encode_response(response: InferResponse, decoded: DecodedInfer) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    described, blobs = [], []
    for name, output in response.outputs.items():
        array = np.asarray(output, order="C")  # (not ascontiguousarray: it makes a scalar's shape [1])
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        target = decoded.shared_outputs.get(name)
        if target is not None:
            entry["parameters"] = write_shared(target, array)
        elif decoded.all_binary or name in decoded.binary_outputs:
            data = tensor_bytes(array)
            entry["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        elif datatype == "BYTES":
            entry["data"] = [v.decode("utf-8", "replace") for v in array.ravel()]
        else:
            entry["data"] = array.ravel()
        described.append(entry)
    head: dict[str, Any] = {"model_name": response.model, "model_version": str(response.version),
                            "outputs": described}
    if response.id is not None:
        head["id"] = response.id
    header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
