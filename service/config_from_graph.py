"""A model config completed from the ONNX graph and checked against it, as Triton's auto-complete does.

What ``config.json`` leaves out is read from the graph: inputs and outputs, the image processor's input, size and
channels, the classification output, the task. What it says must agree with the graph (names, datatypes, every
fixed axis), and every part must fit the tensors it names; a ``ConfigError`` says which field and why. Whether a
model batches is decided here only where the config says so; left open, ``batch_blocker`` and the warm-up probe
(``service.registry``) decide.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from service.config import SCHEMA_VERSION, ImageProcessor, ModelConfig, SequenceProcessor, TensorConfig
from service.signature import GraphSignature, GraphTensor

FLOAT_TYPES = ("FP16", "FP32", "FP64")
INTEGER_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")


class ConfigError(ValueError):
    """A config that cannot serve this model file; the message names the field and the reason."""


def complete_config(raw: dict[str, Any], graph: GraphSignature, *, name: str, version: int,
                    sha256: str) -> ModelConfig:
    problems = graph.unsupported()
    if problems:
        raise ConfigError("; ".join(problems) + ": nnserve serves tensors of the Open Inference Protocol's "
                          "datatypes (BOOL, integers, FP16/32/64, BYTES)")
    data = dict(raw)
    if int(data.pop("schema_version", SCHEMA_VERSION)) > SCHEMA_VERSION:
        raise ConfigError(f"config.json has schema_version {raw['schema_version']}: written by a newer nnserve "
                          f"(this one reads {SCHEMA_VERSION})")
    for key, value in (("name", name), ("version", version)):
        given = data.setdefault(key, value)
        if given != value:
            raise ConfigError(f"config.json says {key} {given!r}, but the folder is {name}/{version}")
    if data.get("sha256") not in (None, sha256):
        raise ConfigError(f"model.onnx sha256 {sha256} does not match the config's {data['sha256']}")
    data["sha256"] = sha256
    data.setdefault("inputs", [_tensor(t) for t in graph.inputs])
    data.setdefault("outputs", [_tensor(t) for t in graph.outputs])
    processor = data.get("processor")
    if isinstance(processor, dict) and processor.get("kind") == "image":
        data["processor"] = _complete_image(processor, data["inputs"])
    classification = data.get("classification")
    if isinstance(classification, dict) and "output" not in classification and len(data["outputs"]) == 1:
        data["classification"] = {**classification, "output": data["outputs"][0].get("name")}
    data.setdefault("task", _task(data))
    try:
        config = ModelConfig.model_validate(data)
    except ValidationError as error:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"config.json: {details}") from None
    check_config(config, graph)
    return config


def _tensor(t: GraphTensor) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": t.shape}


def _task(data: dict[str, Any]) -> str | None:
    processor = data.get("processor")
    kind = processor.get("kind") if isinstance(processor, dict) else None
    if kind and data.get("classification"):
        return f"{kind}-classification"
    return None


def _complete_image(processor: dict[str, Any], inputs: list[Any]) -> dict[str, Any]:
    out = dict(processor)
    if "input" not in out:
        if len(inputs) != 1:
            names = [i.get("name") for i in inputs if isinstance(i, dict)]
            raise ConfigError(f"processor: say which input takes the picture (\"input\"): the model takes {names}")
        out["input"] = inputs[0].get("name")
    spec = next((i for i in inputs if isinstance(i, dict) and i.get("name") == out["input"]), None)
    shape = spec.get("shape") if spec else None
    if not isinstance(shape, list) or len(shape) != 4:
        raise ConfigError(f"processor: input {out['input']!r} must be a 4-axis image tensor (NCHW or NHWC), "
                          f"its shape is {shape}")
    c, h, w = (1, 2, 3) if out.get("layout", "NCHW") == "NCHW" else (3, 1, 2)
    if "channels" not in out:
        mode = out.get("color_mode")
        out["channels"] = 1 if mode == "L" else 3 if mode in ("RGB", "BGR") else shape[c] if shape[c] > 0 else 1
    out.setdefault("color_mode", "L" if out["channels"] == 1 else "RGB")
    for key, axis in (("height", h), ("width", w)):
        if key not in out:
            if shape[axis] <= 0:
                raise ConfigError(f"processor: input {out['input']!r} takes any {key} ({shape}): give "
                                  f"processor.{key}")
            out[key] = shape[axis]
    return out


def batch_blocker(config: ModelConfig) -> str | None:
    """Why the model cannot be batched along its first axis, or None when every tensor has an open first axis."""
    for kind, tensors in (("input", config.inputs), ("output", config.outputs)):
        for t in tensors:
            if not t.shape:
                return f"{kind} '{t.name}' is a scalar (no batch axis)"
            if t.shape[0] != -1:
                return f"{kind} '{t.name}' has a fixed first axis ({t.shape[0]})"
    return None


def check_config(config: ModelConfig, graph: GraphSignature) -> None:
    _check_tensors("input", config.inputs, graph.inputs)
    _check_tensors("output", config.outputs, graph.outputs)
    if config.max_batch_size and (blocker := batch_blocker(config)):
        raise ConfigError(f"max_batch_size is {config.max_batch_size}, but {blocker}: set 0 to run it unbatched")
    inputs = {t.name: t for t in config.inputs}
    for axis in config.ragged:
        tensor = _named(inputs, axis.input, "ragged.input")
        if axis.axis >= len(tensor.shape) or tensor.shape[axis.axis] != -1:
            raise ConfigError(f"ragged: axis {axis.axis} of {tensor.describe()} is not an open axis")
        if axis.lengths_input is not None:
            lengths = _named(inputs, axis.lengths_input, "ragged.lengths_input")
            if lengths.datatype not in INTEGER_TYPES:
                raise ConfigError(f"ragged.lengths_input: {lengths.describe()} must be an integer tensor")
    for name in config.warmup:
        _named(inputs, name, "warmup")
    if config.classification is not None:
        _check_classification(config)
    if isinstance(config.processor, ImageProcessor):
        _check_image(config.processor, _named(inputs, config.processor.input, "processor.input"))
    elif isinstance(config.processor, SequenceProcessor):
        _check_sequence(config.processor, inputs)


def _named(tensors: dict[str, TensorConfig], name: str, field: str) -> TensorConfig:
    if name not in tensors:
        raise ConfigError(f"{field}: no tensor named {name!r} (the model has {sorted(tensors)})")
    return tensors[name]


def _check_tensors(kind: str, configured: list[TensorConfig], graph: tuple[GraphTensor, ...]) -> None:
    declared = {t.name: t for t in graph}
    names = [t.name for t in configured]
    if sorted(names) != sorted(declared):
        raise ConfigError(f"{kind}s: the config lists {names}, the graph has {list(declared)}")
    for t in configured:
        g = declared[t.name]
        if t.datatype != g.datatype:
            raise ConfigError(f"{kind} '{t.name}': the config says {t.datatype}, the graph {g.datatype}")
        fixed = g.shape
        if len(t.shape) != len(fixed) or any(f != -1 and c != f for c, f in zip(t.shape, fixed, strict=True)):
            raise ConfigError(f"{kind} '{t.name}': the config's shape {t.shape} does not fit the graph's "
                              f"{g.describe()}")
        if any(c == -1 and f != -1 for c, f in zip(t.shape, fixed, strict=True)):
            raise ConfigError(f"{kind} '{t.name}': the config's shape {t.shape} opens an axis the graph fixes "
                              f"({g.describe()})")


def _check_classification(config: ModelConfig) -> None:
    assert config.classification is not None
    spec = config.classification
    output = _named({t.name: t for t in config.outputs}, spec.output, "classification.output")
    if not spec.labels:
        raise ConfigError("classification.labels is empty")
    if output.datatype not in FLOAT_TYPES:
        raise ConfigError(f"classification.output: {output.describe()} is not a tensor of scores")
    per_row = output.shape[1:] if output.shape and (config.max_batch_size or output.shape[0] == -1) else output.shape
    if all(d > 0 for d in per_row) and math.prod(per_row) != len(spec.labels):
        raise ConfigError(f"classification: {len(spec.labels)} labels, but {output.describe()} holds "
                          f"{math.prod(per_row)} scores per row")


def _check_image(spec: ImageProcessor, tensor: TensorConfig) -> None:
    if tensor.datatype not in (*FLOAT_TYPES, "UINT8"):
        raise ConfigError(f"processor: {tensor.describe()} must be FP16, FP32, FP64 or UINT8 to take pictures")
    if len(tensor.shape) != 4:
        raise ConfigError(f"processor: {tensor.describe()} must have 4 axes ({spec.layout})")
    c, h, w = (1, 2, 3) if spec.layout == "NCHW" else (3, 1, 2)
    for what, axis, value in (("channels", c, spec.channels), ("height", h, spec.height), ("width", w, spec.width)):
        if tensor.shape[axis] not in (-1, value):
            raise ConfigError(f"processor: {what} {value} does not fit {tensor.describe()} ({spec.layout})")
    if (spec.color_mode == "L") != (spec.channels == 1):
        raise ConfigError(f"processor: color_mode {spec.color_mode} with {spec.channels} channel(s)")
    for key in ("mean", "std"):
        value = getattr(spec, key)
        if isinstance(value, list) and len(value) not in (1, spec.channels):
            raise ConfigError(f"processor.{key}: {len(value)} values for {spec.channels} channel(s)")
    if spec.std == 0 or (isinstance(spec.std, list) and 0 in spec.std):
        raise ConfigError("processor.std: 0 would divide by zero")


def _check_sequence(spec: SequenceProcessor, inputs: dict[str, TensorConfig]) -> None:
    sequence = _named(inputs, spec.input, "processor.input")
    lengths = _named(inputs, spec.lengths_input, "processor.lengths_input")
    if len(sequence.shape) != 3 or sequence.shape[2] not in (-1, spec.features) or sequence.datatype not in FLOAT_TYPES:
        raise ConfigError(f"processor: {sequence.describe()} must be [N, T, {spec.features}] floats")
    if len(lengths.shape) != 1 or lengths.datatype not in INTEGER_TYPES:
        raise ConfigError(f"processor: {lengths.describe()} must be [N] integers")
    if len(spec.mean) != spec.features or len(spec.std) != spec.features:
        raise ConfigError(f"processor: mean and std need {spec.features} values each")
