"""The CUDA path, checked for real on a machine with an NVIDIA GPU and onnxruntime-gpu (no torch needed):

    python deploy/cuda-check.py [--repository models] [--seconds 5] [--load-models resnet,cnn] [--sections 1,3,4,5]

1. Each model of the repository loads through nnserve's backend with ``providers=cuda`` (CUDA really active, read
   back from the session) and answers a batch of random inputs as its CPU session does: top-1 the same for at least
   98% (onnxruntime's CUDA convolutions and products run in TF32 by default; the largest probability difference is
   printed).
2. Raw onnxruntime samples/s at batch 64 (or the batch dimension a model fixes) on CUDA and on the CPU, per model.
3. What a change of batch size costs on CUDA (``service.batch_sizes``): ms per batch of 32 on one session, the same
   batch alternating with one of 31 rows, and, with cuDNN's exhaustive algorithm choice, the fixed batch again.
4. ``nnserve serve --providers cuda --workers 1`` starts, reports CUDA and its batch-size sessions in
   ``/v2/models/{m}``, answers ``/predict`` and OIP requests, and the same requests get the same top-1 from a CPU
   server.
5. Served under load: c=64 OIP binary requests for ``--seconds`` against each of ``--servers`` (by default
   ``--providers cuda`` as it starts by default: ``--allowed-batch-sizes auto``, a session per power-of-two size,
   4 processes; the same in one process; one process and one session, ``any``, as before; and ``--providers cpu``):
   requests/s, median latency, mean batch and mean compute per batch (from /metrics), and a lone client's median;
   a server that fails a request, or answers none, fails the check.
6. A soak (``--soak-seconds``, off at 0): ``--providers cuda`` as it starts by default serves c=64 OIP binary
   requests of the first ``--load-models`` model, in 10 s spells back to back; after each, the server processes'
   resident memory and GPU memory (``nvidia-smi``) and the spell's requests/s are printed. The check fails on any
   failed request, or if either memory grows by more than 10% and 64 MiB from the end of the first spell to the last.
Prints the tables; exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.backends import Backend, RuntimeOptions
from service.backends.onnx import CUDA, OnnxBackend
from service.bench.inprocess import samples_per_s
from service.hosting.launcher import serve_subprocess


def feeds_for(backend: Backend, rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs of ``rows`` rows, or of the batch dimension a model fixes (an imported model's)."""
    fixed = [t.shape[0] for t in backend.signature.inputs if t.shape and t.shape[0] is not None and t.shape[0] > 0]
    rows = fixed[0] if fixed else rows
    feeds = {}
    for tensor in backend.signature.inputs:
        if tensor.name == "lengths":
            feeds[tensor.name] = rng.integers(7, 20, rows).astype(np.int64)
            continue
        shape = [rows] + [d if d is not None and d > 0 else 20 for d in tensor.shape[1:]]
        feeds[tensor.name] = (rng.random(shape) * (255 if len(shape) == 4 else 1)).astype(np.float32)
    return feeds


def ms_per_batch(backend: OnnxBackend, batches: list[dict[str, np.ndarray]], seconds: float) -> float:
    """The batches run in turn, back to back, after one unmeasured round: ms per batch."""
    for feeds in batches:
        backend.run(feeds)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        backend.run(batches[runs % len(batches)])
        runs += 1
    return 1000 * (time.perf_counter() - start) / runs


def shape_changes(repository: Path, models: list[str], seconds: float, rng: np.random.Generator) -> None:
    """Section 3 of the module doc."""
    from service.backends import onnx

    print("\n| model, ms per batch on CUDA | b=32, one shape | b=32 and b=31 in turn | b=32, exhaustive search | "
          "b=1, one shape |")
    print("|---|---|---|---|---|")
    for name in models:
        path = repository / name / "1" / "model.onnx"
        heuristic = OnnxBackend(path, RuntimeOptions("cuda", intra_op_threads=0))
        saved = dict(onnx.PROVIDER_OPTIONS[CUDA])
        onnx.PROVIDER_OPTIONS[CUDA] = {**saved, "cudnn_conv_algo_search": "EXHAUSTIVE"}
        try:
            exhaustive = OnnxBackend(path, RuntimeOptions("cuda", intra_op_threads=0))
        finally:
            onnx.PROVIDER_OPTIONS[CUDA] = saved
        full, short, one = feeds_for(heuristic, 32, rng), feeds_for(heuristic, 31, rng), feeds_for(heuristic, 1, rng)
        print(f"| {name} | {ms_per_batch(heuristic, [full], seconds):.3f} | "
              f"{ms_per_batch(heuristic, [full, short], seconds):.3f} | "
              f"{ms_per_batch(exhaustive, [full], seconds):.3f} | {ms_per_batch(heuristic, [one], seconds):.3f} |")


def _model_sum(sample: dict, name: str, model: str) -> float:  # type: ignore[type-arg]
    return float(sum(v for (n, labels), v in sample.items() if n == name and dict(labels).get("model") == model))


