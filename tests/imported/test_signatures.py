"""Every kind of signature, imported as a user would, served by a real ``nnserve serve``: the unmodified
tritonclient (binary and JSON tensors) gets exactly what a direct onnxruntime run gives; batching is decided as the
signature allows; concurrent requests of different shapes each get their own answer; bad input for an imported
model gets a 4xx naming what was expected and what came while a valid request beside it succeeds."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from tritonclient.utils import np_to_triton_dtype

from tests.imported.clients import assert_same, binary_request, direct, post_binary, via_triton
from tests.imported.conftest import Served
from tests.imported.signatures import ragged_feeds, random_values
from tests.service.conftest import metric_value

NAMES = ["all-types", "fp16", "quantized-mlp", "uint8-image", "bool-bytes", "multi-io", "scalar-input",
         "state-second-axis", "no-batch-axis", "fixed-batch-1", "rows-not-kept", "ragged-sum", "open-height-width"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("name", NAMES)
def test_tritonclient_gets_what_onnxruntime_computes(served: Served, name: str, binary: bool) -> None:
    signature = served.signatures[name]
    feeds = signature.feeds(3)
    model_file = served.repository / name / "1" / "model.onnx"
    expected = direct(model_file, feeds)
    got = via_triton(served.url, name, feeds, list(expected), binary)
    for output, array in expected.items():
        assert_same(got[output], array, f"{name} {output}")


@pytest.mark.parametrize("name", NAMES)
def test_batching_follows_the_signature(served: Served, name: str) -> None:
    signature = served.signatures[name]
    config = httpx.get(f"{served.url}/v2/models/{name}/config").json()
    metadata = httpx.get(f"{served.url}/v2/models/{name}").json()
    assert (config["max_batch_size"] > 0) == signature.batches, config["nnserve"]
    assert ("dynamic_batching" in config) == signature.batches
    if not signature.batches:
        assert metadata["parameters"]["max_batch_size"] == 0
        assert any(word in metadata["parameters"]["batching"] for word in ("scalar", "fixed first axis", "rows"))
    # the completed config shows every input with its OIP datatype and whole shape
    session = ort.InferenceSession(str(served.repository / name / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert [i["name"] for i in metadata["inputs"]] == [i.name for i in session.get_inputs()]


def test_the_state_input_and_the_scalar_give_their_reasons(served: Served) -> None:
    state = httpx.get(f"{served.url}/v2/models/state-second-axis").json()["parameters"]["batching"]
    scalar = httpx.get(f"{served.url}/v2/models/scalar-input").json()["parameters"]["batching"]
    assert "'state' has a fixed first axis (2)" in state and "'scale' is a scalar" in scalar
    reshaped = httpx.get(f"{served.url}/v2/models/rows-not-kept").json()["parameters"]["batching"]
    assert "output 'y' has shape [2, 2] for 1 input rows" in reshaped, reshaped


async def test_concurrent_requests_of_different_shapes_each_get_their_own_answer(served: Served) -> None:
    model_file = served.repository / "open-height-width" / "1" / "model.onnx"
    rng = np.random.default_rng(3)
    shapes = [(1 + i % 3, 1, (8, 12, 16)[i % 3], (12, 8, 16, 12)[i % 4]) for i in range(48)]
    inputs = [rng.normal(size=s).astype(np.float32) for s in shapes]
    before = httpx.get(f"{served.url}/metrics").text

    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        results = await asyncio.gather(*[post_binary(client, "open-height-width", {"x": x}) for x in inputs])
    for x, result in zip(inputs, results, strict=True):
        expected = direct(model_file, {"x": x})
        for name, array in expected.items():
            assert_same(result[name], array, f"{name} for {x.shape}")
    after = httpx.get(f"{served.url}/metrics").text
    count = metric_value(after, "nnserve_batch_size_count", model="open-height-width") - \
        metric_value(before, "nnserve_batch_size_count", model="open-height-width")
    rows = sum(s[0] for s in shapes)
    assert count < len(shapes), "requests of the same shape should have shared batches"
    assert metric_value(after, "nnserve_batch_size_sum", model="open-height-width") - \
        metric_value(before, "nnserve_batch_size_sum", model="open-height-width") == rows


async def test_a_model_whose_rows_are_not_kept_answers_each_request_alone(served: Served) -> None:
    """Batched, ``[n1, 4]`` and ``[n2, 4]`` would run as ``[n1 + n2, 4]`` and their ``[2(n1 + n2), 2]`` answer be
    split at n1 rows: every answer but the last would be wrong."""
    model_file = served.repository / "rows-not-kept" / "1" / "model.onnx"
    rng = np.random.default_rng(5)
    inputs = [rng.normal(size=(1 + i % 4, 4)).astype(np.float32) for i in range(24)]
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        results = await asyncio.gather(*[post_binary(client, "rows-not-kept", {"x": x}) for x in inputs])
    for x, result in zip(inputs, results, strict=True):
        assert_same(result["y"], direct(model_file, {"x": x})["y"], f"y for {x.shape}")


async def test_sequences_of_different_lengths_share_padded_batches_each_answered_as_alone(served: Served) -> None:
    """A ragged axis: requests of different lengths join one batch, padded to its longest, and each answer is the
    one its request gets alone (here: onnxruntime on that request's tensors as sent)."""
    model_file = served.repository / "ragged-sum" / "1" / "model.onnx"
    inputs = [ragged_feeds(1 + i % 3, 2 + i % 7) for i in range(36)]
    before = httpx.get(f"{served.url}/metrics").text
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        results = await asyncio.gather(*[post_binary(client, "ragged-sum", feeds) for feeds in inputs])
    for feeds, result in zip(inputs, results, strict=True):
        assert_same(result["total"], direct(model_file, feeds)["total"], f"total for {feeds['seq'].shape}")
    after = httpx.get(f"{served.url}/metrics").text
    batches = metric_value(after, "nnserve_batch_size_count", model="ragged-sum") - \
        metric_value(before, "nnserve_batch_size_count", model="ragged-sum")
    lengths = len({f["seq"].shape[1] for f in inputs})
    # unpadded, each process would need a batch per length at least; its queue waits 30 ms (its config) to fill
    assert batches < lengths, f"{batches} batches for {len(inputs)} requests of {lengths} lengths"
    config = httpx.get(f"{served.url}/v2/models/ragged-sum/config").json()
    assert config["input"][0]["allow_ragged_batch"] is True, config


def _json(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _bytes_request(text: bytes, count: int) -> dict[str, Any]:
    return binary_request({"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [count], "parameters": {"binary_data_size": len(text)}},
        {"name": "flag", "datatype": "BOOL", "shape": [count], "data": [True] * count}]}, text)


BAD: list[tuple[str, str, dict[str, Any], int, str, list[str]]] = [
    ("FP32 for FP16", "fp16", {"json": {"inputs": [_json("x", "FP32", [1, 4], [0.0] * 4)]}}, 400,
     "invalid_datatype", ["expected datatype FP16", "'FP32'"]),
    ("two rows for a fixed batch of one", "fixed-batch-1", {"json": {"inputs": [_json("x", "FP32", [2, 4], [0] * 8)]}},
     400, "invalid_shape", ["expected shape [1, 4]", "received [2, 4]"]),
    ("six for five", "no-batch-axis", {"json": {"inputs": [_json("x", "FP32", [6], [0] * 6)]}}, 400, "invalid_shape",
     ["expected shape [5]", "received [6]"]),
    ("a vector for the scalar", "scalar-input", {"json": {"inputs": [
        _json("x", "FP32", [1, 3], [0] * 3), _json("scale", "FP32", [1], [2])]}}, 400, "invalid_shape",
     ["expected shape []", "received [1]"]),
    ("state of the wrong size", "state-second-axis", {"json": {"inputs": [
        _json("x", "FP32", [1, 4], [0] * 4), _json("state", "FP32", [3, 1, 4], [0] * 12)]}}, 400, "invalid_shape",
     ["expected shape [2, -1, 4]", "received [3, 1, 4]"]),
    ("300 as UINT8", "all-types", {"json": {"inputs": [_json(f"in_{d}", d.upper(), [1, 2], [300, 1]) if d == "uint8"
                                                       else _json(f"in_{d}", d.upper(), [1, 2], ["a", "b"] if d ==
                                                                  "bytes" else [1, 0]) for d in
                                                       ("bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16",
                                                        "int32", "int64", "fp16", "fp32", "fp64", "bytes")]}},
     400, "invalid_datatype", ["in_uint8", "UINT8", "[0, 255]"]),
    ("2.5 as INT64", "multi-io", {"json": {"inputs": [_json("a", "FP32", [1, 3], [0] * 3),
                                                      _json("b", "INT64", [1, 2], [2.5, 1])]}}, 400,
     "invalid_datatype", ["input 'b'", "INT64"]),
    ("rows that disagree", "multi-io", {"json": {"inputs": [_json("a", "FP32", [2, 3], [0] * 6),
                                                            _json("b", "INT64", [1, 2], [1, 1])]}}, 400,
     "invalid_shape", ["disagree", "'a': 2", "'b': 1"]),
    ("text that is not UTF-8", "bool-bytes", _bytes_request(struct.pack("<I", 2) + b"\xff\xfe", 1), 400,
     "invalid_value", ["input 'text'", "UTF-8"]),
    ("BYTES cut short", "bool-bytes", _bytes_request(struct.pack("<I", 9) + b"abc", 1), 400, "invalid_shape",
     ["declares 9 bytes", "3 remain"]),
    ("an unknown output", "fp16", {"json": {"inputs": [_json("x", "FP16", [1, 4], [0] * 4)],
                                            "outputs": [{"name": "z"}]}}, 400, "malformed_request", ["'z'", "['y']"]),
    ("an unknown datatype", "fp16", {"json": {"inputs": [_json("x", "BF16", [1, 4], [0] * 4)]}}, 400,
     "invalid_datatype", ["'BF16'", "FP16"]),
]


@pytest.mark.parametrize("case,model,request_kwargs,status,code,words", BAD, ids=[b[0] for b in BAD])
async def test_bad_input_for_an_imported_model_fails_alone(served: Served, case: str, model: str,
                                                           request_kwargs: dict[str, Any], status: int, code: str,
                                                           words: list[str]) -> None:
    signature = served.signatures[model]
    good = signature.feeds(2)
    good_body = {"inputs": [_json(n, np_to_triton_dtype(a.dtype), list(a.shape),
                                  [v.decode() for v in a.ravel()] if a.dtype == object else a.ravel().tolist())
                            for n, a in good.items()]}
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        bad, ok = await asyncio.gather(client.post(f"/v2/models/{model}/infer", **request_kwargs),
                                       client.post(f"/v2/models/{model}/infer", json=good_body))
    assert bad.status_code == status, bad.text
    body = bad.json()
    assert body["code"] == code
    for word in words:
        assert word in body["error"], (word, body["error"])
    assert ok.status_code == 200, ok.text


def test_predict_takes_pictures_for_a_uint8_nhwc_model_with_labels(served: Served) -> None:
    import io

    from PIL import Image

    answers = {}
    for colour in ("red", "green", "blue"):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
        response = httpx.post(f"{served.url}/predict", data={"model": "uint8-image"},
                              files={"file": ("c.png", buffer.getvalue())})
        assert response.status_code == 200, response.text
        answers[colour] = response.json()["predictions"][0]["label"]
    assert answers == {"red": "red", "green": "green", "blue": "blue"}
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[..., 2] = 200
    response = httpx.post(f"{served.url}/predict", json={"model": "uint8-image", "inputs": [pixels.tolist()]})
    assert response.json()["predictions"][0]["label"] == "blue"


def test_predict_takes_and_gives_named_tensors_for_a_model_without_a_processor(served: Served) -> None:
    a, b = random_values("FP32", (2, 3)), np.array([[1, 2], [3, 4]], np.int64)
    response = httpx.post(f"{served.url}/predict", json={"model": "multi-io", "inputs": {"a": a.tolist(),
                                                                                         "b": b.tolist()}})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert outputs["b_sum"] == {"datatype": "INT64", "shape": [2, 1], "data": [3, 7]}
    np.testing.assert_allclose(np.array(outputs["a_plus_one"]["data"]).reshape(2, 3), a + 1, rtol=1e-6)
    upload = httpx.post(f"{served.url}/predict", data={"model": "multi-io"}, files={"file": ("x.png", b"x")})
    assert upload.status_code == 415 and "named tensors" in upload.json()["error"]
