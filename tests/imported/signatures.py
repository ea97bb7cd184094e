"""Small ONNX graphs built here, one per kind of signature a served model may have, each with inputs that fit it.

Every datatype both ways, FP16, a model quantized by ``onnxruntime.quantization``, a uint8 NHWC image input
with labels, BOOL and BYTES, several inputs and outputs, a scalar input, a state whose batch axis is its second,
no batch axis, a fixed batch of 1, open height and width, a first axis open everywhere that is still no batch axis,
sequences of any length declared ragged (padded across a batch) with their lengths beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper

DATATYPES = {  # OIP name -> (ONNX element type, numpy dtype)
    "BOOL": (T.BOOL, np.bool_), "UINT8": (T.UINT8, np.uint8), "UINT16": (T.UINT16, np.uint16),
    "UINT32": (T.UINT32, np.uint32), "UINT64": (T.UINT64, np.uint64), "INT8": (T.INT8, np.int8),
    "INT16": (T.INT16, np.int16), "INT32": (T.INT32, np.int32), "INT64": (T.INT64, np.int64),
    "FP16": (T.FLOAT16, np.float16), "FP32": (T.FLOAT, np.float32), "FP64": (T.DOUBLE, np.float64),
    "BYTES": (T.STRING, object),
}
RNG = np.random.default_rng(7)


@dataclass
class Signature:
    name: str
    build: Callable[[Path], None]  # writes the .onnx file
    feeds: Callable[[int], dict[str, np.ndarray]]  # inputs for a request of that many rows (ignored if unbatched)
    batches: bool
    config: dict[str, Any] = field(default_factory=dict)  # what `nnserve import --config` gets


def _save(graph: onnx.GraphProto, path: Path, opset: int = 18) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _io(name: str, datatype: str, shape: list[Any]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, DATATYPES[datatype][0], shape)


def random_values(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype = DATATYPES[datatype][1]
    if datatype == "BYTES":
        words = np.array([b"yes", b"no", b"caf\xc3\xa9", b"", b"a longer string"], dtype=object)
        return words[RNG.integers(0, len(words), size=shape)] if shape else np.array(b"yes", dtype=object)
    if datatype == "BOOL":
        return RNG.random(shape) < 0.5
    if dtype in (np.float16, np.float32, np.float64):
        return RNG.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(max(info.min, -1000), min(info.max, 1000), size=shape, endpoint=True).astype(dtype)


def all_types(path: Path) -> None:
    nodes = [helper.make_node("Identity", [f"in_{d.lower()}"], [f"out_{d.lower()}"]) for d in DATATYPES]
    _save(helper.make_graph(nodes, "all_types", [_io(f"in_{d.lower()}", d, ["N", 2]) for d in DATATYPES],
                            [_io(f"out_{d.lower()}", d, ["N", 2]) for d in DATATYPES]), path)


def fp16(path: Path) -> None:
    two = helper.make_tensor("two", T.FLOAT16, [], np.array(2, np.float16).tobytes(), raw=True)
    _save(helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "fp16", [_io("x", "FP16", ["N", 4])],
                            [_io("y", "FP16", ["N", 4])], [two]), path)


def uint8_image(path: Path) -> None:
    """Pictures as uint8 NHWC; scores = the mean of each colour channel (so a red picture is "red")."""
    nodes = [helper.make_node("Cast", ["pixels"], ["f"], to=T.FLOAT),
             helper.make_node("ReduceMean", ["f", "axes"], ["scores"], keepdims=0)]
    axes = helper.make_tensor("axes", T.INT64, [2], [1, 2])
    _save(helper.make_graph(nodes, "uint8_image", [_io("pixels", "UINT8", ["N", 16, 16, 3])],
                            [_io("scores", "FP32", ["N", 3])], [axes]), path)


def bool_bytes(path: Path) -> None:
    nodes = [helper.make_node("Identity", ["text"], ["echo"]), helper.make_node("Not", ["flag"], ["not_flag"]),
             helper.make_node("Equal", ["text", "yes"], ["is_yes"])]
    yes = helper.make_tensor("yes", T.STRING, [1], [b"yes"])  # type: ignore[list-item]  # (onnx types vals as numbers)
    _save(helper.make_graph(nodes, "bool_bytes", [_io("text", "BYTES", ["N"]), _io("flag", "BOOL", ["N"])],
                            [_io("echo", "BYTES", ["N"]), _io("not_flag", "BOOL", ["N"]), _io("is_yes", "BOOL", ["N"])],
                            [yes]), path, opset=19)


def multi_io(path: Path) -> None:
    one = helper.make_tensor("one", T.FLOAT, [], [1.0])
    axis = helper.make_tensor("axis", T.INT64, [1], [1])
    nodes = [helper.make_node("Add", ["a", "one"], ["a_plus_one"]),
             helper.make_node("ReduceSum", ["b", "axis"], ["b_sum"], keepdims=1),
             helper.make_node("Cast", ["a"], ["a64"], to=T.DOUBLE),
             helper.make_node("ReduceMax", ["a64", "axis"], ["a_max"], keepdims=0)]
    _save(helper.make_graph(nodes, "multi_io", [_io("a", "FP32", ["N", 3]), _io("b", "INT64", ["N", 2])],
                            [_io("a_plus_one", "FP32", ["N", 3]), _io("b_sum", "INT64", ["N", 1]),
                             _io("a_max", "FP64", ["N"])], [one, axis]), path)


def scalar_input(path: Path) -> None:
    """A scalar input, and a scalar output (its echo: a rank-0 tensor both ways)."""
    nodes = [helper.make_node("Mul", ["x", "scale"], ["y"]), helper.make_node("Identity", ["scale"], ["scale_out"])]
    _save(helper.make_graph(nodes, "scalar", [_io("x", "FP32", ["N", 3]), _io("scale", "FP32", [])],
                            [_io("y", "FP32", ["N", 3]), _io("scale_out", "FP32", [])]), path)


def state_second_axis(path: Path) -> None:
    """A recurrent step: state [2, N, 4] (its batch axis is the second), y = x + state[0], new state halved."""
    zero = helper.make_tensor("zero", T.INT64, [], [0])
    half = helper.make_tensor("half", T.FLOAT, [], [0.5])
    nodes = [helper.make_node("Gather", ["state", "zero"], ["first"], axis=0),
             helper.make_node("Add", ["x", "first"], ["y"]), helper.make_node("Mul", ["state", "half"], ["next_state"])]
    _save(helper.make_graph(nodes, "state", [_io("x", "FP32", ["N", 4]), _io("state", "FP32", [2, "N", 4])],
                            [_io("y", "FP32", ["N", 4]), _io("next_state", "FP32", [2, "N", 4])], [zero, half]), path)


def no_batch_axis(path: Path) -> None:
    three = helper.make_tensor("three", T.FLOAT, [], [3.0])
    _save(helper.make_graph([helper.make_node("Mul", ["x", "three"], ["y"])], "no_batch", [_io("x", "FP32", [5])],
                            [_io("y", "FP32", [5])], [three]), path)


def fixed_batch_one(path: Path) -> None:
    _save(helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "fixed_one", [_io("x", "FP32", [1, 4])],
                            [_io("y", "FP32", [1, 4])]), path)


def open_height_width(path: Path) -> None:
    axes = helper.make_tensor("axes", T.INT64, [2], [2, 3])
    two = helper.make_tensor("two", T.FLOAT, [], [2.0])
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0),
             helper.make_node("Mul", ["x", "two"], ["doubled"])]
    _save(helper.make_graph(nodes, "open_hw", [_io("x", "FP32", ["N", 1, "H", "W"])],
                            [_io("total", "FP32", ["N", 1]), _io("doubled", "FP32", ["N", 1, "H", "W"])], [axes, two]),
          path)


def rows_not_kept(path: Path) -> None:
    """Every first axis is open, yet it is no batch axis: ``[N, 4]`` -> ``[2N, 2]`` (only running it shows that)."""
    shape = helper.make_tensor("shape", T.INT64, [2], [-1, 2])
    _save(helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "rows_not_kept",
                            [_io("x", "FP32", ["N", 4])], [_io("y", "FP32", ["M", 2])], [shape]), path)


def ragged_sum(path: Path) -> None:
    """total[n] = the sum of seq[n, t] over t < lengths[n]: padding after a sequence changes nothing."""
    one = helper.make_tensor("one", T.INT64, [], [1])
    zero = helper.make_tensor("zero", T.INT64, [], [0])
    axis = helper.make_tensor("axis", T.INT64, [1], [1])
    nodes = [helper.make_node("Shape", ["seq"], ["shape"]), helper.make_node("Gather", ["shape", "one"], ["steps"]),
             helper.make_node("Range", ["zero", "steps", "one"], ["t"]),
             helper.make_node("Unsqueeze", ["lengths", "axis"], ["limit"]),
             helper.make_node("Less", ["t", "limit"], ["valid"]),  # [N, T]
             helper.make_node("Cast", ["valid"], ["weight"], to=T.FLOAT),
             helper.make_node("Unsqueeze", ["weight", "two"], ["weight3"]),
             helper.make_node("Mul", ["seq", "weight3"], ["kept"]),
             helper.make_node("ReduceSum", ["kept", "axis"], ["total"], keepdims=0)]
    two = helper.make_tensor("two", T.INT64, [1], [2])
    _save(helper.make_graph(nodes, "ragged_sum", [_io("seq", "FP32", ["N", "T", 3]), _io("lengths", "INT64", ["N"])],
                            [_io("total", "FP32", ["N", 3])], [one, zero, axis, two]), path)


def ragged_feeds(rows: int, steps: int) -> dict[str, np.ndarray]:
    lengths = RNG.integers(1, steps, size=rows, endpoint=True)
    seq = RNG.normal(size=(rows, steps, 3)).astype(np.float32)
    for row, length in enumerate(lengths):
        seq[row, length:] = 0.0  # as a client pads its own rows
    return {"seq": seq, "lengths": lengths.astype(np.int64)}


def quantized_mlp(models_dir: Path) -> Callable[[Path], None]:
    """The committed MLP with int8 weights, by onnxruntime.quantization's dynamic quantisation."""
    def build(path: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = max((models_dir / "mlp").iterdir(), key=lambda p: int(p.name)) / "model.onnx"
        quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8)
    return build