def served_load(repository: Path, models: list[str], servers: str, seconds: float,
                rng: np.random.Generator) -> list[str]:
    """Section 5 of the module doc; the servers that failed a request or answered none."""
    import asyncio

    from service.bench.loadgen import run_asyncio
    from service.bench.payloads import Sample, build
    from service.bench.scrape import scrape
    from service.loading import load_version
    from service.settings import Settings

    local = Settings(providers="cpu", warmup_batch_sizes=[1])
    loaded = {m: load_version(repository / m / "1", m, 1, local) for m in models}
    payloads = {m: build(v, "v2-binary", [Sample(None, feeds_for(v.backend, 1, rng)) for _ in range(32)])
                for m, v in loaded.items()}
    failures = []
    print("\n| server | model | req/s, c=64 | p50 ms | mean batch | compute ms per batch | p50 ms, c=1 | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for server in servers.split(";"):
        providers, sizes, *workers = server.split(":")
        flags = ["--providers", providers, "--allowed-batch-sizes", sizes, "--no-access-log",
                 *(["--workers", workers[0]] if workers else []), *[f for m in models for f in ("--model", m)]]
        with serve_subprocess(repository, flags, timeout=180) as (url, _, log):
            processes = re.search(r"nnserve: (\d+) serving process", log.read_text())
            label = f"--providers {providers} --allowed-batch-sizes {sizes}, " \
                    f"{processes.group(1) if processes else '?'} process(es)"
            for model in models:
                try:
                    lone = asyncio.run(run_asyncio(url, payloads[model], 1, 2.0))
                    before = scrape(url)
                    result = asyncio.run(run_asyncio(url, payloads[model], 64, seconds))
                    after = scrape(url)
                except Exception as error:  # a connection lost: this server fails, the others are still measured
                    print(f"| {label} | {model} | {type(error).__name__}: {str(error)[:200]} | | | | | |", flush=True)
                    failures.append(f"load {server} {model}")
                    continue
                batches = _model_sum(after, "nnserve_batch_size_count", model) - \
                    _model_sum(before, "nnserve_batch_size_count", model)
                rows = _model_sum(after, "nnserve_batch_size_sum", model) - \
                    _model_sum(before, "nnserve_batch_size_sum", model)
                compute = _model_sum(after, "nnserve_compute_seconds_sum", model) - \
                    _model_sum(before, "nnserve_compute_seconds_sum", model)
                print(f"| {label} | {model} | {result.rps:,.0f} | {result.p50_ms:.1f} | {rows / max(batches, 1):.1f} "
                      f"| {1000 * compute / max(batches, 1):.2f} | {lone.p50_ms:.2f} | {result.errors + lone.errors} |",
                      flush=True)
                if result.errors or lone.errors or not result.requests or not lone.requests:
                    failures.append(f"load {server} {model}")
    return failures


def _gpu_mib(pids: list[int]) -> float:
    """GPU memory the processes hold, as nvidia-smi reports it (0 where it reports none)."""
    import subprocess

    try:
        listing = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30).stdout
    except FileNotFoundError:  # no NVIDIA driver here (the CPU test of this section)
        return 0.0
    return float(sum(float(used) for pid, used in (line.split(",") for line in listing.splitlines() if "," in line)
                     if int(pid) in pids))


def soak(repository: Path, model: str, seconds: float, rng: np.random.Generator, providers: str = "cuda",
         spell: float = 10.0) -> list[str]:
    """Section 6 of the module doc; what failed."""
    import asyncio

    from service.bench.loadgen import run_asyncio
    from service.bench.payloads import Sample, build
    from service.bench.scrape import rss_mb, tree_pids
    from service.loading import load_version
    from service.settings import Settings

    loaded = load_version(repository / model / "1", model, 1, Settings(providers="cpu", warmup_batch_sizes=[1]))
    payload = build(loaded, "v2-binary", [Sample(None, feeds_for(loaded.backend, 1, rng)) for _ in range(32)])
    failures, samples = [], []
    print(f"\n| {model}, --providers {providers}, c=64 | req/s | errors | server RSS MiB | GPU MiB |")
    print("|---|---|---|---|---|")
    with serve_subprocess(repository, ["--providers", providers, "--no-access-log", "--model", model],
                          timeout=180) as (url, process, _):
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            result = asyncio.run(run_asyncio(url, payload, 64, spell))
            pids = tree_pids(process.pid)
            samples.append((sum(rss_mb(p) for p in pids), _gpu_mib(pids)))
            print(f"| {time.monotonic() - start:.0f} s | {result.rps:,.0f} | {result.errors} | {samples[-1][0]:,.0f} | "
                  f"{samples[-1][1]:,.0f} |", flush=True)
            if result.errors or not result.requests:
                failures.append(f"soak {model}: {result.errors} errors, {result.requests} answered")
    for what, first, last in (("RSS", samples[0][0], samples[-1][0]), ("GPU memory", samples[0][1], samples[-1][1])):
        if last > first * 1.1 and last - first > 64:
            failures.append(f"soak {model}: {what} grew from {first:,.0f} to {last:,.0f} MiB")
    return failures


