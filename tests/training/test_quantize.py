"""``nnserve quantize`` on the committed models and real data: a variant that passes the gates, with its source,
calibration, accuracies and speed in its report and its source's serving contract in its config; gates that
really refuse (a constant calibration, a gate forced out of reach), with nothing published; bad calibration
files refused naming expected and received."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from service.bench.inprocess import cpu_session
from service.config import ModelConfig, read_config_file
from service.processors.image import normalize_pixels
from service.report import TrainingReport
from service.repository import list_versions, sha256_of
from service.samples import SampleIndex
from training.calibration import CalibrationError
from training.errors import GateFailed
from training.quantize import QuantizeFailed, QuantizeOptions, quantize

pytestmark = pytest.mark.filterwarnings("ignore")


def config_of(folder: Path) -> ModelConfig:
    return ModelConfig.model_validate({**read_config_file(folder), "version": int(folder.name)})


def test_the_cnn_variant_passes_the_gates_and_reports_what_it_was_made_from(int8_repository: Path,
                                                                            models_dir: Path) -> None:
    folder = int8_repository / "cnn-int8" / "1"
    source = config_of(models_dir / "cnn" / "1")
    config, report = config_of(folder), TrainingReport.load(folder)
    assert report is not None and report.quantization is not None and report.metrics is not None
    q = report.quantization
    assert (q.source.name, q.source.version) == ("cnn", 1)
    assert q.source.sha256 == source.sha256 == sha256_of(models_dir / "cnn" / "1" / "model.onnx")
    assert q.calibration.source == "fashion-mnist train split (train-images-idx3-ubyte.gz)"
    assert (q.calibration.count, q.calibration.seed, q.calibration.labelled) == (256, 0, False)
    assert (q.evaluation.count, q.evaluation.labelled) == (10_000, True) and "test split" in q.evaluation.source
    assert q.top1_agreement >= 0.99 and q.top1_agreement_min == 0.99 and q.max_accuracy_drop == 0.003
    source_report = TrainingReport.load(models_dir / "cnn" / "1")
    assert source_report is not None and source_report.metrics is not None
    assert q.source_accuracy == pytest.approx(source_report.metrics.onnx_test_accuracy)  # the committed cnn's own
    assert q.variant_accuracy is not None and q.source_accuracy is not None
    assert q.source_accuracy - q.variant_accuracy <= 0.003
    assert report.metrics.onnx_test_accuracy == q.variant_accuracy and report.metrics.torch_test_accuracy is None
    assert set(report.metrics.per_class_accuracy) == set(source.classification.labels if source.classification
                                                         else [])
    assert set(q.speed) == {"batch_1", "batch_64"} and all(s.speedup > 0 and len(s.rounds) == 1
                                                           for s in q.speed.values())
    assert q.quantized_operators["Conv"] == 4 and q.quantized_operators["Gemm"] == 2
    assert "quant_pre_process" in q.preprocessing and q.format == "QDQ" and q.calibration_method == "minmax"
    assert report.provenance is not None and report.provenance.torch is None
    assert report.provenance.source == f"cnn version 1 sha256 {source.sha256}"
    assert report.dataset == TrainingReport.load(models_dir / "cnn" / "1").dataset  # type: ignore[union-attr]
    # the serving contract is the source's, under its own name and sha256
    assert config.name == "cnn-int8" and config.sha256 == sha256_of(folder / "model.onnx")
    same = {"inputs", "outputs", "classification", "processor", "ragged", "batching", "runtime", "max_batch_size",
            "task", "platform"}
    assert config.model_dump(include=same) == source.model_dump(include=same)
    assert config.description.startswith("INT8 (static QDQ) variant of cnn version 1")
    # try-it samples, chosen by the variant's own answers on the test set: one per class, then two it gets wrong
    samples = SampleIndex.load(folder)
    assert samples is not None and samples.dataset == "fashion-mnist"
    assert {i.label for i in samples.items} == set(source.classification.labels if source.classification else [])
    assert len([i for i in samples.items if i.note]) >= 2 and all((folder / "samples" / i.file).exists()
                                                                   for i in samples.items)


def test_the_variant_is_int8_where_it_computes_and_float_where_it_answers(int8_repository: Path) -> None:
    """What onnxruntime.quantization writes (a canary for its behaviour): weights int8 with one scale per output
    channel, activations uint8, and the output-producing Softmax left in float."""
    graph = onnx.load(str(int8_repository / "cnn-int8" / "1" / "model.onnx")).graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    weights = [n for n in graph.node if n.op_type == "DequantizeLinear" and constants.get(n.input[0]) is not None
               and constants[n.input[0]].dtype == np.int8]
    assert len(weights) >= 6 and all(constants[n.input[1]].size > 1 for n in weights)  # per channel
    activations = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert activations and all(constants[n.input[2]].dtype == np.uint8 for n in activations)
    produced = {o: n for n in graph.node for o in n.output}
    last = produced[graph.output[0].name]
    assert last.op_type == "Softmax" and produced[last.input[0]].op_type == "DequantizeLinear"


def test_the_reported_accuracy_is_what_onnxruntime_gives_through_the_service_processor(
        int8_repository: Path, fashion_images: np.ndarray, fashion_labels: np.ndarray) -> None:
    folder = int8_repository / "cnn-int8" / "1"
    config, report = config_of(folder), TrainingReport.load(folder)
    assert report is not None and report.metrics is not None and config.processor is not None
    session = cpu_session(folder / "model.onnx")
    images = normalize_pixels(fashion_images, config.processor)  # type: ignore[arg-type]
    top1 = np.concatenate([session.run(None, {"image": images[i:i + 1000]})[0].argmax(1)
                           for i in range(0, len(images), 1000)])
    assert float((top1 == fashion_labels).mean()) == report.metrics.onnx_test_accuracy


def constant_calibration(path: Path, models_dir: Path) -> Path:
    spec = config_of(models_dir / "mlp" / "1").processor
    np.savez(path, image=normalize_pixels(np.zeros((64, 28, 28), np.uint8), spec))  # type: ignore[arg-type]
    return path


def test_a_constant_calibration_is_refused_and_nothing_is_published(tmp_path: Path, int8_repository: Path,
                                                                    models_dir: Path, data_dir: Path) -> None:
    options = QuantizeOptions("mlp", repository=int8_repository, name="mlp-constant", data_dir=data_dir,
                              calibration=constant_calibration(tmp_path / "constant.npz", models_dir),
                              evaluation_count=2000, min_speedup=0.0, speed_rounds=1, speed_seconds=0.1)
    with pytest.raises(GateFailed, match=r"agreement gate: top-1 agreement with the source \d+\.\d+% over 2000 "
                                         r"inputs is below 99.00% by"):
        quantize(options)
    assert not (int8_repository / "mlp-constant").exists()


@pytest.mark.parametrize(("gate", "match"), [
    ({"min_agreement": 1.0}, r"agreement gate: .* is below 100.00% by"),
    ({"max_accuracy_drop": -0.05}, r"accuracy gate: INT8 accuracy .* points below the source's .*, more than -5.00"),
    ({"min_speedup": 100.0}, r"speed gate: INT8 does not pay here: .*x the source's raw samples/s at batch 64 .* "
                             r"below 100.00x; --min-speedup 0 publishes it anyway"),
])
def test_a_gate_forced_out_of_reach_refuses_and_nothing_is_published(int8_repository: Path, data_dir: Path,
                                                                     gate: dict[str, float], match: str) -> None:
    options = QuantizeOptions("mlp", repository=int8_repository, name="mlp-refused", data_dir=data_dir, count=128,
                              evaluation_count=2000, speed_rounds=1, speed_seconds=0.1, **gate)  # type: ignore[arg-type]
    with pytest.raises(GateFailed, match=match):
        quantize(options)
    assert not (int8_repository / "mlp-refused").exists()
    assert list_versions(int8_repository / "mlp-int8") == [1]


def test_bad_calibration_inputs_are_refused_naming_expected_and_received(tmp_path: Path, int8_repository: Path,
                                                                         data_dir: Path) -> None:
    def attempt(**fields: object) -> None:
        quantize(QuantizeOptions("mlp", repository=int8_repository, name="mlp-bad", data_dir=data_dir,
                                 **fields))  # type: ignore[arg-type]

    np.savez(tmp_path / "names.npz", pixels=np.zeros((4, 1, 28, 28), np.float32))
    with pytest.raises(CalibrationError, match=r"expected arrays named like the model's inputs \['image'\] \(and "
                                               r"optionally 'labels'\), received \['pixels'\]"):
        attempt(calibration=tmp_path / "names.npz")
    np.savez(tmp_path / "shape.npz", image=np.zeros((4, 28, 28), np.float32))
    with pytest.raises(CalibrationError, match=r"samples 0..3: input 'image': expected shape \[-1, 1, 28, 28\], "
                                               r"received \[4, 28, 28\]"):
        attempt(calibration=tmp_path / "shape.npz")
    np.savez(tmp_path / "labels.npz", image=np.zeros((4, 1, 28, 28), np.float32), labels=np.array([0, 1, 2, 10]))
    with pytest.raises(CalibrationError, match=r"'labels' must hold one class index per sample \(integers in 0..9\), "
                                               r"received int64 \[4\], values 0..10"):
        attempt(calibration=tmp_path / "labels.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match=r"empty: no pictures \(.*\.png.*\) found"):
        attempt(calibration=tmp_path / "empty")
    with pytest.raises(QuantizeFailed, match=r"model 'mlp-int8' version 1 is already quantized \(it has "
                                             r"\['DequantizeLinear', 'QuantizeLinear'\]\)"):
        quantize(QuantizeOptions("mlp-int8", repository=int8_repository))
    with pytest.raises(QuantizeFailed, match=r"model 'nope' has no versions under"):
        quantize(QuantizeOptions("nope", repository=int8_repository))
    assert not (int8_repository / "mlp-bad").exists()


def test_the_command_prints_the_figures_and_exits_non_zero_when_a_gate_refuses(tmp_path: Path, models_dir: Path,
                                                                               data_dir: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(models_dir / "mlp", repository / "mlp")

    def nnserve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "service.cli", "quantize", "mlp", "--repository",
                               str(repository), "--data-dir", str(data_dir), "--count", "64",
                               "--evaluation-count", "1000", "--speed-rounds", "1", "--min-speedup", "0", *args],
                              capture_output=True, text=True, timeout=300)

    done = nnserve()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"published mlp-int8 version 1 at {repository / 'mlp-int8' / '1'}"
    assert lines[2].startswith("  calibration  64 inputs, fashion-mnist train split") and "seed 0" in lines[2]
    assert lines[3].startswith("  evaluation   1,000 inputs, fashion-mnist test split")
    assert "top-1 with the source (gate >= 99.00%)" in lines[4] and "gate >= -0.30" in lines[5]
    assert "batch 1:" in lines[6] and "batch 64:" in lines[6] and lines[7] == "  int8 ops     Gemm 3"
    refused = nnserve("--min-agreement", "100")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("mlp-int8: NOT PUBLISHED: agreement gate: top-1 agreement with the source")
    assert list_versions(repository / "mlp-int8") == [1]
    assert json.loads((repository / "mlp-int8" / "1" / "report.json").read_text())["quantization"]["calibration"][
        "count"] == 64
