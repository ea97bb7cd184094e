"""The Open Inference Protocol in-process: metadata, health, JSON and binary tensors, versions, and the model
repository extension behind its bearer token."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from service.repository import sha256_of
from tests.service.conftest import running_app

AUTH = {"Authorization": "Bearer secret"}


async def test_server_and_model_metadata(client: httpx.AsyncClient) -> None:
    server = (await client.get("/v2")).json()
    assert server["name"] == "nnserve" and "binary_tensor_data" in server["extensions"]
    assert (await client.get("/v2/health/live")).status_code == 200
    assert (await client.get("/v2/health/ready")).status_code == 200
    meta = (await client.get("/v2/models/lstm")).json()
    assert meta["inputs"] == [{"name": "sequence", "datatype": "FP32", "shape": [-1, -1, 12]},
                              {"name": "lengths", "datatype": "INT64", "shape": [-1]}]
    assert meta["outputs"][0]["shape"] == [-1, 9]
    assert meta["parameters"]["providers"] == ["CPUExecutionProvider"]
    assert meta["parameters"]["intra_op_threads"] == max(1, len(os.sched_getaffinity(0)))  # one worker: all
    version = meta["versions"][-1]
    assert (await client.get(f"/v2/models/lstm/versions/{version}/ready")).status_code == 200
    assert (await client.get("/v2/models/nope/ready")).status_code == 404


async def test_json_and_binary_tensors_give_the_same_probabilities(client: httpx.AsyncClient, fashion: Any) -> None:
    x = ((fashion.test_images[:3] / 255.0 - 0.286) / 0.353).astype(np.float32)[:, None]
    as_json = await client.post("/v2/models/cnn/infer", json={
        "id": "abc", "inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                                 "data": x.ravel().tolist()}]})
    assert as_json.status_code == 200, as_json.text
    body = as_json.json()
    assert body["id"] == "abc" and body["model_name"] == "cnn" and body["outputs"][0]["shape"] == [3, 10]
    from_json = np.array(body["outputs"][0]["data"], np.float32).reshape(3, 10)

    header = orjson.dumps({"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]})
    binary = await client.post("/v2/models/cnn/infer", content=header + x.tobytes(),
                               headers={"Inference-Header-Content-Length": str(len(header))})
    assert binary.status_code == 200 and binary.headers["content-type"] == "application/octet-stream"
    length = int(binary.headers["inference-header-content-length"])
    described = orjson.loads(binary.content[:length])["outputs"][0]
    assert described["parameters"]["binary_data_size"] == 3 * 10 * 4
    from_binary = np.frombuffer(binary.content[length:], np.float32).reshape(3, 10)
    np.testing.assert_allclose(from_binary, from_json, atol=1e-7)
    assert (from_binary.argmax(1) == fashion.test_labels[:3]).sum() >= 2


async def test_repository_api_needs_the_token(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v2/repository/index")).status_code == 401
    wrong = await client.post("/v2/repository/index", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "unauthorized"
    index = (await client.post("/v2/repository/index", headers=AUTH)).json()
    assert {"name": "cnn", "state": "READY"}.items() <= index[0].items() or any(
        r["name"] == "cnn" and r["state"] == "READY" for r in index)


async def test_unload_then_load_again(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v2/repository/models/mlp/unload", headers=AUTH)).status_code == 200
    response = await client.post("/predict", json={"model": "mlp", "inputs": [[[0] * 28] * 28]})
    assert response.status_code == 404
    assert (await client.post("/v2/repository/models/mlp/load", headers=AUTH)).status_code == 200
    response = await client.post("/predict", json={"model": "mlp", "inputs": [[[0] * 28] * 28]})
    assert response.status_code == 200


async def test_loading_a_broken_version_keeps_the_serving_one(models_dir: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(models_dir / "mlp", repository / "mlp")
    serving = max(int(p.name) for p in (repository / "mlp").iterdir())
    async with running_app(repository, admin_token="secret") as client:
        broken = repository / "mlp" / str(serving + 1)
        shutil.copytree(repository / "mlp" / str(serving), broken)
        (broken / "model.onnx").write_bytes(b"not an onnx graph")
        response = await client.post("/v2/repository/models/mlp/load", headers=AUTH)
        assert response.status_code == 400 and response.json()["code"] == "model_load_failed"
        assert "sha256" in response.json()["error"]  # the file is not the one the config describes
        config = orjson.loads((broken / "config.json").read_bytes())
        config["sha256"] = sha256_of(broken / "model.onnx")
        (broken / "config.json").write_bytes(orjson.dumps(config))
        response = await client.post("/v2/repository/models/mlp/load", headers=AUTH)
        assert response.status_code == 400 and "onnxruntime cannot load" in response.json()["error"]
        predict = await client.post("/predict", json={"model": "mlp", "inputs": [[[0] * 28] * 28]})
        assert predict.status_code == 200 and predict.json()["version"] == serving
        metrics = (await client.get("/metrics")).text
        assert f'nnserve_model_load_failures_total{{model="mlp",version="{serving + 1}"}} 2.0' in metrics
        index = (await client.post("/v2/repository/index", headers=AUTH)).json()
        assert any(r["version"] == str(serving + 1) and r["state"] == "UNAVAILABLE"
                   and "onnxruntime cannot load" in r["reason"] for r in index)
