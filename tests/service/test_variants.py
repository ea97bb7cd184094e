"""An INT8 variant served beside its source by a real app: it answers like its source (labels, processor,
batching), and ``/models`` and the OIP model metadata show each beside the other."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tests.service.conftest import running_app


async def test_the_variant_serves_like_its_source_and_each_names_the_other(int8_repository: Path,
                                                                           fashion: Any) -> None:
    images = fashion.test_images[:64]
    async with running_app(int8_repository) as client:
        answers = {}
        for model in ("cnn", "cnn-int8"):
            response = await client.post("/predict", json={"model": model, "inputs": images.tolist(), "top_k": 3})
            assert response.status_code == 200, response.text
            answers[model] = response.json()["predictions"]
        same = sum(a["label"] == b["label"] for a, b in zip(answers["cnn"], answers["cnn-int8"], strict=True))
        assert same >= 63
        probabilities = np.array([p["probability"] for p in answers["cnn-int8"]])
        assert not np.allclose(probabilities * 255, np.round(probabilities * 255))  # float scores, not uint8 steps

        cards = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
        assert set(cards) == {"mlp", "mlp-int8", "cnn", "cnn-int8"}
        variant, source = cards["cnn-int8"], cards["cnn"]
        assert variant["labels"] == source["labels"] and variant["preprocessing"] == source["preprocessing"]
        assert variant["batching"]["max_batch_size"] == source["batching"]["max_batch_size"] == 64
        assert variant["variant_of"]["name"] == "cnn" and variant["variant_of"]["version"] == 1
        assert variant["variant_of"]["sha256"] == source["sha256"] and variant["variants"] == []
        assert variant["accuracy"]["onnx_test"] == variant["variant_of"]["accuracy"]["variant"]
        assert set(variant["variant_of"]["speedup"]) == {"batch_1", "batch_64"}
        assert variant["report"]["quantization"]["calibration"]["count"] == 256
        (listed,) = source["variants"]
        assert listed["name"] == "cnn-int8" and listed["current"] is True and listed["from_version"] == 1
        assert listed["accuracy"] == variant["accuracy"]["onnx_test"] and source["variant_of"] is None

        meta = (await client.get("/v2/models/cnn-int8")).json()
        assert meta["parameters"]["variant_of"] == "cnn:1" and meta["parameters"]["variants"] == []
        assert (await client.get("/v2/models/cnn")).json()["parameters"]["variants"] == ["cnn-int8"]
        config = (await client.get("/v2/models/cnn-int8/config")).json()
        assert config["max_batch_size"] == 64 and config["nnserve"]["classification"]["labels"][0] == "T-shirt/top"


async def test_a_variant_made_from_an_older_version_is_not_current(tmp_path: Path, int8_repository: Path) -> None:
    root = tmp_path / "models"
    for name in ("cnn", "cnn-int8"):
        shutil.copytree(int8_repository / name, root / name)
    shutil.copytree(root / "cnn" / "1", root / "cnn" / "2")  # a newer source version: the variant is stale
    async with running_app(root) as client:
        cards = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
    (listed,) = cards["cnn"]["variants"]
    assert cards["cnn"]["version"] == 2 and listed["from_version"] == 1 and listed["current"] is False
