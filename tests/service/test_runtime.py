"""Execution providers are chosen as asked and reported as they are; CUDA never falls back silently."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from service.manifest import Manifest
from service.runtime import CUDA, ProviderUnavailable, Runtime, RuntimeOptions


def newest(models_dir: Path, name: str) -> Path:
    return max((models_dir / name).iterdir(), key=lambda p: int(p.name))


def test_cpu_provider_is_reported_as_active(models_dir: Path) -> None:
    folder = newest(models_dir, "cnn")
    runtime = Runtime(folder / "model.onnx", Manifest.load(folder).inputs, RuntimeOptions("cpu"))
    assert runtime.providers == ["CPUExecutionProvider"]
    assert runtime.run(runtime.example(3))[0].shape == (3, 10)


def test_auto_measures_the_graph_optimisation_level(models_dir: Path) -> None:
    folder = newest(models_dir, "lstm")
    runtime = Runtime(folder / "model.onnx", Manifest.load(folder).inputs, RuntimeOptions("auto"))
    assert runtime.graph_optimization in ("all", "basic")
    expected = ["CUDAExecutionProvider", "CPUExecutionProvider"] if CUDA in ort.get_available_providers() \
        else ["CPUExecutionProvider"]
    assert runtime.providers == expected


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="CUDA is available here")
def test_asking_for_cuda_without_it_fails_clearly(models_dir: Path) -> None:
    folder = newest(models_dir, "mlp")
    with pytest.raises(ProviderUnavailable, match=r"providers=cuda.*install onnxruntime-gpu"):
        Runtime(folder / "model.onnx", Manifest.load(folder).inputs, RuntimeOptions("cuda"))
