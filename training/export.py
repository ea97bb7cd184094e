"""Export a built-in family's checkpoint to ONNX and put it through the gates; only a model that passes them all
is published, with its config (``config.json``: the serving contract) and its training report (``report.json``).

Gates, each a ``GateFailed`` naming the gate and by how much it missed (``training.gates``):
1. ``onnx.checker`` accepts the file; the batch axis (and the LSTM's time axis) is dynamic.
2. Parity in onnxruntime (CPU): max |torch - onnx| of the probabilities <= 1e-4 at batch sizes 1, 7 and 64 (the
   LSTM also: one batch mixing the shortest and longest sequences), and top-1 agreement >= 99.9% over the test set.
3. Accuracy of the ONNX model on the test set, fed through ``service.processors`` exactly as the service feeds
   it, >= the family's target.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
import torch
from torch import nn

from service.config import Classification, ImageProcessor, ModelConfig, RaggedAxis, TensorConfig
from service.report import Dataset, Metrics, Parity, TrainingConfig, TrainingReport
from service.repository import MODEL_FILE, publish, sha256_of
from training.checkpoint import Checkpoint
from training.errors import GateFailed
from training.families import FAMILIES
from training.gates import (
    OPSET,
    PARITY_BATCHES,
    PARITY_TOLERANCE,
    TOP1_AGREEMENT_MIN,
    check_onnx,
    check_parity,
    cpu_session,
    provenance,
)
from training.samples import onnx_predict, publish_samples
from training.tasks import Task
from training.train import predict_proba
from training.train_config import TrainConfig

OUTPUT = "probabilities"


@dataclass
class ExportResult:
    name: str
    version: int
    config: ModelConfig
    report: TrainingReport
    path: Path


class Probabilities(nn.Module):
    """The trained network with softmax on top: the ONNX model outputs class probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(*inputs), dim=-1)


def io_tensors(task: Task) -> tuple[list[TensorConfig], list[TensorConfig]]:
    outputs = [TensorConfig(name=OUTPUT, datatype="FP32", shape=[-1, len(task.labels)])]
    spec = task.processor
    if isinstance(spec, ImageProcessor):
        return [TensorConfig(name=spec.input, datatype="FP32", shape=[-1, 1, spec.height, spec.width])], outputs
    return [TensorConfig(name=spec.input, datatype="FP32", shape=[-1, -1, spec.features]),
            TensorConfig(name=spec.lengths_input, datatype="INT64", shape=[-1])], outputs


def export_onnx(model: nn.Module, task: Task, path: Path) -> None:
    inputs, outputs = io_tensors(task)
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
    check_onnx(path)


def parity_batches(task: Task) -> dict[str, tuple[torch.Tensor, ...]]:
    """The parity checks' inputs: batch sizes 1, 7, 64, and for sequences shortest and longest mixed; a batch of
    sequences is padded only to its own longest, as the batcher does."""
    n = len(task.test)
    index = {f"batch_{b}": torch.arange(min(b, n)) for b in PARITY_BATCHES}
    if not task.is_image:
        lengths = task.test.inputs[1]
        short = torch.nonzero(lengths == lengths.min()).flatten()[:4]
        long = torch.nonzero(lengths == lengths.max()).flatten()[:4]
        index[f"mixed_lengths_{int(lengths.min())}_{int(lengths.max())}"] = torch.cat([short, long])
    checks = {}
    for label, rows in index.items():
        inputs, _ = task.test.take(rows)
        if not task.is_image:
            inputs = (inputs[0][:, : int(inputs[1].max())], inputs[1])
        checks[label] = inputs
    return checks


def check_model_parity(model: nn.Module, session: ort.InferenceSession, task: Task) -> dict[str, float]:
    wrapped = Probabilities(model).eval()
    return check_parity(lambda inputs: [wrapped(*inputs).numpy()], session, parity_batches(task))


def export_and_publish(checkpoint: Checkpoint, task: Task, repository: Path,
                       min_accuracy: float | None) -> ExportResult:
    """Run every gate; publish a new version only if all pass. Raises GateFailed otherwise."""
    model = checkpoint.build()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        export_onnx(model, task, path)
        session = cpu_session(path)
        gaps = check_model_parity(model, session, task)
        torch_p = predict_proba(model, task.test)
        onnx_p = onnx_predict(session, task.processor, task.raw_test)
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
        report = build_report(checkpoint, task, Metrics(
            torch_test_accuracy=float((torch_p.argmax(1) == labels).mean()), onnx_test_accuracy=onnx_acc,
            per_class_accuracy=per_class, validation_accuracy=checkpoint.fit["best_val_accuracy"],
            test_samples=len(labels),
        ), Parity(max_abs_diff=gaps, tolerance=PARITY_TOLERANCE, top1_agreement=agreement,
                  top1_agreement_min=TOP1_AGREEMENT_MIN))
        sha = sha256_of(path)

        def prepare(folder: Path, version: int) -> None:
            shutil.copyfile(path, folder / MODEL_FILE)
            build_config(checkpoint, task, version, sha).dump(folder)
            report.dump(folder)
            publish_samples(folder, task.dataset, task.labels, task.raw_test, labels, onnx_p.argmax(1))

        version = publish(repository, checkpoint.name, prepare)
    target = repository / checkpoint.name / str(version)
    return ExportResult(checkpoint.name, version, build_config(checkpoint, task, version, sha), report, target)


def build_config(checkpoint: Checkpoint, task: Task, version: int, sha: str) -> ModelConfig:
    """The serving contract of a built-in model: it batches (the server's --max-batch-size), its labels, its
    processor, and for sequences the padded time axis."""
    inputs, outputs = io_tensors(task)
    spec = task.processor
    ragged = [] if isinstance(spec, ImageProcessor) else [RaggedAxis(
        input=spec.input, axis=1, pad_value=spec.pad_value, lengths_input=spec.lengths_input,
        max_size=spec.max_length)]
    family = FAMILIES[checkpoint.family]
    return ModelConfig(
        name=checkpoint.name, version=version, description=family.description,
        task="image-classification" if task.is_image else "sequence-classification",
        inputs=inputs, outputs=outputs, ragged=ragged,
        classification=Classification(output=OUTPUT, labels=task.labels), processor=spec, sha256=sha,
    )


def build_report(checkpoint: Checkpoint, task: Task, metrics: Metrics, parity: Parity) -> TrainingReport:
    train = checkpoint.train_config
    fit = checkpoint.fit
    return TrainingReport(
        family=checkpoint.family, metrics=metrics, parity=parity,
        dataset=Dataset(name=task.dataset, files=task.files, train_samples=len(task.train),
                        validation_samples=len(task.val), test_samples=len(task.test_labels)),
        training=TrainingConfig.model_validate({
            "epochs": train["epochs"], "batch_size": train["batch_size"], "optimizer": train["optimizer"],
            "lr": train["lr"], "weight_decay": train["weight_decay"],
            "schedule": TrainConfig(**train).describe_schedule(),
            "seed": train["seed"], "wall_time_s": round(fit["wall_time_s"], 1),
            "samples_per_s": round(fit["samples_per_s"], 1), "parameters": checkpoint.parameters,
            "model_config": checkpoint.model_config,
        }),
        provenance=provenance("torch.onnx.export (TorchScript)"),
    )
