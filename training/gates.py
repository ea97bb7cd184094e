"""The export gates every published model passes, the built-in families' (``training.export``) and a user's own
module's (``training.module_export``): ``onnx.checker``, then parity between PyTorch and onnxruntime at several
batch sizes. A model that fails a gate is not published; ``GateFailed`` names the gate and by how much it missed.
Also the provenance written into each report (``training.provenance``, with torch's version).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from service.report import Provenance
from training.errors import GateFailed
from training.provenance import provenance as base_provenance

OPSET = 17
PARITY_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 7, 64)
TOP1_AGREEMENT_MIN = 0.999


def check_onnx(path: Path) -> None:
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as error:
        raise GateFailed(f"onnx.checker gate: {error}") from error


def cpu_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity_gap(expected: np.ndarray, got: np.ndarray) -> float:
    """max |torch - onnx|, relative to max(1, max |torch|): for probabilities the absolute difference, for logits
    of any magnitude a difference at float32's precision."""
    if expected.shape != got.shape:
        return float("inf")
    if expected.size == 0:
        return 0.0
    scale = max(1.0, float(np.abs(expected).max()))
    return float(np.abs(expected.astype(np.float64) - got.astype(np.float64)).max()) / scale


def check_parity(run_torch: Callable[[tuple[torch.Tensor, ...]], list[np.ndarray]], session: ort.InferenceSession,
                 checks: Mapping[str, tuple[torch.Tensor, ...]], tolerance: float = PARITY_TOLERANCE,
                 ) -> dict[str, float]:
    """Each check's worst gap over all outputs; GateFailed when any exceeds ``tolerance``."""
    names = [i.name for i in session.get_inputs()]
    gaps = {}
    with torch.no_grad():
        for label, inputs in checks.items():
            expected = run_torch(inputs)
            got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})
            gaps[label] = max(parity_gap(e, g) for e, g in zip(expected, got, strict=True))
    worst = max(gaps, key=lambda k: gaps[k])
    if gaps[worst] > tolerance:
        raise GateFailed(f"parity gate: max |torch - onnx| = {gaps[worst]:.3g} at {worst} exceeds "
                         f"{tolerance:g} by {gaps[worst] - tolerance:.3g}")
    return gaps


def provenance(exporter: str, source: str | None = None) -> Provenance:
    """An exporter's provenance: torch's version and the opset it exported with."""
    return base_provenance(exporter, source, torch=torch.__version__, opset=OPSET)
