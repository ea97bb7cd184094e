"""The CUDA path, checked for real on a machine with an NVIDIA GPU and onnxruntime-gpu (no torch needed):

    python deploy/cuda-check.py [--repository models] [--seconds 5]

1. Each model of the repository loads through nnserve's backend with ``providers=cuda`` (CUDA really active, read
   back from the session) and answers a batch of random inputs as its CPU session does: top-1 the same for at least
   98% (onnxruntime's CUDA convolutions and products run in TF32 by default; the largest probability difference is
   printed).
2. Raw onnxruntime samples/s at batch 64 on CUDA and on the CPU, per model.
3. ``nnserve serve --providers cuda`` starts (one process: CUDA's default), reports CUDA in ``/v2/models/{m}``,
   answers ``/predict`` and OIP requests, and the same requests get the same top-1 from a CPU server.
Prints one table; exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.backends import RuntimeOptions
from service.backends.onnx import CUDA, OnnxBackend
from service.bench.inprocess import samples_per_s
from service.hosting.launcher import serve_subprocess


def feeds_for(backend: OnnxBackend, rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for tensor in backend.signature.inputs:
        if tensor.name == "lengths":
            feeds[tensor.name] = rng.integers(7, 20, rows).astype(np.int64)
            continue
        shape = [rows] + [d if d is not None and d > 0 else 20 for d in tensor.shape[1:]]
        feeds[tensor.name] = (rng.random(shape) * (255 if len(shape) == 4 else 1)).astype(np.float32)
    return feeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}, providers offered: {ort.get_available_providers()}")
    failures = []
    rng = np.random.default_rng(0)
    print("| model | CUDA active | top-1 equal to CPU | max abs diff | CUDA b=64 samples/s | CPU b=64 samples/s |")
    print("|---|---|---|---|---|---|")
    for folder in sorted(p for p in args.repository.iterdir() if (p / "1" / "model.onnx").exists()):
        path = folder / "1" / "model.onnx"
        cuda = OnnxBackend(path, RuntimeOptions("cuda", intra_op_threads=0))
        cpu = OnnxBackend(path, RuntimeOptions("cpu", intra_op_threads=0))
        feeds = feeds_for(cpu, 64, rng)
        out_cuda, out_cpu = cuda.run(feeds), cpu.run(feeds)
        name = cpu.signature.outputs[0].name
        equal = float(np.mean(out_cuda[name].argmax(-1) == out_cpu[name].argmax(-1)))
        diff = float(np.abs(out_cuda[name] - out_cpu[name]).max())
        active = cuda.providers[0] == CUDA
        print(f"| {folder.name} | {active} | {equal:.3f} | {diff:.1e} | "
              f"{samples_per_s(cuda.session, feeds, 64, args.seconds):,.0f} | "
              f"{samples_per_s(cpu.session, feeds, 64, args.seconds):,.0f} |")
        if not active or equal < 0.98:  # onnxruntime's CUDA convolutions and products run in TF32 by default
            failures.append(folder.name)
    image = {"model": "resnet", "inputs": (rng.random((2, 28, 28)) * 255).round().tolist()}
    answers = {}
    for providers in ("cuda", "cpu"):
        flags = ["--providers", providers, "--workers", "1", "--model", "resnet", "--no-access-log"]
        with serve_subprocess(args.repository, flags, timeout=120) as (url, _, _):
            import httpx

            parameters = httpx.get(f"{url}/v2/models/resnet").json()["parameters"]
            predicted = httpx.post(f"{url}/predict", json=image, timeout=30).json()
            tensor = (rng.random((4, 1, 28, 28))).astype(np.float32)
            oip = httpx.post(f"{url}/v2/models/resnet/infer", timeout=30, json={"inputs": [
                {"name": "image", "shape": list(tensor.shape), "datatype": "FP32", "data": tensor.ravel().tolist()}]})
            start, n = time.perf_counter(), 0
            with httpx.Client(base_url=url) as client:
                while time.perf_counter() - start < args.seconds:
                    client.post("/predict", json=image)
                    n += 1
            answers[providers] = [p["label"] for p in predicted["predictions"]]
            print(f"serve --providers {providers}: parameters.providers={parameters['providers']}, "
                  f"/predict {answers[providers]}, OIP status {oip.status_code}, "
                  f"lone /predict {1000 * (time.perf_counter() - start) / n:.2f} ms per request")
            if (providers == "cuda" and parameters["providers"][0] != CUDA) or oip.status_code != 200:
                failures.append(f"serve-{providers}")
    if answers["cuda"] != answers["cpu"]:
        failures.append("serve answers differ")
    print("FAILED: " + ", ".join(failures) if failures else "all CUDA checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
