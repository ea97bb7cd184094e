"""The model config: the serving contract of one model version, ``config.json`` beside its ``model.onnx``.

It says what the server needs to serve a model and nothing about how it was made (that is the optional training
report, ``service.report``): the platform, whether and how it batches, its input and output tensors, axes that may
be padded across a batch, labels and the output holding the class scores, how ``/predict`` turns pictures or
frames into tensors, the file's sha256, and per-model overrides of the server's batching and runtime settings.

Every field may be left out: ``service.config_from_graph`` completes a config from the ONNX graph at load, as
Triton's auto-complete does, so a bare ``model.onnx`` serves too. Shapes are whole shapes (the batch axis
included), ``-1`` where an axis takes any size and ``[]`` for a scalar.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.datatypes import Datatype
from service.version_policy import VersionPolicy

CONFIG_FILE = "config.json"
SCHEMA_VERSION = 2
DEFAULT_PLATFORM = "onnxruntime_onnx"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorConfig(_Strict):
    name: str
    datatype: Datatype
    shape: list[int] = Field(description="whole shape, batch axis included; -1 = any size; [] = a scalar")

    def describe(self) -> str:
        return f"{self.name} {self.datatype} [{', '.join(str(d) for d in self.shape)}]"


class RaggedAxis(_Strict):
    """An axis of one input along which requests may differ in size: a batch pads each to the longest with
    ``pad_value`` (the model must give every row the same answer however it is padded: the LSTM reads its output at
    ``lengths - 1``). Requests that differ along any other axis are never batched together."""

    input: str
    axis: int = Field(ge=1, description="axis of the input tensor (0 is the batch axis)")
    pad_value: float = 0.0
    lengths_input: str | None = Field(None, description="the input holding each row's true size along the axis")
    max_size: int | None = Field(None, ge=1, description="requests longer than this along the axis are refused")


class Classification(_Strict):
    """The output holding one score per class for each row, and the class names in that order."""

    output: str
    labels: list[str]
    activation: Literal["none", "softmax"] = Field("none", description="softmax: the output holds logits")


class ImageProcessor(_Strict):
    """How ``/predict`` turns a picture (any format, size or mode) or a raw pixel array into the model's input.

    Pictures: EXIF orientation applied, transparency composited over ``background``, converted to ``color_mode``,
    then resized: ``fit-pad-bilinear`` fits the picture into ``height`` x ``width`` keeping its aspect ratio and pads
    with ``background``; ``shorter-side-crop`` resizes the shorter side to ``resize_shorter_to`` (default
    ``height / 0.875``, as ImageNet models expect) and crops the centre, as torchvision's ``Resize`` and
    ``CenterCrop`` do to the last pixel (the longer side truncated, the offsets rounded half to even, a crop larger
    than the picture padded with ``background``). Pixels (a picture's, or raw ones sent as JSON in
    ``[pixel_min, pixel_max]``) become ``(v * scale - mean) / std`` per channel (``mean`` and ``std`` in the
    model's channel order: blue first for ``BGR``), in the input's datatype and ``layout``; a ``UINT8`` input
    takes the pixels as they are. ``invert`` is for dark-on-light pictures fed to a model trained on light-on-dark
    ones. ``auto_invert``: an uploaded picture whose border is, by its median, on the other side of mid-grey from
    ``background`` (a dark shoe photographed on a white table, for a model trained on light items on black) is
    inverted before it is resized; raw pixel arrays are taken as they are.
    """

    kind: Literal["image"] = "image"
    input: str = Field(description="completed: the model's only input")
    height: int = Field(ge=1, description="completed from the input's shape where it is fixed")
    width: int = Field(ge=1)
    channels: Literal[1, 3] = 1
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    pixel_min: float = 0.0
    pixel_max: float = 255.0
    scale: float = 1.0 / 255.0
    mean: float | list[float] = 0.0
    std: float | list[float] = 1.0
    color_mode: Literal["L", "RGB", "BGR"] = "L"
    resize: Literal["fit-pad-bilinear", "shorter-side-crop"] = "fit-pad-bilinear"
    resize_shorter_to: int | None = Field(None, ge=1)
    background: int = 0
    invert: bool = False
    auto_invert: bool = False


class SequenceProcessor(_Strict):
    """How ``/predict`` turns lists of frames into ``sequence [N, T, F]`` plus ``lengths [N]``: each of the
    ``features`` values standardised, ``x = (v - mean[f]) / std[f]``; a batch padded with ``pad_value`` after each
    sequence up to its longest."""

    kind: Literal["sequence"] = "sequence"
    input: str = "sequence"
    lengths_input: str = "lengths"
    features: int
    min_length: int = 1
    max_length: int
    mean: list[float]
    std: list[float]
    pad_value: float = 0.0


Processor = ImageProcessor | SequenceProcessor


class BatchingConfig(_Strict):
    """Per-model overrides of the server's batching settings; left out, the server's flag applies."""

    max_queue_delay_ms: float | None = Field(None, ge=0)
    max_queue_size: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)
    request_timeout_ms: float | None = Field(None, gt=0)
    event_loop_compute_ms: float | None = Field(None, ge=0, allow_inf_nan=False)  # service.loading
    allowed_batch_sizes: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, min_length=1, description="the batch sizes the model runs at, increasing, the last its max_batch_size: "
        "a batch is padded to the next one, each on a session of its own (service.batch_sizes); [] is refused, "
        "left out the server's --allowed-batch-sizes applies")

    @field_validator("allowed_batch_sizes")
    @classmethod
    def _increasing(cls, sizes: list[int] | None) -> list[int] | None:
        if sizes and any(b <= a for a, b in itertools.pairwise(sizes)):
            raise ValueError(f"allowed_batch_sizes must increase strictly, got {sizes}")
        return sizes


class RuntimeConfig(_Strict):
    """Per-model overrides of the server's onnxruntime settings."""

    intra_op_threads: int | None = Field(None, ge=0)
    lone_request_threads: int | None = Field(None, ge=0)
    memory_arena: bool | None = None  # onnxruntime's CPU arena for this model (large inputs: docs/benchmarks.md)
    graph_optimization: Literal["auto", "all", "extended", "basic", "disable"] | None = None


class WarmupInput(_Strict):
    """The warm-up feed of one input, where the signature leaves it open: a shape for its ``-1`` axes, a value."""

    shape: list[int] | None = None
    value: float | str | None = None


class ModelConfig(_Strict):
    schema_version: int = SCHEMA_VERSION
    name: str
    version: int
    platform: str = Field(DEFAULT_PLATFORM, description="what runs the model file: a key of "
                          "service.backends.PLATFORMS (service.loading refuses others)")
    description: str = ""
    task: str | None = Field(None, description="image-classification, sequence-classification, ... (informative)")
    max_batch_size: int | None = Field(
        None, ge=0, description="0: the model runs one request at a time; left out: the server's --max-batch-size "
        "when every input and output has a dynamic first axis, else 0")
    inputs: list[TensorConfig]
    outputs: list[TensorConfig]
    ragged: list[RaggedAxis] = Field(default_factory=list)
    classification: Classification | None = None
    processor: Processor | None = Field(None, discriminator="kind")
    sha256: str | None = Field(None, description="of model.onnx; the server refuses a file that does not match")
    batching: BatchingConfig = BatchingConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    warmup: dict[str, WarmupInput] = Field(default_factory=dict)
    version_policy: VersionPolicy | None = Field(
        None, description="which versions are served, read from the newest version (service.version_policy)")

    def input(self, name: str) -> TensorConfig:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorConfig:
        return next(t for t in self.outputs if t.name == name)

    def dump(self, folder: Path) -> None:
        """As ``config.json``: without the version (the folder's name says it) and without empty sections."""
        data = self.model_dump(mode="json", exclude_none=True, exclude={"version"})
        data = {k: v for k, v in data.items() if v not in ({}, [])}
        (folder / CONFIG_FILE).write_text(json.dumps(data, indent=2) + "\n")


def read_config_file(folder: Path) -> dict[str, Any]:
    """The raw contents of a version's ``config.json`` ({} when there is none): completed and checked by
    ``service.config_from_graph``."""
    path = folder / CONFIG_FILE
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
