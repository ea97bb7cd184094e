"""The IDX format of (Fashion-)MNIST: a magic number naming dtype and rank, big-endian dimensions, raw data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np

from training.data.sources import DataError

_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


def read_bytes(path: Path) -> bytes:
    """The file's decompressed bytes (``.gz`` or plain); a truncated or corrupt gzip is a DataError."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: not a complete gzip file ({error})") from error


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array of the shape its header declares."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (bad magic number {data[:4].hex()})")
    code, rank = data[2], data[3]
    if code not in _DTYPES:
        raise DataError(f"{source}: unknown IDX data type 0x{code:02x}")
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{source}: IDX header truncated ({len(data)} bytes)")
    shape = struct.unpack(f">{rank}I", data[4:header])
    dtype = _DTYPES[code]
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{source}: IDX size mismatch: header says {shape} = {expected} bytes, file has {len(data)}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    return parse_idx(read_bytes(path), str(path))
