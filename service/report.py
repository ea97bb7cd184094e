"""The training report: what the pipeline (or ``nnserve export``, or ``nnserve quantize``) measured about a model
version, kept beside it as ``report.json``. Optional: the server serves a model without one and shows it in
``/models`` and the model metadata when there is one. Nothing in it changes how a model is served (that is the
config, ``service.config``). An INT8 variant's report names its source and what its gates measured
(``quantization``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

REPORT_FILE = "report.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metrics(_Strict):
    torch_test_accuracy: float | None = Field(None, description="none for a model torch never ran (an INT8 variant)")
    onnx_test_accuracy: float
    per_class_accuracy: dict[str, float]
    validation_accuracy: float | None = None
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


class SourceModel(_Strict):
    """The published model a variant was made from."""

    name: str
    version: int
    sha256: str


class InputSet(_Strict):
    """Inputs fed to a model (calibration or evaluation): where they came from, how many, how they were drawn."""

    source: str = Field(description="data set and split, or the user's file or folder")
    count: int
    seed: int | None = Field(None, description="of the random draw; none when every input was taken")
    labelled: bool = False


class Speed(_Strict):
    """Raw in-process onnxruntime samples/s of the source and the variant at one batch size, measured in
    alternating rounds; ``speedup`` is the median of the rounds' ratios (the machine drifts between rounds)."""

    batch: int
    source_samples_per_s: float
    variant_samples_per_s: float
    speedup: float
    rounds: list[float]
    threads: int


class Quantization(_Strict):
    """How an INT8 variant was made from its source and what its gates measured."""

    source: SourceModel
    tool: str = Field(description="e.g. onnxruntime.quantization.quantize_static 1.32.0")
    preprocessing: str = Field(description="what was done to the graph first (onnxruntime's quant_pre_process)")
    format: str = Field(description="QDQ: QuantizeLinear/DequantizeLinear pairs onnxruntime fuses into int8 kernels")
    weights: str = Field(description="e.g. int8, symmetric, per channel")
    activations: str = Field(description="e.g. uint8, asymmetric, per tensor")
    calibration: InputSet
    calibration_method: str
    evaluation: InputSet
    top1_agreement: float
    top1_agreement_min: float
    source_accuracy: float | None = None
    variant_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    speed: dict[str, Speed] = Field(description="batch_1, batch_64: raw speed-up over the source")
    min_speedup: float | None = Field(None, description="the speed gate at the largest batch; none: no gate")
    quantized_operators: dict[str, int] = Field(description="operator -> count that run in int8 (QDQ-wrapped)")


class TrainingReport(_Strict):
    family: str | None = None
    metrics: Metrics | None = None
    parity: Parity | None = None
    dataset: Dataset | None = None
    training: TrainingConfig | None = None
    provenance: Provenance | None = None
    quantization: Quantization | None = None

    @classmethod
    def load(cls, folder: Path) -> TrainingReport | None:
        path = folder / REPORT_FILE
        return cls.model_validate_json(path.read_text()) if path.exists() else None

    def dump(self, folder: Path) -> None:
        text = self.model_dump_json(indent=2, by_alias=True, exclude_none=True)
        (folder / REPORT_FILE).write_text(text + "\n")
