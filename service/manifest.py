"""The manifest: the one contract between ``training/`` (which writes it) and ``service/`` (which reads it).

Each published model version is a folder ``<repository>/<name>/<version>/`` holding ``model.onnx`` and
``manifest.json``. Everything the service needs to turn a user's raw input into the model's tensors, and the
model's output back into labels, is in here; nothing is guessed from the ONNX file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One model input or output. ``-1`` marks a dynamic axis (batch, time)."""

    name: str
    dtype: Literal["float32", "int64"]
    shape: list[int]


class ImagePreprocessing(_Strict):
    """How a picture or a raw pixel array becomes the model's ``[N, 1, H, W]`` float32 tensor.

    Raw arrays: ``H×W`` values in ``[pixel_min, pixel_max]`` (0–255), ``x = (v / 255 - mean) / std``.
    Uploaded pictures (any size or mode): EXIF orientation applied, transparency composited over black,
    converted to 8-bit greyscale (ITU-R 601-2 luma), fitted into ``H×W`` keeping the aspect ratio
    (bilinear, padded with black, centred), then treated as a raw array. Fashion-MNIST is a light object on a
    dark background; ``invert`` is set by a user whose pictures are dark-on-light.
    """

    kind: Literal["image"] = "image"
    height: int
    width: int
    channels: Literal[1] = 1
    layout: Literal["NCHW"] = "NCHW"
    pixel_min: float = 0.0
    pixel_max: float = 255.0
    scale: float = 1.0 / 255.0
    mean: float
    std: float
    color_mode: Literal["L"] = "L"
    resize: Literal["fit-pad-bilinear"] = "fit-pad-bilinear"
    background: int = 0
    invert: bool = False


class SequencePreprocessing(_Strict):
    """How a list of frames becomes ``sequence [N, T, F]`` float32 plus ``lengths [N]`` int64.

    Each frame has ``features`` raw values; each is standardised per feature, ``x = (v - mean[f]) / std[f]``.
    A batch is padded with ``pad_value`` after each sequence up to the batch's longest; the model reads the
    output at ``lengths - 1`` and is unidirectional, so padding cannot change a result.
    """

    kind: Literal["sequence"] = "sequence"
    features: int
    min_length: int = 1
    max_length: int
    mean: list[float]
    std: list[float]
    pad_value: float = 0.0


Preprocessing = ImagePreprocessing | SequencePreprocessing


class Metrics(_Strict):
    torch_test_accuracy: float
    onnx_test_accuracy: float
    per_class_accuracy: dict[str, float]
    validation_accuracy: float
    test_samples: int


class Parity(_Strict):
    max_abs_diff: dict[str, float] = Field(description="max |torch - onnx| of the probabilities, per check")
    tolerance: float
    top1_agreement: float
    top1_agreement_min: float


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
    torch: str
    onnx: str
    onnxruntime: str
    opset: int
    exporter: str
    created_utc: str


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    name: str
    version: int
    family: Literal["mlp", "cnn", "resnet", "lstm"]
    task: Literal["image-classification", "sequence-classification"]
    description: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str]
    preprocessing: ImagePreprocessing | SequencePreprocessing = Field(discriminator="kind")
    metrics: Metrics
    parity: Parity
    dataset: Dataset
    training: TrainingConfig
    provenance: Provenance
    sha256: str

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        return cls.model_validate_json((folder / MANIFEST_FILE).read_text())

    def dump(self, folder: Path) -> None:
        text = self.model_dump_json(indent=2, by_alias=True)
        (folder / MANIFEST_FILE).write_text(text + "\n")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
