"""Export a checkpoint to ONNX and put it through the gates; only a model that passes them all is published.

Gates, each a ``GateFailed`` naming the gate and by how much it missed:
1. ``onnx.checker`` accepts the file; the batch axis (and the LSTM's time axis) is dynamic.
2. Parity in onnxruntime (CPU): max |torch - onnx| of the probabilities <= 1e-4 at batch sizes 1, 7 and 64 (the
   LSTM: one batch mixing the shortest and longest sequences), and top-1 agreement >= 99.9% over the test set.
3. Accuracy of the ONNX model on the test set, fed through ``service.preprocess`` exactly as the service feeds it,
   >= the model's target.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from service.manifest import (
    Dataset,
    ImagePreprocessing,
    Manifest,
    Metrics,
    Parity,
    Provenance,
    TensorSpec,
    TrainingConfig,
    sha256_of,
)
from service.preprocess import normalize_pixels, sequences_to_tensors
from training.checkpoint import Checkpoint
from training.repository import publish
from training.tasks import Task
from training.train import predict_proba

OPSET = 17
PARITY_TOLERANCE = 1e-4
TOP1_AGREEMENT_MIN = 0.999
TARGET_ACCURACY = {"mlp": 0.89, "cnn": 0.925, "resnet": 0.935, "lstm": 0.96}
DESCRIPTIONS = {
    "mlp": "Multi-layer perceptron on Fashion-MNIST (28x28 greyscale clothing images, 10 classes)",
    "cnn": "Convolutional network (3x3 conv + BN + max-pool) on Fashion-MNIST",
    "resnet": "CIFAR-style ResNet-20 with identity/projection shortcuts on Fashion-MNIST",
    "lstm": "Unidirectional LSTM speaker classifier on Japanese Vowels (12 LPC cepstra per frame, 9 speakers)",
}


class GateFailed(RuntimeError):
    """A model failed an export gate; it is not published."""


@dataclass
class ExportResult:
    name: str
    version: int | None
    manifest: Manifest | None
    path: Path | None


class Probabilities(nn.Module):
    """The trained network with softmax on top: the ONNX model outputs class probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(*inputs), dim=-1)


def io_specs(task: Task) -> tuple[list[TensorSpec], list[TensorSpec]]:
    classes = len(task.labels)
    outputs = [TensorSpec(name="probabilities", dtype="float32", shape=[-1, classes])]
    spec = task.preprocessing
    if isinstance(spec, ImagePreprocessing):
        return [TensorSpec(name="image", dtype="float32", shape=[-1, 1, spec.height, spec.width])], outputs
    return [TensorSpec(name="sequence", dtype="float32", shape=[-1, -1, spec.features]),
            TensorSpec(name="lengths", dtype="int64", shape=[-1])], outputs


