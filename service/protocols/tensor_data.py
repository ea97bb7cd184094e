"""A tensor's data as the protocols carry it, the same for HTTP and gRPC: raw little-endian bytes (BYTES elements
each a 4-byte length and the bytes), or a JSON list (flat or nested, row-major). Decoding checks what the wire
says — that the shape holds the data given, that every value fits its datatype — never the model; that is the
data plane's check."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.datatypes import DTYPES, as_bytes_tensor, deserialize_bytes, element_size, serialize_bytes
from service.errors import InvalidDatatype, InvalidShape


def tensor_bytes(array: np.ndarray) -> bytes:
    """An array as raw bytes (C order; BYTES length-prefixed)."""
    return serialize_bytes(array) if array.dtype == object else np.ascontiguousarray(array).tobytes()


def tensor_from_bytes(data: memoryview, datatype: str, shape: list[int], name: str,
                      size_name: str = "binary_data_size") -> np.ndarray:
    """Raw little-endian elements (or length-prefixed ones, for BYTES) -> an array of ``shape``."""
    count = math.prod(shape)
    itemsize = element_size(datatype)
    if itemsize is None:
        return deserialize_bytes(data, count, f"input '{name}'").reshape(shape)
    if len(data) != count * itemsize:
        raise InvalidShape(f"input '{name}': shape {shape} of {datatype} needs {count * itemsize} bytes, "
                           f"{size_name} is {len(data)}")
    return np.frombuffer(data, dtype=DTYPES[datatype], count=count).reshape(shape)


def tensor_from_json(data: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """JSON ``data`` (flat or nested, row-major) -> an array of ``shape``, every value checked to fit."""
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=object).ravel().tolist() if isinstance(data, list) else [data]
        array = as_bytes_tensor(flat, (len(flat),))
    else:
        dtype = DTYPES[datatype]
        try:
            if dtype.kind in "iu":  # a float or out-of-range value must not be truncated or wrapped around
                parsed = np.asarray(data)
                if parsed.size and (parsed.dtype.kind not in "iub" or parsed.min() < np.iinfo(dtype).min
                                    or parsed.max() > np.iinfo(dtype).max):
                    raise ValueError(f"values must be integers in [{np.iinfo(dtype).min}, {np.iinfo(dtype).max}]")
                array = parsed.astype(dtype)
            else:
                array = np.asarray(data, dtype=dtype)
        except (ValueError, TypeError, OverflowError) as error:
            raise InvalidDatatype(f"input '{name}': data is not a (regular) array of {datatype} values: "
                                  f"{error}") from None
    if array.size != count:
        raise InvalidShape(f"input '{name}': shape {shape} holds {count} values, data has {array.size}")
    return array.reshape(shape)
