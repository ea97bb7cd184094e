"""Concurrent requests really form batches; padding inside a batch changes no result; one bad request in a
batch window fails only itself."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service.batcher import INLINE_MAX_S
from service.loading import INLINE_SATURATED_S
from tests.service.conftest import metric_value, running_app


async def test_concurrent_requests_form_batches_larger_than_one(client: httpx.AsyncClient, fashion: Any) -> None:
    images = fashion.test_images[:64]
    responses = await asyncio.gather(*[
        client.post("/predict", json={"model": "resnet", "inputs": [images[i].tolist()]}) for i in range(64)])
    assert all(r.status_code == 200 for r in responses)
    metrics = (await client.get("/metrics")).text
    batches = metric_value(metrics, "nnserve_batch_size_count", model="resnet")
    samples = metric_value(metrics, "nnserve_batch_size_sum", model="resnet")
    assert samples == 64 and batches < 64, f"{batches} batches for 64 requests: nothing was batched"
    singles = metric_value(metrics, "nnserve_batch_size_bucket", model="resnet", le="1.0")
    assert singles < batches, "no batch larger than one"
    assert metric_value(metrics, "nnserve_requests_total", model="resnet", outcome="success", code="200") == 64


async def test_padding_in_a_batch_changes_no_result(client: httpx.AsyncClient, vowels: Any) -> None:
    sequences = sorted(vowels.test_sequences, key=len)
    short, longest = sequences[0], sequences[-1]
    alone = (await client.post("/predict", json={"model": "lstm", "inputs": [short.tolist()], "top_k": 9})).json()
    mixed = [client.post("/predict", json={"model": "lstm", "inputs": [longest.tolist(), short.tolist()],
                                          "top_k": 9})]
    mixed += [client.post("/predict", json={"model": "lstm", "inputs": [s.tolist()], "top_k": 9})
              for s in sequences[-20:]]
    together = (await asyncio.gather(*mixed))[0].json()

    def probabilities(prediction: dict[str, Any]) -> np.ndarray:
        return np.array([p["probability"] for p in sorted(prediction["top_k"], key=lambda p: p["index"])])

    assert len(short) < len(longest)
    np.testing.assert_allclose(probabilities(together["predictions"][1]), probabilities(alone["predictions"][0]),
                               atol=1e-6)


async def test_a_bad_request_among_many_fails_alone(client: httpx.AsyncClient, fashion: Any) -> None:
    good = {"model": "cnn", "inputs": [fashion.test_images[0].tolist()]}
    bad = {"model": "cnn", "inputs": [[[0] * 28] * 27]}
    calls = [client.post("/predict", json=bad if i % 8 == 3 else good) for i in range(32)]
    responses = await asyncio.gather(*calls)
    for i, response in enumerate(responses):
        assert response.status_code == (400 if i % 8 == 3 else 200)
    labels = {r.json()["predictions"][0]["label"] for i, r in enumerate(responses) if i % 8 != 3}
    assert len(labels) == 1


async def test_a_request_for_no_served_model_is_counted_without_per_model_series(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/nope/infer", json={"inputs": []})
    assert response.status_code == 404
    metrics = (await client.get("/metrics")).text
    assert metric_value(metrics, "nnserve_requests_total", model="_unknown", code="404") == 1
    assert 'model="_unknown"' not in "".join(
        line for line in metrics.splitlines() if line.startswith(("nnserve_in_flight", "nnserve_preprocess")))


async def test_every_models_requests_count_as_traffic_and_an_explicit_bound_holds(models_dir: Path,
                                                                                tmp_path: Path) -> None:
    """service.traffic through the real app: one record per process, every model's requests in it (a model with a
    bound of its own too), and only the models on the default bound lower it while others are asked for."""
    for name in ("mlp", "cnn"):
        shutil.copytree(models_dir / name, tmp_path / name)
    config_path = tmp_path / "mlp" / "1" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "batching": {"event_loop_compute_ms": 20}}))
    cores = len(os.sched_getaffinity(0))  # a process per core, one thread: the default bound is INLINE_SATURATED_S
    async with running_app(tmp_path, providers="cpu", workers=cores, intra_op_threads=1) as client:
        registry = client._transport.app.state.plane.registry  # type: ignore[attr-defined]
        mlp, cnn = registry.get("mlp").batcher, registry.get("cnn").batcher
        assert mlp._traffic is cnn._traffic is registry.traffic
        assert (mlp._inline_s, mlp._inline_mixed_s) == (0.02, 0.02)  # the mlp's bound was set: it holds
        assert (cnn._inline_s, cnn._inline_mixed_s) == (INLINE_SATURATED_S, INLINE_MAX_S)  # the default yields
        response = await client.post("/predict", json={"model": "mlp", "inputs": [np.zeros((28, 28)).tolist()]})
        assert response.status_code == 200
        now = asyncio.get_running_loop().time()
        assert registry.traffic.mixed("cnn:1", now)  # the mlp's request counts for the cnn
        assert not registry.traffic.mixed("mlp:1", now)