def signatures(models_dir: Path) -> list[Signature]:
    return [
        Signature("all-types", all_types, lambda n: {f"in_{d.lower()}": random_values(d, (n, 2)) for d in DATATYPES},
                  batches=True),
        Signature("fp16", fp16, lambda n: {"x": random_values("FP16", (n, 4))}, batches=True),
        Signature("quantized-mlp", quantized_mlp(models_dir),
                  lambda n: {"image": RNG.random((n, 1, 28, 28)).astype(np.float32)}, batches=True),
        Signature("uint8-image", uint8_image, lambda n: {"pixels": random_values("UINT8", (n, 16, 16, 3))},
                  batches=True, config={
                      "processor": {"kind": "image", "layout": "NHWC", "color_mode": "RGB"},
                      "classification": {"labels": ["red", "green", "blue"]}}),
        Signature("bool-bytes", bool_bytes,
                  lambda n: {"text": random_values("BYTES", (n,)), "flag": random_values("BOOL", (n,))}, batches=True),
        Signature("multi-io", multi_io,
                  lambda n: {"a": random_values("FP32", (n, 3)), "b": random_values("INT64", (n, 2))}, batches=True),
        Signature("scalar-input", scalar_input,
                  lambda n: {"x": random_values("FP32", (n, 3)), "scale": np.array(2.5, np.float32)}, batches=False),
        Signature("state-second-axis", state_second_axis,
                  lambda n: {"x": random_values("FP32", (n, 4)), "state": random_values("FP32", (2, n, 4))},
                  batches=False),
        Signature("no-batch-axis", no_batch_axis, lambda n: {"x": random_values("FP32", (5,))}, batches=False),
        Signature("fixed-batch-1", fixed_batch_one, lambda n: {"x": random_values("FP32", (1, 4))}, batches=False),
        Signature("rows-not-kept", rows_not_kept, lambda n: {"x": random_values("FP32", (n, 4))}, batches=False),
        Signature("ragged-sum", ragged_sum, lambda n: ragged_feeds(n, 3 + n), batches=True,
                  config={"ragged": [{"input": "seq", "axis": 1, "lengths_input": "lengths"}],
                          "batching": {"max_queue_delay_ms": 30}}),  # concurrent requests surely batch
        Signature("open-height-width", open_height_width,
                  lambda n: {"x": random_values("FP32", (n, 1, 8 + n, 12))}, batches=True),
    ]