def check_models(repository: Path, seconds: float, rng: np.random.Generator) -> list[str]:
    """Sections 1 and 2 of the module doc; the models that failed."""
    failures = []
    print("| model | CUDA active | top-1 equal to CPU | max abs diff | batch | CUDA samples/s | CPU samples/s |")
    print("|---|---|---|---|---|---|---|")
    for folder in sorted(p for p in repository.iterdir() if (p / "1" / "model.onnx").exists()):
        path = folder / "1" / "model.onnx"
        cuda = OnnxBackend(path, RuntimeOptions("cuda", intra_op_threads=0))
        cpu = OnnxBackend(path, RuntimeOptions("cpu", intra_op_threads=0))
        feeds = feeds_for(cpu, 64, rng)
        rows = next(iter(feeds.values())).shape[0]  # 64, or the batch dimension the model fixes
        out_cuda, out_cpu = cuda.run(feeds), cpu.run(feeds)
        name = cpu.signature.outputs[0].name
        equal = float(np.mean(out_cuda[name].argmax(-1) == out_cpu[name].argmax(-1)))
        diff = float(np.abs(out_cuda[name] - out_cpu[name]).max())
        active = cuda.providers[0] == CUDA
        print(f"| {folder.name} | {active} | {equal:.3f} | {diff:.1e} | "
              f"{rows} | {samples_per_s(cuda.session, feeds, rows, seconds):,.0f} | "
              f"{samples_per_s(cpu.session, feeds, rows, seconds):,.0f} |")
        if not active or equal < 0.98:  # onnxruntime's CUDA convolutions and products run in TF32 by default
            failures.append(folder.name)
    return failures


def serve_check(repository: Path, seconds: float, rng: np.random.Generator) -> list[str]:
    """Section 4 of the module doc (the built-in ResNet); what failed."""
    failures = []
    image = {"model": "resnet", "inputs": (rng.random((2, 28, 28)) * 255).round().tolist()}
    answers = {}
    for providers in ("cuda", "cpu"):
        flags = ["--providers", providers, "--workers", "1", "--model", "resnet", "--no-access-log"]
        with serve_subprocess(repository, flags, timeout=120) as (url, _, _):
            import httpx

            parameters = httpx.get(f"{url}/v2/models/resnet").json()["parameters"]
            predicted = httpx.post(f"{url}/predict", json=image, timeout=30).json()
            tensor = (rng.random((4, 1, 28, 28))).astype(np.float32)
            oip = httpx.post(f"{url}/v2/models/resnet/infer", timeout=30, json={"inputs": [
                {"name": "image", "shape": list(tensor.shape), "datatype": "FP32", "data": tensor.ravel().tolist()}]})
            start, n = time.perf_counter(), 0
            with httpx.Client(base_url=url) as client:
                while time.perf_counter() - start < seconds:
                    client.post("/predict", json=image)
                    n += 1
            answers[providers] = [p["label"] for p in predicted["predictions"]]
            print(f"serve --providers {providers}: parameters.providers={parameters['providers']}, "
                  f"/predict {answers[providers]}, OIP status {oip.status_code}, "
                  f"lone /predict {1000 * (time.perf_counter() - start) / n:.2f} ms per request")
            print(f"  batch_size_sessions={parameters['batch_size_sessions']}")
            if (providers == "cuda" and (parameters["providers"][0] != CUDA or
                                         parameters["batch_size_sessions"] != [1, 2, 4, 8, 16, 32, 64])) or \
                    oip.status_code != 200:
                failures.append(f"serve-{providers}")
    if answers["cuda"] != answers["cpu"]:
        failures.append("serve answers differ")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--load-models", default="resnet,cnn", help="the models of sections 3 and 5")
    parser.add_argument("--servers", default="cuda:auto;cuda:auto:1;cuda:any:1;cpu:any",
                        help="section 5's servers, separated by ';': PROVIDERS:ALLOWED-BATCH-SIZES[:WORKERS]")
    parser.add_argument("--sections", default="1,3,4,5", help="which sections to run (1 includes 2)")
    parser.add_argument("--soak-seconds", type=float, default=0.0, help="section 6's length (0: no soak)")
    args = parser.parse_args()
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}, providers offered: {ort.get_available_providers()}")
    sections = set(args.sections.split(","))
    failures = []
    rng = np.random.default_rng(0)
    load_models = args.load_models.split(",")
    if "1" in sections:
        failures += check_models(args.repository, args.seconds, rng)
    if "3" in sections:
        shape_changes(args.repository, load_models, args.seconds, rng)
    if "4" in sections:
        failures += serve_check(args.repository, args.seconds, rng)
    if "5" in sections:
        failures += served_load(args.repository, load_models, args.servers, args.seconds, rng)
    if args.soak_seconds > 0:
        failures += soak(args.repository, load_models[0], args.soak_seconds, rng)
    print("FAILED: " + ", ".join(failures) if failures else "all CUDA checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
