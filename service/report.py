"""The training report: what the pipeline (or ``nnserve export``) measured about a model version, kept beside it
as ``report.json``. Optional: the server serves a model without one and shows it in ``/models`` and the model
metadata when there is one. Nothing in it changes how a model is served (that is the config, ``service.config``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

REPORT_FILE = "report.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metrics(_Strict):
    torch_test_accuracy: float
    onnx_test_accuracy: float
    per_class_accuracy: dict[str, float]
    validation_accuracy: float
    test_samples: int


class Parity(_Strict):
    max_abs_diff: dict[str, float] = Field(
        description="max |torch - onnx| per check, relative to max(1, max |torch|) (for probabilities: absolute)")
    tolerance: float
    top1_agreement: float | None = None
    top1_agreement_min: float | None = None


class Dataset(_Strict):
    name: str
    files: dict[str, str] = Field(description="file name -> md5 of the bytes that were read")
    train_samples: int
    validation_samples: int
    test_samples: int


class TrainingConfig(_Strict):
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    seed: int
    wall_time_s: float
    samples_per_s: float
    parameters: int
    model_config_: dict[str, object] = Field(alias="model_config")


class Provenance(_Strict):
    git_commit: str
    torch: str | None = Field(None, description="the exporter's torch; none for a step without torch (quantize)")
    onnx: str
    onnxruntime: str
    opset: int | None = None
    exporter: str
    created_utc: str
    source: str | None = Field(None, description="for `nnserve export`: the module factory and the weights' sha256")


class TrainingReport(_Strict):
    family: str | None = None
    metrics: Metrics | None = None
    parity: Parity | None = None
    dataset: Dataset | None = None
    training: TrainingConfig | None = None
    provenance: Provenance | None = None

    @classmethod
    def load(cls, folder: Path) -> TrainingReport | None:
        path = folder / REPORT_FILE
        return cls.model_validate_json(path.read_text()) if path.exists() else None

    def dump(self, folder: Path) -> None:
        text = self.model_dump_json(indent=2, by_alias=True, exclude_none=True)
        (folder / REPORT_FILE).write_text(text + "\n")
