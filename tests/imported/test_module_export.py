"""``nnserve export --module``: a user's own PyTorch module (here ImageNet architectures, ResNet-18 and
MobileNetV3-Small, at 3x224x224) with its weights, labels and preprocessing, through the parity gate into the
repository; served, its answers equal onnxruntime's and PyTorch's. Inputs of open height and width, and the
outputs whose axes follow them. A module whose traced graph is wrong at other batch sizes, or weights that do not
fit, are refused and nothing is published."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from service.hosting.launcher import serve_subprocess
from tests.imported.clients import assert_same, direct, via_triton
from tests.imported.vision_nets import Segmenter, resnet18


def nnserve(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("exported")
    torch.manual_seed(1)
    weights = root / "resnet18.pt"
    model = resnet18()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # weights of its own, not the factory's
    torch.save(model.state_dict(), weights)
    labels = root / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(1000)))
    repository = root / "models"
    result = nnserve("export", "--module", "tests.imported.vision_nets:resnet18", "--weights", weights,
                     "--input", "image:float32:3x224x224", "--name", "resnet18", "--repository", repository,
                     "--labels", labels, "--image-preprocessing", "imagenet")
    assert result.returncode == 0, result.stderr
    assert "labels      1000 on output 'output' (logits: softmax applied)" in result.stdout
    result = nnserve("export", "--module", "tests.imported.vision_nets:mobilenet_v3_small", "--input",
                     "pixels:float32:3x224x224", "--output", "logits", "--name", "mobilenet",
                     "--repository", repository)
    assert result.returncode == 0, result.stderr
    return repository, weights


def test_the_report_carries_the_parity_gate_and_where_the_model_came_from(exported: tuple[Path, Path]) -> None:
    repository, _ = exported
    report = json.loads((repository / "resnet18" / "1" / "report.json").read_text())
    assert set(report["parity"]["max_abs_diff"]) == {"batch_1", "batch_7", "batch_64"}
    assert max(report["parity"]["max_abs_diff"].values()) <= report["parity"]["tolerance"] == 1e-4
    assert report["provenance"]["source"].startswith("tests.imported.vision_nets:resnet18, weights resnet18.pt sha256")
    config = json.loads((repository / "resnet18" / "1" / "config.json").read_text())
    assert config["classification"]["activation"] == "softmax" and config["processor"]["resize"] == "shorter-side-crop"


def test_served_exports_answer_as_onnxruntime_and_pytorch_do(exported: tuple[Path, Path]) -> None:
    repository, weights = exported
    model = resnet18()
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    with serve_subprocess(repository, ["--no-access-log"], env={"NNSERVE_WARMUP_BATCH_SIZES": "[1]"}) as (url, _, _):
        for name, input_name, output in (("resnet18", "image", "output"), ("mobilenet", "pixels", "logits")):
            expected = direct(repository / name / "1" / "model.onnx", {input_name: x})
            for binary in (True, False):
                got = via_triton(url, name, {input_name: x}, [output], binary)
                assert_same(got[output], expected[output], f"{name} binary={binary}")
        with torch.no_grad():
            logits = model(torch.from_numpy(x)).numpy()
        served = via_triton(url, "resnet18", {"image": x}, ["output"], True)["output"]
        np.testing.assert_allclose(served, logits, rtol=1e-3, atol=1e-3)  # the weights given, not the factory's
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), np.uint8)).save(buffer, "PNG")
        response = httpx.post(f"{url}/predict", data={"model": "resnet18", "top_k": "5"},
                              files={"file": ("x.png", buffer.getvalue())})
        assert response.status_code == 200, response.text
        prediction = response.json()["predictions"][0]
        assert prediction["label"].startswith("class ") and len(prediction["top_k"]) == 5
        assert 0 < prediction["probability"] <= 1  # logits turned into probabilities
        assert sum(p["probability"] for p in prediction["top_k"]) <= 1.0 + 1e-6


def test_open_height_and_width_stay_open_in_the_outputs_that_follow_them(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    result = nnserve("export", "--module", "tests.imported.vision_nets:Segmenter", "--input", "x:float32:3x-1x-1",
                     "--output", "score_map", "--output", "mean_scores", "--name", "segmenter",
                     "--repository", repository)
    assert result.returncode == 0, result.stderr
    report = json.loads((repository / "segmenter" / "1" / "report.json").read_text())
    assert "batch_7_open_axes_48" in report["parity"]["max_abs_diff"]
    config = json.loads((repository / "segmenter" / "1" / "config.json").read_text())
    assert [(o["name"], o["shape"]) for o in config["outputs"]] == [("score_map", [-1, 2, -1, -1]),
                                                                     ("mean_scores", [-1, 2])]
    assert config["inputs"][0]["shape"] == [-1, 3, -1, -1]
    model = Segmenter().eval()
    rng = np.random.default_rng(2)
    with serve_subprocess(repository, ["--no-access-log"], env={"NNSERVE_WARMUP_BATCH_SIZES": "[1]"}) as (url, _, _):
        for shape in ((1, 3, 20, 36), (3, 3, 57, 31)):
            x = rng.normal(size=shape).astype(np.float32)
            got = via_triton(url, "segmenter", {"x": x}, ["score_map", "mean_scores"], True)
            with torch.no_grad():
                expected = [t.numpy() for t in model(torch.from_numpy(x))]
            assert got["score_map"].shape == (shape[0], 2, *shape[2:])
            np.testing.assert_allclose(got["score_map"], expected[0], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(got["mean_scores"], expected[1], rtol=1e-4, atol=1e-5)


def test_a_module_traced_wrong_is_refused_and_nothing_is_published(tmp_path: Path) -> None:
    result = nnserve("export", "--module", "tests.imported.vision_nets:ShapeDependent", "--input", "x:float32:4",
                     "--name", "wrong", "--repository", tmp_path / "models")
    assert result.returncode == 1
    assert "NOT PUBLISHED: parity gate: max |torch - onnx| = 0.5" in result.stderr
    assert not (tmp_path / "models" / "wrong").exists()


def test_weights_that_do_not_fit_are_named(tmp_path: Path) -> None:
    weights = tmp_path / "other.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2), "extra.bias": torch.zeros(1)}}, weights)
    result = nnserve("export", "--module", "tests.imported.vision_nets:resnet18", "--weights", weights, "--input",
                     "image:float32:3x224x224", "--name", "r", "--repository", tmp_path / "models")
    assert result.returncode == 1 and "unexpected keys ['extra.bias']" in result.stderr
    assert "missing keys ['stem.0.weight'" in result.stderr
