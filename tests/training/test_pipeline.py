"""A ``--quick`` pipeline into a temporary repository: loadable, gate-passing ONNX files with complete manifests;
parity at batch 1 and 7; the atomic, never-overwriting publish; and gates that really reject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from service.manifest import Manifest, sha256_of
from service.model_repository import list_versions
from training import checkpoint as ckpt
from training.export import GateFailed, check_parity, cpu_session, export_and_publish, export_onnx
from training.pipeline import Options, export, run_pipeline, task_for, train_config
from training.repository import VersionExists, publish

FAMILIES = ["mlp", "cnn", "resnet", "lstm"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Options:
    root = tmp_path_factory.mktemp("quick")
    options = Options(data_dir=data_dir, repository=root / "models", checkpoint_dir=root / "ckpt", quick=True,
                      quiet=True)
    rows, ok = run_pipeline(FAMILIES, options)
    assert ok, [r.status for r in rows]
    return options


@pytest.mark.parametrize("family", FAMILIES)
def test_quick_pipeline_publishes_a_complete_gate_passing_version(quick: Options, family: str) -> None:
    folder = quick.repository / family / "1"
    manifest = Manifest.load(folder)
    assert manifest.name == family and manifest.version == 1 and manifest.family == family
    assert manifest.sha256 == sha256_of(folder / "model.onnx")
    assert set(manifest.parity.max_abs_diff) >= {"batch_1", "batch_7", "batch_64"}
    assert max(manifest.parity.max_abs_diff.values()) <= 1e-4
    assert manifest.parity.top1_agreement >= 0.999
    assert manifest.training.parameters > 0 and manifest.training.epochs == 1
    assert manifest.provenance.opset >= 13 and manifest.provenance.torch.startswith("2.13")
    assert len(manifest.dataset.files) in (2, 4) and all(len(m) == 32 for m in manifest.dataset.files.values())
    assert set(manifest.metrics.per_class_accuracy) == set(manifest.labels)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [s.name for s in manifest.inputs]
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
    rng = np.random.default_rng(0)
    short, long = rng.normal(size=(7, 12)).astype(np.float32), rng.normal(size=(29, 12)).astype(np.float32)
    alone = session.run(None, {"sequence": short[None], "lengths": np.array([7])})[0]
    batch = np.zeros((2, 29, 12), np.float32)
    batch[0, :7], batch[0, 7:], batch[1] = short, 9.0, long
    together = session.run(None, {"sequence": batch, "lengths": np.array([7, 29])})[0]
    assert np.abs(together[0] - alone[0]).max() < 1e-5


def test_publishing_again_makes_a_new_version_and_never_overwrites(quick: Options, tmp_path: Path) -> None:
    source = quick.repository / "mlp" / "1"
    original = Manifest.load(source)

    def manifest_for(version: int) -> Manifest:
        return original.model_copy(update={"version": version})

    root = tmp_path / "repo"
    assert publish(root, "mlp", source / "model.onnx", manifest_for) == 1
    assert publish(root, "mlp", source / "model.onnx", manifest_for) == 2
    before = (root / "mlp" / "1" / "manifest.json").read_bytes()
    with pytest.raises(VersionExists):
        publish(root, "mlp", source / "model.onnx", manifest_for, version=1)
    assert (root / "mlp" / "1" / "manifest.json").read_bytes() == before
    assert list_versions(root / "mlp") == [1, 2]
    assert sorted(p.name for p in (root / "mlp").iterdir()) == ["1", "2"]  # no temporary folders left
    assert Manifest.load(root / "mlp" / "2").version == 2


def test_the_parity_gate_rejects_a_perturbed_export(quick: Options, tmp_path: Path) -> None:
    options = Options(**{**quick.__dict__, "repository": tmp_path / "repo"})
    checkpoint = ckpt.load(quick.checkpoint_dir / "mlp.pt")
    task = task_for("mlp", options, train_config("mlp", options))
    model = checkpoint.build()
    export_onnx(model, task, tmp_path / "model.onnx")
    with torch.no_grad():
        model.net[1].weight.add_(1e-2)  # the exported file no longer matches these weights
    with pytest.raises(GateFailed, match=r"parity gate: max \|torch - onnx\| = .* exceeds 0.0001 by"):
        check_parity(model, cpu_session(tmp_path / "model.onnx"), task)


def test_the_accuracy_gate_rejects_and_nothing_is_published(quick: Options, tmp_path: Path) -> None:
    options = Options(**{**quick.__dict__, "repository": tmp_path / "repo"})
    checkpoint = ckpt.load(quick.checkpoint_dir / "mlp.pt")
    task = task_for("mlp", options, train_config("mlp", options))
    with pytest.raises(GateFailed, match=r"accuracy gate: mlp ONNX test accuracy .* is below 0.9990 by"):
        export_and_publish(checkpoint, task, options.repository, min_accuracy=0.999)
    assert list_versions(options.repository / "mlp") == []
    assert export("mlp", options).version == 1  # the same checkpoint without the gate's bar publishes