def export_onnx(model: nn.Module, task: Task, path: Path) -> None:
    inputs, outputs = io_specs(task)
    example = tuple(t[:2] for t in task.test.inputs)
    dynamic = {s.name: {i: ("batch" if i == 0 else "time") for i, d in enumerate(s.shape) if d == -1}
               for s in inputs + outputs}
    with warnings.catch_warnings():
        # The TorchScript exporter warns that an LSTM traced at one batch size may not generalise: the parity
        # gate checks batch sizes 1, 7 and 64 (and mixed lengths), so it cannot pass unnoticed.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Probabilities(model).eval(), example, str(path), input_names=[s.name for s in inputs],
            output_names=[s.name for s in outputs], dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def cpu_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(session: ort.InferenceSession, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    return {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}


def parity_batches(task: Task) -> dict[str, torch.Tensor]:
    """Index sets for the parity checks: batch sizes 1, 7, 64, and for sequences mixed shortest/longest."""
    n = len(task.test)
    checks = {f"batch_{b}": torch.arange(min(b, n)) for b in (1, 7, 64)}
    if not task.is_image:
        lengths = task.test.inputs[1]
        short = torch.nonzero(lengths == lengths.min()).flatten()[:4]
        long = torch.nonzero(lengths == lengths.max()).flatten()[:4]
        checks[f"mixed_lengths_{int(lengths.min())}_{int(lengths.max())}"] = torch.cat([short, long])
    return checks


def check_parity(model: nn.Module, session: ort.InferenceSession, task: Task) -> dict[str, float]:
    diffs = {}
    wrapped = Probabilities(model).eval()
    with torch.no_grad():
        for label, index in parity_batches(task).items():
            inputs, _ = task.test.take(index)
            if not task.is_image:  # a batch is padded only to its own longest sequence, as the batcher does
                inputs = (inputs[0][:, : int(inputs[1].max())], inputs[1])
            expected = wrapped(*inputs).numpy()
            got = session.run(None, _feeds(session, inputs))[0]
            diffs[label] = float(np.abs(expected - got).max())
    worst = max(diffs, key=lambda k: diffs[k])
    if diffs[worst] > PARITY_TOLERANCE:
        raise GateFailed(f"parity gate: max |torch - onnx| = {diffs[worst]:.3g} at {worst} exceeds "
                         f"{PARITY_TOLERANCE:g} by {diffs[worst] - PARITY_TOLERANCE:.3g}")
    return diffs


def onnx_predict(session: ort.InferenceSession, task: Task, batch_size: int = 256) -> np.ndarray:
    """Test-set probabilities from raw inputs through the service's preprocessing."""
    spec, raw, out = task.preprocessing, task.raw_test, []
    for start in range(0, len(task.test_labels), batch_size):
        chunk = raw[start:start + batch_size]
        if isinstance(spec, ImagePreprocessing):
            feeds = {"image": normalize_pixels(np.asarray(chunk), spec)}
        else:
            sequence, lengths = sequences_to_tensors(list(chunk), spec)
            feeds = {"sequence": sequence, "lengths": lengths}
        out.append(session.run(None, feeds)[0])
    return np.concatenate(out)


def git_commit() -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return result.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def export_and_publish(checkpoint: Checkpoint, task: Task, repository: Path,
                       min_accuracy: float | None) -> ExportResult:
    """Run every gate; publish a new version only if all pass. Raises GateFailed otherwise."""
    model = checkpoint.build()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, task, path)
        session = cpu_session(path)
        diffs = check_parity(model, session, task)
        torch_p = predict_proba(model, task.test)
        onnx_p = onnx_predict(session, task)
        agreement = float((torch_p.argmax(1) == onnx_p.argmax(1)).mean())
        if agreement < TOP1_AGREEMENT_MIN:
            raise GateFailed(f"parity gate: top-1 agreement {agreement:.4%} is below {TOP1_AGREEMENT_MIN:.1%} "
                             f"by {TOP1_AGREEMENT_MIN - agreement:.4%}")
        labels = task.test_labels
        onnx_acc = float((onnx_p.argmax(1) == labels).mean())
        if min_accuracy is not None and onnx_acc < min_accuracy:
            raise GateFailed(f"accuracy gate: {checkpoint.name} ONNX test accuracy {onnx_acc:.4f} is below "
                             f"{min_accuracy:.4f} by {min_accuracy - onnx_acc:.4f}")
        per_class = {name: float((onnx_p.argmax(1)[labels == i] == i).mean()) if (labels == i).any() else 0.0
                     for i, name in enumerate(task.labels)}
        metrics = Metrics(
            torch_test_accuracy=float((torch_p.argmax(1) == labels).mean()), onnx_test_accuracy=onnx_acc,
            per_class_accuracy=per_class, validation_accuracy=checkpoint.fit["best_val_accuracy"],
            test_samples=len(labels),
        )
        parity = Parity(max_abs_diff=diffs, tolerance=PARITY_TOLERANCE, top1_agreement=agreement,
                        top1_agreement_min=TOP1_AGREEMENT_MIN)
        sha = sha256_of(path)

        def make_manifest(version: int) -> Manifest:
            return build_manifest(checkpoint, task, version, metrics, parity, sha)

        version = publish(repository, checkpoint.name, path, make_manifest)
    target = repository / checkpoint.name / str(version)
    return ExportResult(checkpoint.name, version, Manifest.load(target), target)


def build_manifest(checkpoint: Checkpoint, task: Task, version: int, metrics: Metrics, parity: Parity,
                   sha: str) -> Manifest:
    inputs, outputs = io_specs(task)
    train: dict[str, Any] = checkpoint.train_config
    fit = checkpoint.fit
    return Manifest(
        name=checkpoint.name, version=version, family=checkpoint.family,
        task="image-classification" if task.is_image else "sequence-classification",
        description=DESCRIPTIONS.get(checkpoint.family, checkpoint.family),
        inputs=inputs, outputs=outputs, labels=task.labels, preprocessing=task.preprocessing,
        metrics=metrics, parity=parity,
        dataset=Dataset(name=task.dataset, files=task.files, train_samples=len(task.train),
                        validation_samples=len(task.val), test_samples=len(task.test_labels)),
        training=TrainingConfig.model_validate({
            "epochs": train["epochs"], "batch_size": train["batch_size"], "optimizer": train["optimizer"],
            "lr": train["lr"], "weight_decay": train["weight_decay"], "schedule": train["schedule"],
            "seed": train["seed"], "wall_time_s": round(fit["wall_time_s"], 1),
            "samples_per_s": round(fit["samples_per_s"], 1), "parameters": checkpoint.parameters,
            "model_config": checkpoint.model_config,
        }),
        provenance=Provenance(
            git_commit=git_commit(), torch=torch.__version__, onnx=onnx.__version__,
            onnxruntime=ort.__version__, opset=OPSET, exporter="torch.onnx.export (TorchScript)",
            created_utc=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        ),
        sha256=sha,
    )
