"""Request bodies for the benchmark, made from real test-set images or sequences, for each protocol."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from service.manifest import ImagePreprocessing, Manifest
from service.preprocess import normalize_pixels, sequences_to_tensors


@dataclass
class Payload:
    path: str
    content_type: str
    bodies: list[bytes]
    headers: list[dict[str, str]]
    samples_per_request: int


def test_inputs(manifest: Manifest, data_dir: Path | None, count: int) -> list[np.ndarray]:
    """``count`` raw test inputs: uint8 28x28 images or float32 [T, 12] sequences."""
    if isinstance(manifest.preprocessing, ImagePreprocessing):
        from training.data.idx import read_idx
        from training.data.sources import locate

        path, _ = locate("fashion-mnist", "t10k-images-idx3-ubyte.gz", data_dir)
        return list(read_idx(path)[:count])
    from training.data import load_japanese_vowels

    return load_japanese_vowels(data_dir).test_sequences[:count]


def _tensors(manifest: Manifest, raw: list[np.ndarray]) -> dict[str, np.ndarray]:
    spec = manifest.preprocessing
    if isinstance(spec, ImagePreprocessing):
        return {"image": normalize_pixels(np.stack(raw), spec)}
    sequence, lengths = sequences_to_tensors(raw, spec)
    return {"sequence": sequence, "lengths": lengths}


def _v2_types(manifest: Manifest) -> dict[str, str]:
    return {s.name: {"float32": "FP32", "int64": "INT64"}[s.dtype] for s in manifest.inputs}


def build(manifest: Manifest, protocol: str, raw: list[np.ndarray], per_request: int = 1) -> Payload:
    """One body per group of ``per_request`` inputs; the load generator cycles through them."""
    groups = [raw[i:i + per_request] for i in range(0, len(raw) - per_request + 1, per_request)]
    bodies: list[bytes] = []
    headers: list[dict[str, str]] = []
    path = f"/v2/models/{manifest.name}/infer"
    for group in groups:
        if protocol == "predict":
            bodies.append(orjson.dumps({"model": manifest.name, "inputs": [g.tolist() for g in group]}))
            headers.append({})
            continue
        tensors = _tensors(manifest, group)
        types = _v2_types(manifest)
        if protocol == "v2-json":
            bodies.append(orjson.dumps({"inputs": [
                {"name": n, "shape": list(t.shape), "datatype": types[n], "data": t.ravel().tolist()}
                for n, t in tensors.items()]}))
            headers.append({})
        else:
            head = orjson.dumps({
                "inputs": [{"name": n, "shape": list(t.shape), "datatype": types[n],
                            "parameters": {"binary_data_size": t.nbytes}} for n, t in tensors.items()],
                "outputs": [{"name": o.name, "parameters": {"binary_data": True}} for o in manifest.outputs]})
            bodies.append(head + b"".join(t.tobytes() for t in tensors.values()))
            headers.append({"Inference-Header-Content-Length": str(len(head))})
    content_type = "application/octet-stream" if protocol == "v2-binary" else "application/json"
    return Payload("/predict" if protocol == "predict" else path, content_type, bodies, headers, per_request)
