"""Processors: what ``/predict`` does around a model. An input processor turns the raw input a person sends
(pictures, raw pixels, frames, plain named tensors) into the model's tensors; an output processor turns its
outputs into the answer (labelled predictions, or the named tensors). Which ones a model gets follows from its
config: a new input kind is one module here and one line in ``input_processor``."""

from __future__ import annotations

from typing import Any, Protocol

from service.backends import Tensors
from service.config import ImageProcessor, ModelConfig, SequenceProcessor
from service.errors import UnsupportedMediaType
from service.processors.image import ImageInput
from service.processors.outputs import ClassOutput, TensorOutput
from service.processors.sequence import SequenceInput
from service.processors.tensors import TensorInput


class InputProcessor(Protocol):
    kind: str

    def from_json(self, value: Any) -> Tensors: ...


class OutputProcessor(Protocol):
    kind: str

    def respond(self, outputs: Tensors, k: int) -> dict[str, Any]:
        """The answer's body; ``k``: how many top classes a classifier lists."""


def input_processor(config: ModelConfig, max_image_pixels: int) -> InputProcessor:
    if isinstance(config.processor, ImageProcessor):
        return ImageInput(config.processor, config.input(config.processor.input).datatype, max_image_pixels)
    if isinstance(config.processor, SequenceProcessor):
        return SequenceInput(config.processor)
    return TensorInput(config)


def output_processor(config: ModelConfig) -> OutputProcessor:
    return ClassOutput(config.classification) if config.classification is not None else TensorOutput()


def from_files(processor: InputProcessor, model: str, files: list[tuple[str, bytes]]) -> Tensors:
    """Uploaded pictures -> tensors, for a model that takes pictures; 415 naming what it takes otherwise."""
    if not isinstance(processor, ImageInput):
        takes = "sequences" if processor.kind == "sequence" else "named tensors"
        raise UnsupportedMediaType(f"model '{model}' takes {takes}: send JSON {{\"inputs\": ...}}, not multipart "
                                   f"files")
    return processor.from_files(files)
