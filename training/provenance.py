"""The provenance written into each report: the git commit, the library versions, the opset, the exporter (or
quantizer), when, and from what. Free of torch, so that a step that needs none (``training.quantize``) does not
pay its import; the exporters pass their torch version."""

from __future__ import annotations

import datetime as dt
import subprocess

import onnx
import onnxruntime as ort

from service.report import Provenance


def git_commit() -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return result.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def provenance(exporter: str, source: str | None = None, torch: str | None = None, opset: int | None = None,
               ) -> Provenance:
    return Provenance(
        git_commit=git_commit(), torch=torch, onnx=onnx.__version__, onnxruntime=ort.__version__, opset=opset,
        exporter=exporter, created_utc=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), source=source,
    )
