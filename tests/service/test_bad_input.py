"""Every kind of bad input gets its 4xx and stable code, never a 5xx, and a valid request sent at the same
time still succeeds."""

from __future__ import annotations

import asyncio
import struct
import zlib
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.service.conftest import png_bytes

ZEROS = [[0] * 28] * 28


def giant_png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels (a decompression bomb's header) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def v2_binary(header: dict[str, Any], blob: bytes, declared: int | None = None) -> dict[str, Any]:
    head = orjson.dumps(header)
    return {"content": head + blob,
            "headers": {"Inference-Header-Content-Length": str(len(head) if declared is None else declared),
                        "Content-Type": "application/octet-stream"}}


def image_input(shape: list[int], datatype: str = "FP32", data: Any = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "image", "shape": shape, "datatype": datatype}
    entry["data"] = data if data is not None else [0.0] * int(np.prod(shape))
    return entry


PNG = png_bytes(np.zeros((28, 28), np.uint8))
NAN_BLOB = np.full((1, 1, 28, 28), np.nan, np.float32).tobytes()

CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("unknown model", "/predict", {"json": {"model": "vgg", "inputs": [ZEROS]}}, 404, "model_not_found"),
    ("unknown version", "/predict", {"json": {"model": "cnn", "version": 99, "inputs": [ZEROS]}}, 404,
     "version_not_found"),
    ("unknown version v2", "/v2/models/cnn/versions/99/infer", {"json": {"inputs": [image_input([1, 1, 28, 28])]}},
     404, "version_not_found"),
    ("wrong shape", "/predict", {"json": {"model": "cnn", "inputs": [[[0] * 27] * 28]}}, 400, "invalid_shape"),
    ("wrong shape v2", "/v2/models/cnn/infer", {"json": {"inputs": [image_input([1, 28, 28])]}}, 400,
     "invalid_shape"),
    ("wrong dtype v2", "/v2/models/cnn/infer", {"json": {"inputs": [image_input([1, 1, 28, 28], "FP64")]}}, 400,
     "invalid_datatype"),
    ("strings as pixels", "/predict", {"json": {"model": "cnn", "inputs": [[["a"] * 28] * 28]}}, 400,
     "invalid_shape"),
    ("pixel out of range", "/predict", {"json": {"model": "cnn", "inputs": [[[300] * 28] * 28]}}, 400,
     "invalid_value"),
    ("NaN in JSON", "/predict", {"content": b'{"model": "cnn", "inputs": [[[NaN]]]}'}, 400, "invalid_value"),
    ("NaN in binary", "/v2/models/cnn/infer",
     v2_binary({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                            "parameters": {"binary_data_size": len(NAN_BLOB)}}]}, NAN_BLOB), 400, "invalid_value"),
    ("empty list", "/predict", {"json": {"model": "cnn", "inputs": []}}, 400, "invalid_shape"),
    ("ragged arrays", "/predict", {"json": {"model": "cnn", "inputs": [[[0] * 28] * 27 + [[0] * 5]]}}, 400,
     "invalid_shape"),
    ("ragged sequence", "/predict", {"json": {"model": "lstm", "inputs": [[[0] * 12, [0] * 11]]}}, 400,
     "invalid_shape"),
    ("wrong feature count", "/predict", {"json": {"model": "lstm", "inputs": [[[0] * 11] * 9]}}, 400,
     "invalid_shape"),
    ("lengths out of range", "/v2/models/lstm/infer",
     {"json": {"inputs": [{"name": "sequence", "shape": [1, 3, 12], "datatype": "FP32", "data": [0.0] * 36},
                          {"name": "lengths", "shape": [1], "datatype": "INT64", "data": [9]}]}}, 400,
     "invalid_value"),
    ("huge body", "/predict", {"content": b"[" + b"0," * (9 * 1024 * 1024) + b"0]"}, 413, "payload_too_large"),
    ("too many inputs", "/predict", {"json": {"model": "mlp", "inputs": [ZEROS] * 300}}, 413,
     "payload_too_large"),
    ("non-image bytes", "/predict", {"data": {"model": "cnn"}, "files": {"file": ("a.png", b"hello world")}}, 422,
     "invalid_image"),
    ("truncated PNG", "/predict", {"data": {"model": "cnn"}, "files": {"file": ("a.png", PNG[: len(PNG) // 2])}},
     422, "invalid_image"),
    ("20000x20000 image", "/predict",
     {"data": {"model": "cnn"}, "files": {"file": ("bomb.png", giant_png_header(20000, 20000))}}, 422,
     "image_too_large"),
    ("sequence model upload", "/predict", {"data": {"model": "lstm"}, "files": {"file": ("a.png", PNG)}}, 415,
     "unsupported_media_type"),
    ("malformed JSON", "/predict", {"content": b'{"model": "cnn", "inputs": [[['}, 400, "malformed_request"),
    ("JSON not an object", "/predict", {"json": [1, 2]}, 400, "malformed_request"),
    ("missing inputs", "/predict", {"json": {"model": "cnn"}}, 400, "malformed_request"),
    ("malformed binary header", "/v2/models/cnn/infer",
     {"content": b"{not json" + bytes(16), "headers": {"Inference-Header-Content-Length": "9"}}, 400,
     "malformed_request"),
    ("header length past the body", "/v2/models/cnn/infer",
     v2_binary({"inputs": [image_input([1, 1, 28, 28])]}, b"", declared=10_000), 400, "malformed_request"),
    ("header length not a number", "/v2/models/cnn/infer",
     v2_binary({"inputs": [image_input([1, 1, 28, 28])]}, b"", declared=None) | {
         "headers": {"Inference-Header-Content-Length": "abc"}}, 400, "malformed_request"),
    ("binary size mismatch", "/v2/models/cnn/infer",
     v2_binary({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                            "parameters": {"binary_data_size": 100}}]}, bytes(100)), 400, "invalid_shape"),
    ("unknown input name", "/v2/models/cnn/infer",
     {"json": {"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP32", "data": [0]}]}}, 400,
     "malformed_request"),
    ("top_k not an integer", "/predict", {"json": {"model": "cnn", "inputs": [ZEROS], "top_k": "all"}}, 400,
     "invalid_value"),
    ("unknown route", "/predictions", {"json": {}}, 404, "not_found"),
]


