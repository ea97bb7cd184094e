"""The files an ONNX model keeps tensors in beside itself ("external data"), read from the file without the
``onnx`` package (the serving side does not install it).

A model over protobuf's 2 GiB limit, and many exported with ``torch.onnx.export(..., external_data=True)``, keeps
its weights in other files whose names, relative to the model's folder, are in each tensor's ``external_data``
(key ``location``). ``nnserve import`` copies them into the version folder beside ``model.onnx``, where
onnxruntime looks for them. This walks the protobuf wire format through the messages that can hold tensors, with
the field numbers of ``onnx.proto`` (checked against the ``onnx`` package by
``tests/imported/test_external_data.py``), skipping every other field by its length.
"""

from __future__ import annotations

from pathlib import PurePosixPath

# message -> {field number: message it holds}; only the fields on a path to a TensorProto
MODEL, GRAPH, NODE, ATTRIBUTE, FUNCTION, SPARSE, TENSOR, TRAINING = range(8)
HOLDS: dict[int, dict[int, int]] = {
    MODEL: {7: GRAPH, 25: FUNCTION, 20: TRAINING},
    GRAPH: {1: NODE, 5: TENSOR, 15: SPARSE},
    NODE: {5: ATTRIBUTE},
    ATTRIBUTE: {5: TENSOR, 6: GRAPH, 10: TENSOR, 11: GRAPH, 22: SPARSE, 23: SPARSE},
    FUNCTION: {7: NODE, 11: ATTRIBUTE},
    SPARSE: {1: TENSOR, 2: TENSOR},
    TRAINING: {1: GRAPH, 2: GRAPH},
}
TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 13, 14  # TensorProto's; data_location 1 = EXTERNAL
ENTRY_KEY, ENTRY_VALUE = 1, 2  # StringStringEntryProto's


class MalformedModel(ValueError):
    """Not a protobuf message where an ONNX model has one."""


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise MalformedModel("a varint runs past the end of its message")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(data: memoryview) -> list[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)`` of one message: an int, or the bytes of a length-delimited field."""
    out: list[tuple[int, int, int | memoryview]] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            out.append((number, wire, value))
        elif wire == 1 or wire == 5:
            at += 8 if wire == 1 else 4
        elif wire == 2:
            length, at = _varint(data, at)
            if at + length > len(data):
                raise MalformedModel(f"field {number} says {length} bytes, {len(data) - at} remain")
            out.append((number, wire, data[at:at + length]))
            at += length
        else:
            raise MalformedModel(f"field {number} has wire type {wire}, which ONNX files do not use")
    if at != len(data):
        raise MalformedModel("a field runs past the end of its message")
    return out


def _tensor_location(fields: list[tuple[int, int, int | memoryview]]) -> str | None:
    if not any(n == TENSOR_DATA_LOCATION and v == 1 for n, _, v in fields):
        return None
    for number, _, value in fields:
        if number == TENSOR_EXTERNAL_DATA and isinstance(value, memoryview):
            try:
                entry = {n: bytes(v).decode() for n, _, v in _fields(value) if isinstance(v, memoryview)}
            except UnicodeDecodeError as error:
                raise MalformedModel(f"an external data entry is not UTF-8 text ({error})") from None
            if entry.get(ENTRY_KEY) == "location":
                return entry.get(ENTRY_VALUE, "")
    raise MalformedModel("a tensor whose data is external names no location")


def external_data_locations(model: bytes) -> list[str]:
    """Every ``location`` the model's external tensors name, once each, in order of first appearance."""
    found: dict[str, None] = {}
    pending: list[tuple[int, memoryview]] = [(MODEL, memoryview(model))]
    while pending:
        kind, data = pending.pop()
        fields = _fields(data)
        if kind == TENSOR:
            location = _tensor_location(fields)
            if location is not None:
                found.setdefault(location)
            continue
        holds = HOLDS[kind]
        pending.extend((holds[n], v) for n, wire, v in reversed(fields)
                       if n in holds and wire == 2 and isinstance(v, memoryview))
    return list(found)


def unsafe_location(location: str) -> str | None:
    """Why a location may not be copied (it must name a file inside the model's folder), or None."""
    path = PurePosixPath(location)
    if not path.parts or "\\" in location or "\0" in location:
        return "is empty or holds a backslash or NUL"
    if path.is_absolute() or ".." in path.parts:
        return "leaves the model's folder"
    if any(part.startswith(".") for part in path.parts):
        return "is hidden, or in a hidden folder"
    return None
