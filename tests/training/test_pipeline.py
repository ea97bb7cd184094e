"""A ``--quick`` pipeline into a temporary repository: loadable, gate-passing ONNX files with complete configs and
training reports;
parity at batch 1 and 7; the atomic, never-overwriting publish; and gates that really reject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from service.config import ModelConfig, read_config_file
from service.report import TrainingReport
from service.repository import VersionExists, list_versions, publish, sha256_of
from tests.training.padding import alone_and_padded
from training import checkpoint as ckpt
from training.errors import GateFailed
from training.export import check_model_parity, export_and_publish, export_onnx
from training.gates import cpu_session
from training.pipeline import Options, export, run_pipeline, task_for, train_config

FAMILIES = ["mlp", "cnn", "resnet", "lstm"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Options:
    root = tmp_path_factory.mktemp("quick")
    options = Options(data_dir=data_dir, repository=root / "models", checkpoint_dir=root / "ckpt", quick=True,
                      quiet=True)
    rows, int8, ok = run_pipeline(FAMILIES, options)
    assert ok, [r.status for r in rows] + [r.status for r in int8]
    assert [(r.name, r.version or r.status[:8]) for r in int8] == [
        ("mlp-int8", "skipped:"), ("cnn-int8", 1), ("resnet-int8", 1), ("lstm-int8", "skipped:")]
    return options


@pytest.mark.parametrize("family", FAMILIES)
def test_quick_pipeline_publishes_a_complete_gate_passing_version(quick: Options, family: str) -> None:
    folder = quick.repository / family / "1"
    config = ModelConfig.model_validate({**read_config_file(folder), "version": 1})
    report = TrainingReport.load(folder)
    assert report is not None and report.parity and report.training and report.provenance and report.dataset
    assert report.metrics is not None and config.classification is not None
    assert config.name == family and report.family == family and config.max_batch_size is None
    assert config.sha256 == sha256_of(folder / "model.onnx")
    assert set(report.parity.max_abs_diff) >= {"batch_1", "batch_7", "batch_64"}
    assert max(report.parity.max_abs_diff.values()) <= 1e-4
    assert report.parity.top1_agreement is not None and report.parity.top1_agreement >= 0.999
    assert report.training.parameters > 0 and report.training.epochs == 1
    assert report.provenance.opset is not None and report.provenance.torch is not None
    assert report.provenance.opset >= 13 and report.provenance.torch.startswith("2.13")
    assert len(report.dataset.files) in (2, 4) and all(len(m) == 32 for m in report.dataset.files.values())
    assert set(report.metrics.per_class_accuracy) == set(config.classification.labels)
    assert (config.ragged != []) == (family == "lstm") and config.processor is not None
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [s.name for s in config.inputs]
    assert session.get_inputs()[0].shape[0] in ("batch", -1, None) or isinstance(session.get_inputs()[0].shape[0], str)


@pytest.mark.parametrize("batch", [1, 7])
def test_parity_of_the_published_cnn(quick: Options, batch: int) -> None:
    checkpoint = ckpt.load(quick.checkpoint_dir / "cnn.pt")
    model = checkpoint.build()
    session = ort.InferenceSession(str(quick.repository / "cnn" / "1" / "model.onnx"))
    x = torch.rand(batch, 1, 28, 28) * 3 - 1
    expected = torch.softmax(model(x), -1).detach().numpy()
    got = session.run(None, {"image": x.numpy()})[0]
    assert got.shape == (batch, 10)
    assert np.abs(expected - got).max() <= 1e-4


def test_lstm_export_is_padding_invariant(quick: Options) -> None:
    session = ort.InferenceSession(str(quick.repository / "lstm" / "1" / "model.onnx"))
    alone, together = alone_and_padded(session)
    assert np.abs(together[0] - alone[0]).max() < 1e-5


def test_publishing_again_makes_a_new_version_and_never_overwrites(quick: Options, tmp_path: Path) -> None:
    source = quick.repository / "mlp" / "1"

    def prepare(folder: Path, version: int) -> None:
        for name in ("model.onnx", "config.json", "report.json"):
            (folder / name).write_bytes((source / name).read_bytes())

    root = tmp_path / "repo"
    assert publish(root, "mlp", prepare) == 1
    assert publish(root, "mlp", prepare) == 2
    before = (root / "mlp" / "1" / "config.json").read_bytes()
    with pytest.raises(VersionExists):
        publish(root, "mlp", prepare, version=1)
    assert (root / "mlp" / "1" / "config.json").read_bytes() == before
    assert list_versions(root / "mlp") == [1, 2]
    assert sorted(p.name for p in (root / "mlp").iterdir()) == ["1", "2"]  # no temporary folders left

    def failing(folder: Path, version: int) -> None:
        prepare(folder, version)
        raise RuntimeError("a check failed")

    with pytest.raises(RuntimeError, match="a check failed"):
        publish(root, "mlp", failing)
    assert sorted(p.name for p in (root / "mlp").iterdir()) == ["1", "2"]  # nothing half-published


def test_the_parity_gate_rejects_a_perturbed_export(quick: Options, tmp_path: Path) -> None:
    options = Options(**{**quick.__dict__, "repository": tmp_path / "repo"})
    checkpoint = ckpt.load(quick.checkpoint_dir / "mlp.pt")
    task = task_for("mlp", options, train_config("mlp", options))
    model = checkpoint.build()
    export_onnx(model, task, tmp_path / "model.onnx")
    with torch.no_grad():
        model.net[1].weight.add_(1e-2)  # type: ignore[index, union-attr]  # the exported file no longer matches
    with pytest.raises(GateFailed, match=r"parity gate: max \|torch - onnx\| = .* exceeds 0.0001 by"):
        check_model_parity(model, cpu_session(tmp_path / "model.onnx"), task)


def test_the_accuracy_gate_rejects_and_nothing_is_published(quick: Options, tmp_path: Path) -> None:
    options = Options(**{**quick.__dict__, "repository": tmp_path / "repo"})
    checkpoint = ckpt.load(quick.checkpoint_dir / "mlp.pt")
    task = task_for("mlp", options, train_config("mlp", options))
    with pytest.raises(GateFailed, match=r"accuracy gate: mlp ONNX test accuracy .* is below 0.9990 by"):
        export_and_publish(checkpoint, task, options.repository, min_accuracy=0.999)
    assert list_versions(options.repository / "mlp") == []
    assert export("mlp", options).version == 1  # the same checkpoint without the gate's bar publishes


@pytest.mark.parametrize("family", ["cnn", "lstm"])
def test_published_samples_are_real_test_items_with_their_true_labels(quick: Options, family: str,
                                                                        tmp_path: Path) -> None:
    """One item per class, then the first items the version gets wrong; each file holds exactly the dataset's
    input, and the "misclassified" ones really are. The command that adds samples to older versions writes the same."""
    from service.processors.image import normalize_pixels
    from service.processors.sequence import sequences_to_tensors
    from service.samples import SampleIndex, read_frames
    from training.samples import add_missing_samples
    from training.tasks import load_task

    folder = quick.repository / family / "1"
    index = SampleIndex.load(folder)
    assert index is not None and index.split == "test"
    config = ModelConfig.model_validate({**read_config_file(folder), "version": 1})
    assert config.classification is not None and config.processor is not None
    task = load_task(family, quick.data_dir, 0, 0.1, 300)
    labels = config.classification.labels
    assert {item.index for item in index.items} == set(range(len(labels)))
    session = cpu_session(folder / "model.onnx")
    for item in index.items:
        assert item.label == labels[item.index] == labels[int(task.test_labels[item.row])]
        path = index.file(folder, item.file)
        assert path is not None and path.stat().st_size < 4096
        if family == "cnn":
            from PIL import Image

            pixels = np.asarray(Image.open(path))
            assert np.array_equal(pixels, task.raw_test[item.row])
            feeds = {"image": normalize_pixels(pixels[None], config.processor)}  # type: ignore[arg-type]
        else:
            frames = np.asarray(read_frames(path), dtype=np.float32)
            assert np.array_equal(frames, task.raw_test[item.row])
            feeds = sequences_to_tensors([frames], config.processor)  # type: ignore[arg-type]
        predicted = int(session.run(None, feeds)[0].argmax())
        assert (predicted != item.index) == (item.note is not None), item
    assert len(index.items) == len(labels) + 2  # a quick model gets more than two wrong
    assert index.file(folder, "../config.json") is None

    copy = tmp_path / "repo" / family / "1"
    copy.mkdir(parents=True)
    for name in ("model.onnx", "config.json", "report.json"):
        (copy / name).write_bytes((folder / name).read_bytes())
    assert add_missing_samples(tmp_path / "repo", quick.data_dir) == [copy]
    assert (copy / "samples" / "index.json").read_text() == (folder / "samples" / "index.json").read_text()
    assert add_missing_samples(tmp_path / "repo", quick.data_dir) == []  # never written twice
