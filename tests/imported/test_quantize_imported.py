"""INT8 variants of models nobody here wrote, calibrated on inputs their user gives: the pretrained document
orientation classifier (PP-LCNet, from a PyPI wheel) on a folder of pictures, judged on labelled pictures and
served; the pretrained text-direction classifier on an .npz of tensors without labels, which its agreement gate
refuses (MinMax ranges from 32 text lines lose 17% of its answers)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from service.config import ModelConfig, read_config_file
from service.importer import ImportOptions, import_model
from tests.service.conftest import running_app
from tests.zoo import zoo_file
from training.errors import GateFailed
from training.quantize import QuantizeOptions, quantize

WORDS = "the quick brown fox jumps over the lazy dog invoice total amount date page section".split()  # noqa: SIM905
TURNS = {0: "0", 90: "270", 180: "180", 270: "90"}  # PIL turns counter-clockwise; the labels are clockwise degrees


def page(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(400, 700)), int(rng.integers(500, 900))
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    size = int(rng.integers(14, 30))
    font = ImageFont.load_default(size=size)
    y = int(rng.integers(20, 60))
    while y < height - 40:
        draw.text((int(rng.integers(20, 60)), y), " ".join(rng.choice(WORDS, int(rng.integers(3, 9)))),
                  fill="black", font=font)
        y += int(size * rng.uniform(1.3, 2.0))
    return picture


def pages(folder: Path, seeds: range, labelled: bool) -> Path:
    for angle, label in TURNS.items():
        target = folder / label if labelled else folder
        target.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            page(seed).rotate(angle, expand=True).save(target / f"page{seed}-{angle}.jpg", quality=90)
    return folder


def text_lines(count: int, seed: int) -> np.ndarray:
    """Text-line crops as PaddleOCR feeds its direction classifier: 3x48x192, (v / 255 - 0.5) / 0.5; every second
    one upside down."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        line = Image.new("RGB", (192, 48), "white")
        ImageDraw.Draw(line).text((int(rng.integers(2, 12)), int(rng.integers(4, 14))), " ".join(rng.choice(WORDS, 3)),
                                  fill="black", font=ImageFont.load_default(size=int(rng.integers(18, 26))))
        line = line.rotate(180) if i % 2 else line
        out.append(((np.asarray(line, np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1))
    return np.stack(out)


async def test_a_pretrained_classifier_quantized_on_a_folder_of_pictures_passes_and_serves(tmp_path: Path) -> None:
    root = tmp_path / "models"
    labels = tmp_path / "labels.txt"
    labels.write_text("0\n90\n180\n270\n")  # the file's own metadata: clockwise degrees
    import_model(zoo_file("orientation"), ImportOptions(name="orientation", repository=root, labels=labels,
                                                         image_preprocessing="imagenet-bgr"))
    result = quantize(QuantizeOptions(
        "orientation", repository=root, calibration=pages(tmp_path / "calibration", range(3), labelled=False),
        evaluation=pages(tmp_path / "evaluation", range(100, 104), labelled=True), min_speedup=0.0,
        speed_batches=(1, 4), speed_rounds=1, speed_seconds=0.2))
    q = result.quantization
    assert result.name == "orientation-int8" and q.source.name == "orientation"
    assert q.source.sha256 == "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"  # tests/zoo.py
    assert (q.calibration.count, q.calibration.seed, q.calibration.labelled) == (12, None, False)
    assert q.calibration.source.endswith("calibration (12 pictures)")
    assert (q.evaluation.count, q.evaluation.labelled) == (16, True)
    assert q.top1_agreement >= 0.99 and q.source_accuracy == q.variant_accuracy == 1.0
    assert set(q.speed) == {"batch_1", "batch_4"} and q.quantized_operators["Conv"] == 32
    assert result.report.dataset is None and result.report.family is None  # nothing it was trained on is known
    source = ModelConfig.model_validate({**read_config_file(root / "orientation" / "1"), "version": 1})
    assert result.config.processor == source.processor and result.config.classification == source.classification

    buffer = io.BytesIO()
    page(7).rotate(90, expand=True).save(buffer, format="PNG")
    async with running_app(root) as client:
        response = await client.post("/predict", data={"model": "orientation-int8"},
                                     files={"file": ("page.png", buffer.getvalue(), "image/png")})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] == "270"
        card = {m["name"]: m for m in (await client.get("/models")).json()["models"]}["orientation-int8"]
    assert card["variant_of"]["name"] == "orientation" and card["accuracy"]["onnx_test"] == 1.0


def test_an_unlabelled_npz_gates_on_agreement_and_a_model_that_loses_answers_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "models"
    import_model(zoo_file("text-direction"), ImportOptions(name="text-direction", repository=root))
    np.savez(tmp_path / "calibration.npz", x=text_lines(32, 0))
    np.savez(tmp_path / "evaluation.npz", x=text_lines(64, 1))
    options = QuantizeOptions("text-direction", repository=root, calibration=tmp_path / "calibration.npz",
                              evaluation=tmp_path / "evaluation.npz", min_speedup=0.0, speed_batches=(1, 8),
                              speed_rounds=1, speed_seconds=0.1)
    with pytest.raises(GateFailed, match=r"agreement gate: top-1 agreement with the source \d+\.\d+% over 64 inputs "
                                         r"is below 99.00%"):
        quantize(options)
    assert sorted(p.name for p in root.iterdir()) == ["text-direction"]
