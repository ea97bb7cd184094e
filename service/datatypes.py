"""Tensor datatypes: the Open Inference Protocol's names, numpy's dtypes and onnxruntime's type strings.

Inside nnserve a tensor is a numpy array; a ``BYTES`` tensor is an object array of ``bytes`` (each element one
string of any length). On the wire a binary ``BYTES`` tensor is, element after element in row-major order, a
4-byte little-endian length and then that many bytes (Triton's binary tensor extension, and gRPC's raw contents).
"""

from __future__ import annotations

import struct
from typing import Any, Literal

import numpy as np

from service.errors import InvalidShape, InvalidValue

Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                   "FP64", "BYTES"]

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
DATATYPE_OF: dict[np.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}

# onnxruntime's NodeArg.type strings of the tensor types it can serve; anything else (sequences, maps, bfloat16,
# float8...) is named in the refusal.
ORT_TYPES: dict[str, str] = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64", "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
_LENGTH = struct.Struct("<I")


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype of an array (unicode and bytes arrays count as ``BYTES``)."""
    name = DATATYPE_OF.get(array.dtype)
    if name is not None:
        return name
    if array.dtype.kind in "SU":
        return "BYTES"
    raise InvalidValue(f"tensors of numpy dtype {array.dtype} have no Open Inference Protocol datatype")


def element_size(datatype: str) -> int | None:
    """Bytes per element in binary form; ``None`` for ``BYTES`` (each element carries its own length)."""
    return None if datatype == "BYTES" else DTYPES[datatype].itemsize


def as_bytes_tensor(values: list[Any], shape: tuple[int, ...] | list[int]) -> np.ndarray:
    """An object array of ``bytes`` from str/bytes elements (JSON gives str, encoded here as UTF-8)."""
    flat = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        if isinstance(value, str):
            flat[i] = value.encode()
        elif isinstance(value, bytes):
            flat[i] = value
        else:
            raise InvalidValue(f"BYTES elements must be strings, received {type(value).__name__} {value!r:.40}")
    return flat.reshape(shape)


def serialize_bytes(array: np.ndarray) -> bytes:
    """A ``BYTES`` tensor in binary form: each element's 4-byte little-endian length, then its bytes."""
    parts = []
    for value in array.ravel():
        data = value.encode() if isinstance(value, str) else bytes(value)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(data: bytes | memoryview, count: int, where: str) -> np.ndarray:
    """``count`` length-prefixed elements that must fill ``data`` exactly -> a flat object array of ``bytes``."""
    out = np.empty(count, dtype=object)
    view = memoryview(data)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidShape(f"{where}: BYTES data ends after {i} of {count} elements (each is a 4-byte "
                               f"little-endian length, then the bytes)")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidShape(f"{where}: BYTES element {i} declares {length} bytes, {len(view) - offset} remain")
        out[i] = bytes(view[offset:offset + length])
        offset += length
    if offset != len(view):
        raise InvalidShape(f"{where}: {len(view) - offset} bytes left over after the {count} BYTES elements the "
                           f"shape holds")
    return out
