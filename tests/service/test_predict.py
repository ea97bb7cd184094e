"""/predict on real data: JSON pixels, uploaded pictures in every accepted format, sequences; /models."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.report import TrainingReport
from tests.conftest import MODELS_DIR
from tests.service.conftest import png_bytes


async def test_json_pixels_are_classified(client: httpx.AsyncClient, fashion: Any) -> None:
    images = fashion.test_images[:20]
    response = await client.post("/predict", json={"model": "cnn", "inputs": images.tolist(), "top_k": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "cnn" and isinstance(body["version"], int)
    predictions = body["predictions"]
    assert len(predictions) == 20
    first = predictions[0]
    assert set(first) == {"label", "index", "probability", "top_k"} and len(first["top_k"]) == 2
    assert first["label"] == fashion.labels[first["index"]] and first["top_k"][0]["label"] == first["label"]
    correct = sum(p["index"] == t for p, t in zip(predictions, fashion.test_labels[:20], strict=True))
    assert correct >= 17
    assert response.headers["x-request-id"]


async def test_png_uploads_reach_the_reported_accuracy(client: httpx.AsyncClient, fashion: Any,
                                                       models_dir: Any) -> None:
    report = TrainingReport.load(max((models_dir / "resnet").iterdir(), key=lambda p: int(p.name)))
    assert report is not None and report.metrics is not None
    count, correct = 400, 0
    for start in range(0, count, 100):
        files = [("file", (f"{i}.png", png_bytes(fashion.test_images[i]), "image/png"))
                 for i in range(start, start + 100)]
        response = await client.post("/predict", data={"model": "resnet"}, files=files)
        assert response.status_code == 200, response.text
        indices = [p["index"] for p in response.json()["predictions"]]
        correct += int((np.array(indices) == fashion.test_labels[start:start + 100]).sum())
    assert abs(correct / count - report.metrics.onnx_test_accuracy) < 0.035


@pytest.mark.parametrize("fmt,mode,size", [("JPEG", "RGB", (100, 80)), ("GIF", "P", (28, 28)),
                                           ("BMP", "RGB", (56, 56)), ("WEBP", "RGB", (40, 30)),
                                           ("TIFF", "L", (28, 28)), ("PNG", "RGBA", (300, 200)),
                                           ("PNG", "I;16", (28, 28))])
async def test_every_accepted_format_and_mode(client: httpx.AsyncClient, fashion: Any, fmt: str, mode: str,
                                              size: tuple[int, int]) -> None:
    picture = Image.fromarray(fashion.test_images[1]).resize(size).convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    response = await client.post("/predict", data={"model": "mlp"},
                                 files={"file": (f"x.{fmt.lower()}", buffer.getvalue())})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


async def test_sequences_reach_the_reported_accuracy(client: httpx.AsyncClient, vowels: Any,
                                                     models_dir: Any) -> None:
    report = TrainingReport.load(max((models_dir / "lstm").iterdir(), key=lambda p: int(p.name)))
    assert report is not None and report.metrics is not None
    indices = []
    for start in range(0, len(vowels.test_sequences), 64):
        chunk = [s.tolist() for s in vowels.test_sequences[start:start + 64]]
        response = await client.post("/predict", json={"model": "lstm", "inputs": chunk})
        assert response.status_code == 200, response.text
        indices += [p["index"] for p in response.json()["predictions"]]
    accuracy = float((np.array(indices) == vowels.test_labels).mean())
    assert accuracy == pytest.approx(report.metrics.onnx_test_accuracy, abs=0.003)


async def test_models_lists_versions_inputs_labels_and_accuracy(client: httpx.AsyncClient) -> None:
    response = await client.get("/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    assert set(models) == {p.name for p in MODELS_DIR.iterdir() if p.is_dir()} >= {"mlp", "cnn", "resnet", "lstm"}
    cnn = models["cnn"]
    assert cnn["versions"] and cnn["labels"][0] == "T-shirt/top" and cnn["accuracy"]["onnx_test"] > 0.9
    assert cnn["inputs"][0]["shape"] == [-1, 1, 28, 28] and cnn["providers"] == ["CPUExecutionProvider"]


async def test_openapi_docs_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/predict" in paths and "/v2/models/{name}/infer" in paths


async def test_a_dark_on_light_picture_is_inverted_for_the_built_ins(client: httpx.AsyncClient, fashion: Any) -> None:
    """A photo-like picture (a dark item on a white table, larger than 28x28) gets the light-on-dark treatment the
    model was trained on and the same answers as the original items; the originals are left alone."""
    rows = range(40)
    photos, originals = [], []
    for i in rows:
        item = Image.fromarray(255 - fashion.test_images[i]).resize((84, 84), Image.Resampling.BILINEAR)
        table = Image.new("L", (120, 100), 255)
        table.paste(item, (18, 8))
        buffer = io.BytesIO()
        table.save(buffer, format="JPEG", quality=95)
        photos.append(("file", (f"photo-{i}.jpg", buffer.getvalue(), "image/jpeg")))
        originals.append(("file", (f"{i}.png", png_bytes(fashion.test_images[i]), "image/png")))
    answers = []
    for files in (photos, originals):
        response = await client.post("/predict", data={"model": "cnn"}, files=files)
        assert response.status_code == 200, response.text
        answers.append([p["index"] for p in response.json()["predictions"]])
    truth = fashion.test_labels[: len(rows)].tolist()
    # not inverted, nearly all would be one class (a light frame); smaller in the frame than the originals, the
    # items are a little harder
    assert sum(a == t for a, t in zip(answers[0], truth, strict=True)) >= 30
    assert sum(a == t for a, t in zip(answers[1], truth, strict=True)) >= 36
