"""Open Inference Protocol tensors over gRPC: ``ModelInferRequest`` -> ``InferRequest`` -> the data plane ->
``InferResponse`` -> ``ModelInferResponse``.

Inputs come either all as ``raw_input_contents`` (one entry per input, in order: the same bytes as HTTP's binary
extension) or each in the typed ``contents`` field of its datatype (FP16 has none: raw only); a tensor given both
ways, or neither, is refused. The answer takes the form the request did: raw outputs for raw inputs (Triton
answers raw always, and its client reads both), typed contents for typed inputs unless an output is FP16.
An input or requested output whose parameters name a system shared memory region (``shared_memory_region``,
``_byte_size``, ``_offset``: ``service.shared_memory``) is read from or written to it instead: such an input has
no ``raw_input_contents`` entry (the entries belong to the other inputs, in order), and such an output has an
empty entry in ``raw_output_contents`` (so the others keep their places) and its size in its parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.dataplane import InferRequest, InferResponse, parse_version
from service.datatypes import DTYPES, as_bytes_tensor, datatype_of
from service.errors import InvalidDatatype, InvalidShape, MalformedRequest
from service.protocols.grpc_proto import oip_pb2
from service.protocols.oip_codec import shared_input, shared_output, write_shared
from service.protocols.tensor_data import tensor_bytes, tensor_from_bytes
from service.shared_memory import Place, SharedAccess

CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents",
            "BYTES": "bytes_contents"}


@dataclass
class DecodedGrpcInfer:
    request: InferRequest
    typed: bool  # the inputs came as typed contents: answer the same way where every output can
    shared_outputs: dict[str, Place] = field(default_factory=dict)  # outputs to write to shared memory


def _parameters(parameters: Any) -> dict[str, Any]:
    """A tensor's ``InferParameter`` map as plain values."""
    return {key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
            for key, value in parameters.items()}


def decode_infer(message: Any, timeout_s: float | None, shared: SharedAccess | None = None
                 ) -> DecodedGrpcInfer:
    raw = message.raw_input_contents
    in_shared = {t.name: _parameters(t.parameters) for t in message.inputs if "shared_memory_region" in t.parameters}
    carried = len(message.inputs) - len(in_shared)
    if raw and len(raw) != carried:
        raise MalformedRequest(f"{len(raw)} raw_input_contents for {carried} inputs not in shared memory: give one "
                               f"for each, in order, or none")
    arrays: dict[str, np.ndarray] = {}
    raw_index = 0
    for tensor in message.inputs:
        name = tensor.name
        if name in arrays:
            raise MalformedRequest(f"input '{name}' given twice")
        shape = list(tensor.shape)
        if any(d < 0 for d in shape):
            raise MalformedRequest(f"input '{name}': shape must hold non-negative sizes, received {shape}")
        if tensor.datatype not in DTYPES:
            raise InvalidDatatype(f"input '{name}': datatype {tensor.datatype!r} is not one of {list(DTYPES)}")
        has_contents = tensor.HasField("contents")
        if name in in_shared:
            if has_contents:
                raise MalformedRequest(f"input '{name}' comes both as typed contents and in shared memory; give one")
            data = shared_input(shared, in_shared[name], f"input '{name}'")
            arrays[name] = tensor_from_bytes(data, tensor.datatype, shape, name, "shared_memory_byte_size")
        elif raw:
            if has_contents:
                raise MalformedRequest(f"input '{name}' comes both as typed contents and in raw_input_contents; "
                                       f"give one")
            arrays[name] = tensor_from_bytes(memoryview(raw[raw_index]), tensor.datatype, shape, name)
            raw_index += 1
        elif not has_contents:
            raise MalformedRequest(f"input '{name}' has no contents and the request no raw_input_contents")
        else:
            arrays[name] = _from_contents(tensor.contents, tensor.datatype, shape, name)
    outputs = [o.name for o in message.outputs] or None
    shared_outputs = {o.name: shared_output(shared, _parameters(o.parameters), f"output '{o.name}'")
                      for o in message.outputs if "shared_memory_region" in o.parameters}
    request = InferRequest(message.model_name, parse_version(message.model_version), arrays, outputs,
                           message.id or None, timeout_s)
    return DecodedGrpcInfer(request, typed=not raw and not in_shared, shared_outputs=shared_outputs)


def _from_contents(contents: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    field = CONTENTS.get(datatype)
    if field is None:
        raise InvalidDatatype(f"input '{name}': {datatype} has no typed contents field; send it in "
                              f"raw_input_contents")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidShape(f"input '{name}': shape {shape} holds {count} values, {field} has {len(values)}")
    if datatype == "BYTES":
        return as_bytes_tensor(list(values), shape)
    dtype = DTYPES[datatype]
    array = np.array(values, dtype=np.int64 if dtype.kind in "iu" and dtype.itemsize < 8 else dtype)
    if array.dtype != dtype:  # int_contents / uint_contents carry narrower integers: each must fit
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InvalidDatatype(f"input '{name}': {datatype} values must lie in [{info.min}, {info.max}]")
        array = array.astype(dtype)
    return array.reshape(shape)


def encode_infer(response: InferResponse, decoded: DecodedGrpcInfer) -> Any:
    message = oip_pb2.ModelInferResponse(model_name=response.model, model_version=str(response.version),
                                         id=response.id or "")
    datatypes = {name: datatype_of(array) for name, array in response.outputs.items()}
    typed = decoded.typed and all(d in CONTENTS for d in datatypes.values())
    for name, array in response.outputs.items():
        tensor = message.outputs.add(name=name, datatype=datatypes[name], shape=array.shape)
        target = decoded.shared_outputs.get(name)
        if target is not None:
            tensor.parameters["shared_memory_byte_size"].int64_param = \
                write_shared(target, array)["shared_memory_byte_size"]
            if not typed:
                message.raw_output_contents.append(b"")
        elif typed:
            values = array.ravel().tolist()
            getattr(tensor.contents, CONTENTS[datatypes[name]]).extend(values)
        else:
            message.raw_output_contents.append(tensor_bytes(array))
    return message
