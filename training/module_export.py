"""``nnserve export --module PKG.MOD:FACTORY``: a user's own PyTorch module into the model repository.

The factory (a function taking no arguments, or an ``nn.Module`` class) builds the module; ``--weights`` loads a
state dict into it (strictly: missing or unexpected keys are named). It is exported with the TorchScript exporter
with a dynamic batch axis on every input and output and the ``-1`` axes each ``--input`` declares, then goes through
the gates every published model passes (``training.gates``): ``onnx.checker``, and parity with PyTorch at batch
sizes 1, 7 and 64 (and, when an input has open axes, once more at other sizes of them) on random inputs. The file
is then published exactly as ``nnserve import`` publishes one, the server's own loading code checking it, with a
report of the parity figures and where the model came from.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from service.importer import ImportOptions, import_model
from service.loading import LoadedVersion
from service.report import Parity, TrainingReport
from service.repository import MODEL_FILE
from training.errors import GateFailed
from training.gates import (
    OPSET,
    PARITY_BATCHES,
    PARITY_TOLERANCE,
    check_onnx,
    check_parity,
    cpu_session,
    provenance,
)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "float64": torch.float64, "fp64": torch.float64, "int64": torch.int64,
          "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
OPEN_SIZES = (32, 48)  # an open axis at export, then at a second size in one more parity check


@dataclass(frozen=True)
class InputSpec:
    """``NAME:DTYPE:DIMS``: one row's dims (``3x224x224``; ``-1`` for an open axis; empty for a scalar per row)."""

    name: str
    dtype: torch.dtype
    dims: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        parts = text.split(":")
        if len(parts) != 3 or not parts[0] or parts[1].lower() not in DTYPES:
            raise ValueError(f"--input {text!r}: expected NAME:DTYPE:DIMS, e.g. image:float32:3x224x224, with DTYPE "
                             f"one of {sorted(DTYPES)}")
        try:
            dims = tuple(int(d) for d in parts[2].split("x")) if parts[2] else ()
        except ValueError:
            raise ValueError(f"--input {text!r}: DIMS are sizes separated by 'x' (-1 for an open axis)") from None
        if any(d == 0 or d < -1 for d in dims):
            raise ValueError(f"--input {text!r}: every size is positive, or -1")
        return cls(parts[0], DTYPES[parts[1].lower()], dims)

    def example(self, rows: int, open_size: int, generator: torch.Generator) -> torch.Tensor:
        shape = (rows, *(open_size if d == -1 else d for d in self.dims))
        if self.dtype.is_floating_point:
            return torch.randn(shape, generator=generator).to(self.dtype)
        if self.dtype == torch.bool:
            return torch.rand(shape, generator=generator) < 0.5
        if self.dtype == torch.uint8:
            return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
        return torch.ones(shape, dtype=self.dtype)  # a valid length, index or count for most models


@dataclass
class ModuleExportOptions:
    module: str
    name: str
    inputs: list[InputSpec]
    weights: Path | None = None
    outputs: list[str] = field(default_factory=list)
    repository: Path = Path("models")
    labels: Path | None = None
    image_preprocessing: str | None = None
    scores: str | None = None
    tolerance: float = PARITY_TOLERANCE


def build_module(path: str) -> nn.Module:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--module {path!r}: expected PKG.MODULE:FACTORY")
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current folder, as `python -m` would have it
    factory = getattr(importlib.import_module(module_name), attr)
    model = factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"--module {path}: returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(model: nn.Module, path: Path) -> str:
    """Load a state dict (or a checkpoint holding one under "state_dict" or "model"); return the file's sha256."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"--weights {path}: holds a {type(state).__name__}, not a state dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {list(state[k].shape)} (the module's: {list(expected[k].shape)})" for k in expected
                  if k in state and getattr(state[k], "shape", None) != expected[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(f"--weights {path} does not fit the module: missing keys {missing[:8]}, unexpected keys "
                         f"{unexpected[:8]}, shapes that differ {mismatched[:8]}")
    model.load_state_dict(state)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outputs(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in result):
        return list(result)
    raise ValueError(f"the module returned {type(result).__name__}: export needs a tensor or a tuple of tensors")


def export_module(options: ModuleExportOptions) -> LoadedVersion:
    model = build_module(options.module).eval()
    source = options.module
    if options.weights is not None:
        source += f", weights {options.weights.name} sha256 {load_weights(model, options.weights)}"
    generator = torch.Generator().manual_seed(0)
    specs = options.inputs

    def example(rows: int, open_size: int = OPEN_SIZES[0]) -> tuple[torch.Tensor, ...]:
        return tuple(s.example(rows, open_size, generator) for s in specs)

    with torch.no_grad():
        count = len(_outputs(model(*example(2))))
    names = options.outputs or (["output"] if count == 1 else [f"output_{i}" for i in range(count)])
    if len(names) != count:
        raise ValueError(f"--output names {len(names)} outputs, the module returns {count}")
    dynamic: dict[str, dict[int, str]] = {
        s.name: {0: "batch", **{i + 1: f"{s.name}_axis{i + 1}" for i, d in enumerate(s.dims) if d == -1}}
        for s in specs}
    dynamic.update({name: {0: "batch"} for name in names})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings: the parity gate checks what they warn about
            torch.onnx.export(model, example(2), str(path), input_names=[s.name for s in specs], output_names=names,
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        check_onnx(path)
        checks = {f"batch_{b}": example(b) for b in PARITY_BATCHES}
        if any(-1 in s.dims for s in specs):
            checks[f"batch_7_open_axes_{OPEN_SIZES[1]}"] = example(7, OPEN_SIZES[1])

        def run_torch(inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
            return [t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy() for t in _outputs(model(*inputs))]

        gaps = check_parity(run_torch, cpu_session(path), checks, options.tolerance)
        report = TrainingReport(parity=Parity(max_abs_diff=gaps, tolerance=options.tolerance),
                                provenance=provenance("torch.onnx.export (TorchScript)", source))
        imported = ImportOptions(name=options.name, repository=options.repository, labels=options.labels,
                                 image_preprocessing=options.image_preprocessing, scores=options.scores)
        return import_model(path, imported, report=report)


__all__ = ["GateFailed", "InputSpec", "ModuleExportOptions", "export_module"]
