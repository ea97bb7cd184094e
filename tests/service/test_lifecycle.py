"""Lifecycle paths in a real app (ASGI, lifespan running, real models): reloads under traffic, deadlines over HTTP,
oversized requests, NaN answers, server errors and client disconnects, with their codes, metrics and log lines;
uploads in every format against the same pixels as JSON; and every label value the dashboard and alerts query."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image

from tests.service.conftest import metric_value, running_app

AUTH = {"Authorization": "Bearer secret"}
ZEROS = [[0] * 28] * 28
REPO = Path(__file__).resolve().parents[2]


def oip_body(rows: int = 1, value: float = 0.0) -> bytes:
    return orjson.dumps({"inputs": [{"name": "image", "shape": [rows, 1, 28, 28], "datatype": "FP32",
                                     "data": [value] * (784 * rows)}]})


async def slowly(body: bytes, pieces: int = 4, pause: float = 0.005) -> AsyncIterator[bytes]:
    """A body that arrives in pieces: the request is accepted before all of it has come."""
    step = len(body) // pieces + 1
    for start in range(0, len(body), step):
        await asyncio.sleep(pause)
        yield body[start:start + step]


async def test_requests_accepted_during_reloads_are_all_answered(models_dir: Path, fashion: Any) -> None:
    """Hundreds of requests whose bodies are still arriving, and picture uploads being decoded, while the model is
    reloaded again and again: each is answered by whichever version is serving (the bug: a request looked up
    before its body arrived met the stopped batcher of the replaced version, 503)."""
    buffer = io.BytesIO()
    Image.fromarray(fashion.test_images[0]).save(buffer, format="PNG")
    picture = buffer.getvalue()
    async with running_app(models_dir, admin_token="secret", models=["mlp"]) as client:
        reloads = 0

        async def reload_repeatedly() -> None:
            nonlocal reloads
            while reloads < 8:
                assert (await client.post("/v2/repository/models/mlp/load", headers=AUTH)).status_code == 200
                reloads += 1
                await asyncio.sleep(0.01)

        async def oip() -> int:
            return (await client.post("/v2/models/mlp/infer", content=slowly(oip_body()))).status_code

        async def upload() -> int:
            return (await client.post("/predict", data={"model": "mlp"}, files={"file": ("x.png", picture)}
                                      )).status_code

        reloading = asyncio.ensure_future(reload_repeatedly())
        codes: list[int] = []
        while not reloading.done() or len(codes) < 300:  # waves of requests until 8 reloads happened among them
            codes += await asyncio.gather(*[oip() if i % 3 else upload() for i in range(60)])
        await reloading
    assert codes.count(200) == len(codes), {c: codes.count(c) for c in set(codes)}


async def test_a_request_is_never_504_once_computed_and_always_504_if_still_queued(
        models_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    body = {"model": "resnet", "inputs": [ZEROS] * 64}  # 15-40 ms of ResNet here, three times the 5 ms timeout
    async with running_app(models_dir, models=["resnet"], request_timeout_ms=5, access_log=True) as client:
        alone = await client.post("/predict", json=body)
        assert alone.status_code == 200, "taken at once, computed past its deadline: still answered"
        crowd = await asyncio.gather(*[client.post("/predict", json=body) for _ in range(6)])
        codes = [r.status_code for r in crowd]
        assert 504 in codes and set(codes) <= {200, 504}, codes  # queued behind one another: the later ones 504
        late = next(r for r in crowd if r.status_code == 504).json()
        assert late["code"] == "deadline_exceeded" and "not computed" in late["error"]
        metrics = (await client.get("/metrics")).text
        await asyncio.sleep(0.3)  # the access log's buffer flushes within 0.2 s
    assert metric_value(metrics, "nnserve_rejections_total", model="resnet", reason="timeout") == codes.count(504)
    assert metric_value(metrics, "nnserve_requests_total", model="resnet", outcome="timeout", code="504") == \
        codes.count(504)
    lines = [json.loads(x) for x in capfd.readouterr().out.splitlines() if x.startswith("{")]
    assert sum(1 for line in lines if line["status"] == 504 and line["model"] == "resnet") == codes.count(504)


async def test_a_request_larger_than_a_batch_is_split_and_one_larger_than_the_queue_gets_413(
        models_dir: Path) -> None:
    async with running_app(models_dir, models=["mlp"], max_batch_size=8, max_queue_size=32) as client:
        before = (await client.get("/metrics")).text
        split = await client.post("/v2/models/mlp/infer", content=oip_body(rows=20))
        assert split.status_code == 200 and split.json()["outputs"][0]["shape"] == [20, 10]
        after = (await client.get("/metrics")).text
        batches = metric_value(after, "nnserve_batch_size_count", model="mlp") - \
            metric_value(before, "nnserve_batch_size_count", model="mlp")
        over_eight = metric_value(after, "nnserve_batch_size_count", model="mlp") - \
            metric_value(after, "nnserve_batch_size_bucket", model="mlp", le="8.0")
        assert batches == 3 and over_eight == 0  # 8 + 8 + 4, none above --max-batch-size
        never = await client.post("/v2/models/mlp/infer", content=oip_body(rows=33))
    assert never.status_code == 413 and "retry-after" not in never.headers
    assert "33 rows" in never.json()["error"] and "32 samples" in never.json()["error"]


async def test_values_that_make_the_model_answer_nan_are_an_error_not_null(models_dir: Path) -> None:
    async with running_app(models_dir, models=["cnn"]) as client:
        huge = await client.post("/v2/models/cnn/infer", content=oip_body(value=3e38))
        fine = await client.post("/v2/models/cnn/infer", content=oip_body(value=3.0))
    assert huge.status_code == 400 and huge.json()["code"] == "invalid_value"
    assert "NaN" in huge.json()["error"] and "3e+38" in huge.json()["error"]
    assert fine.status_code == 200 and None not in fine.json()["outputs"][0]["data"]


def failing_model(path: Path) -> None:
    """A Gather whose index comes from the request: onnxruntime raises at run time for one out of range."""
    import onnx
    from onnx import TensorProto, helper

    table = helper.make_tensor("table", TensorProto.FLOAT, [4, 2], [float(i) for i in range(8)])
    graph = helper.make_graph([helper.make_node("Gather", ["table", "index"], ["row"], axis=0)], "gather",
                              [helper.make_tensor_value_info("index", TensorProto.INT64, ["N"])],
                              [helper.make_tensor_value_info("row", TensorProto.FLOAT, ["N", 2])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


async def test_server_errors_answer_500_with_their_code_count_and_log(
        models_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    repository = tmp_path / "models"
    shutil.copytree(models_dir / "mlp", repository / "mlp")
    (repository / "gather" / "1").mkdir(parents=True)
    failing_model(repository / "gather" / "1" / "model.onnx")
    async with running_app(repository, access_log=True) as client:
        good = {"inputs": [{"name": "index", "shape": [2], "datatype": "INT64", "data": [0, 3]}]}
        bad = {"inputs": [{"name": "index", "shape": [1], "datatype": "INT64", "data": [9]}]}
        ok, failed = await asyncio.gather(client.post("/v2/models/gather/infer", json=good),
                                          client.post("/v2/models/gather/infer", json=bad))
        assert ok.status_code == 200 or failed.status_code == 500  # they may share one batch: both fail then
        failed = await client.post("/v2/models/gather/infer", json=bad)
        assert failed.status_code == 500 and failed.json()["code"] == "inference_failed"
        assert "the backend failed" in failed.json()["error"]
        assert (await client.post("/v2/models/gather/infer", json=good)).status_code == 200  # the loop goes on

        served = client._transport.app.state.plane.registry.get("mlp")  # type: ignore[attr-defined]

        def broken(outputs: Any, k: int) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(served.outputs, "respond", broken)
        crashed = await client.post("/predict", json={"model": "mlp", "inputs": [ZEROS]})
        assert crashed.status_code == 500 and crashed.json() == {"error": "internal error: RuntimeError",
                                                                  "code": "internal_error"}
        metrics = (await client.get("/metrics")).text
        await asyncio.sleep(0.3)
    assert metric_value(metrics, "nnserve_requests_total", model="gather", outcome="error", code="500") >= 1
    assert metric_value(metrics, "nnserve_requests_total", model="mlp", outcome="error", code="500") == 1
    out = capfd.readouterr().out
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert any(line["status"] == 500 and line["path"] == "/predict" for line in lines)
    logged = [r for r in caplog.records if r.getMessage() == "unhandled error on POST /predict"]
    assert len(logged) == 1 and "RuntimeError: a bug" in caplog.text  # with its traceback


async def test_a_client_that_disconnects_is_counted_cancelled(models_dir: Path) -> None:
    async with running_app(models_dir, models=["mlp"]) as client:
        app = client._transport.app  # type: ignore[attr-defined]
        messages = [{"type": "http.request", "body": oip_body()[:100], "more_body": True},
                    {"type": "http.disconnect"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0)  # type: ignore[return-value]

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v2/models/mlp/infer", "raw_path": b"",
                 "root_path": "", "headers": [], "query_string": b"", "http_version": "1.1", "scheme": "http",
                 "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "asgi": {"version": "3.0"}}
        await app(scope, receive, send)
        metrics = (await client.get("/metrics")).text
    assert sent == []  # nobody to answer
    assert metric_value(metrics, "nnserve_requests_total", protocol="v2", outcome="cancelled", code="499") == 1


FORMATS = [("PNG", {}), ("JPEG", {"quality": 75}), ("BMP", {}), ("GIF", {}), ("WEBP", {"lossless": True}),
           ("TIFF", {})]


@pytest.mark.parametrize("fmt,options", FORMATS, ids=[f for f, _ in FORMATS])
async def test_an_upload_answers_exactly_as_its_decoded_pixels_sent_as_json(
        models_dir: Path, fashion: Any, fmt: str, options: dict[str, Any]) -> None:
    images = fashion.test_images[:8]
    async with running_app(models_dir, models=["cnn"]) as client:
        files, decoded = [], []
        for i, pixels in enumerate(images):
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format=fmt, **options)
            files.append(("file", (f"{i}.{fmt.lower()}", buffer.getvalue())))
            decoded.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L")).tolist())
        uploaded = await client.post("/predict", data={"model": "cnn", "top_k": "10"}, files=files)
        as_json = await client.post("/predict", json={"model": "cnn", "inputs": decoded, "top_k": 10})
    assert uploaded.status_code == as_json.status_code == 200
    assert uploaded.json()["predictions"] == as_json.json()["predictions"]
    if fmt != "JPEG":  # lossless: the very pixels of the test set
        assert decoded == images.tolist()


def queried_label_values() -> dict[str, set[str]]:
    """Every value of ``outcome`` and ``reason`` the dashboard and the alert rules select on."""
    texts = [(REPO / "deploy" / "grafana" / "dashboards" / "nnserve.json").read_text().replace('\\"', '"'),
             (REPO / "deploy" / "prometheus" / "alerts.yml").read_text()]
    found: dict[str, set[str]] = {"outcome": set(), "reason": set()}
    for text in texts:
        for label, value in re.findall(r'\b(outcome|reason)\s*=~?\s*"([^"]*)"', text):
            found[label] |= set(value.split("|"))
        for label, value in re.findall(r'\b(outcome|reason)\s*!=\s*"([^"]*)"', text):
            found[label].add(value)
    return found


async def test_every_label_value_the_dashboard_and_alerts_query_is_produced(
        models_dir: Path, tmp_path: Path) -> None:
    queried = queried_label_values()
    assert queried["outcome"] >= {"error", "timeout", "success"} and queried["reason"] >= {"overload", "timeout"}
    repository = tmp_path / "models"
    shutil.copytree(models_dir / "resnet", repository / "resnet")
    (repository / "gather" / "1").mkdir(parents=True)
    failing_model(repository / "gather" / "1" / "model.onnx")
    heavy = {"model": "resnet", "inputs": [ZEROS] * 64}  # tens of ms each: later ones queue past 10 ms
    async with running_app(repository, request_timeout_ms=10, max_queue_size=128) as client:
        await client.post("/predict", json={"model": "resnet", "inputs": [ZEROS]})  # success
        await client.post("/predict", json={"model": "resnet", "inputs": [[[0] * 27] * 28]})  # invalid shape
        await client.post("/v2/models/resnet/infer", content=oip_body(value=3e38))  # invalid value (NaN answer)
        crowd = await asyncio.gather(*[client.post("/predict", json=heavy) for _ in range(8)])
        bad = {"inputs": [{"name": "index", "shape": [1], "datatype": "INT64", "data": [9]}]}
        await client.post("/v2/models/gather/infer", json=bad)  # error: the backend raised
        metrics = (await client.get("/metrics")).text
    assert {r.status_code for r in crowd} >= {429, 504}, [r.status_code for r in crowd]
    produced = {label: set(re.findall(rf'{label}="([^"]*)"', metrics)) for label in ("outcome", "reason")}
    for label, values in queried.items():
        missing = values - produced[label]
        assert not missing, f"the dashboard or alerts query {label} {missing}, which no request here produced"