@pytest.mark.parametrize("name,path,kwargs,status,code", CASES, ids=[c[0] for c in CASES])
async def test_bad_input_gets_its_4xx_and_a_concurrent_valid_request_succeeds(
        client: httpx.AsyncClient, name: str, path: str, kwargs: dict[str, Any], status: int, code: str) -> None:
    valid = {"model": "cnn", "inputs": [ZEROS, ZEROS]}
    bad, good = await asyncio.gather(client.post(path, **kwargs), client.post("/predict", json=valid))
    assert bad.status_code == status, bad.text
    assert bad.json()["code"] == code and len(bad.json()["error"]) > 10
    assert good.status_code == 200 and len(good.json()["predictions"]) == 2


async def test_messages_say_what_was_expected_and_what_came(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", json={"model": "cnn", "inputs": [[[0] * 27] * 28]})
    assert "expected shape [N, 28, 28]" in response.json()["error"] and "[1, 28, 27]" in response.json()["error"]
    response = await client.post("/v2/models/cnn/infer", json={"inputs": [image_input([1, 1, 28, 28], "FP64")]})
    assert "expected datatype FP32, received 'FP64'" in response.json()["error"]
    response = await client.post("/predict", json={"model": "vgg", "inputs": [ZEROS]})
    assert "'vgg'" in response.json()["error"] and "cnn" in response.json()["error"]
    metrics = (await client.get("/metrics")).text
    assert 'nnserve_rejections_total{model="cnn",reason="invalid",version="' in metrics or \
        'reason="invalid"' in metrics


@pytest.mark.parametrize(("values", "bad"), [
    ([3e38] * 784, 0),  # finite, however large
    ([1.0] * 783 + [float("nan")], 1),
    ([float("inf"), float("-inf")] + [0.0] * 782, 2),
])
def test_finiteness_is_exact(values: list[float], bad: int) -> None:
    from service.errors import InvalidValue
    from service.processors.image import check_finite

    for dtype in (np.float32, np.float64):
        array = np.array(values, dtype=dtype).reshape(1, 1, 28, 28)
        if bad:
            with pytest.raises(InvalidValue, match=f"{bad} value"):
                check_finite(array, "x")
        else:
            check_finite(array, "x")
    big = np.full(10, 1e308)
    check_finite(big, "x")
