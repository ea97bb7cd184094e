"""The CUDA path, checked for real on a machine with an NVIDIA GPU and onnxruntime-gpu (no torch needed):

    python deploy/cuda-check.py [--repository models] [--seconds 5] [--load-models resnet,cnn] [--sections 1,3,4,5]
                                [--soak-seconds 120]

1. Each model of the repository loads through nnserve's backend with ``providers=cuda`` (CUDA really active, read
   back from the session) and answers random inputs (64 rows, in batches of the size a model fixes) as its CPU
   session does: the first output's top-1 per row the same for at least 98% (onnxruntime's CUDA convolutions and
   products run in TF32 by default; the largest difference is printed). Random inputs only show what a model's
   weights make of them: a model whose outputs do not depend on its inputs passes trivially.
2. Raw onnxruntime samples/s at batch 64 (or the batch dimension a model fixes) on CUDA and on the CPU, per model.
3. What a change of batch size costs on CUDA (``service.batch_sizes``): ms per batch of 32 on one session, the same
   batch alternating with one of 31 rows, and, with cuDNN's exhaustive algorithm choice, the fixed batch again
   (models with a batch axis only).
4. ``nnserve serve --providers cuda --workers 1`` starts, reports CUDA and its batch-size sessions in
   ``/v2/models/{m}``, answers ``/predict`` and OIP requests, and the same requests get the same top-1 from a CPU
   server.
5. Served under load: c=64 OIP binary requests for ``--seconds`` against each of ``--servers`` (by default
   ``--providers cuda`` as it starts by default: ``--allowed-batch-sizes auto``, a session per power-of-two size,
   4 processes; the same in one process; one process and one session, ``any``, as before; and ``--providers cpu``):
   requests/s, median latency, mean batch and mean compute per batch (from /metrics), and a lone client's median;
   a server that fails a request, or answers none, fails the check.
6. A soak (``--sections 6``, for ``--soak-seconds``): ``--providers cuda`` as it starts by default serves c=64 OIP
   binary requests of the first ``--load-models`` model, in 10 s spells back to back; after each, the server
   processes' resident memory and GPU memory (``nvidia-smi``: theirs, or the whole GPU's where it shows other pids,
   as in a container) and the spell's requests/s are printed. The first half of the spells is the warm-up (arenas
   grow to their working size). The check fails on a failed request, or if either memory at the end exceeds the
   warm-up's largest by more than 5% and 64 MiB.
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
from service.bench.payloads import Payload
from service.hosting.launcher import serve_subprocess


def feeds_for(backend: Backend, rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs of the inputs' own datatypes: ``rows`` along an open first axis; an axis the model fixes keeps
    its size (an imported model's fixed batch); other open axes 20, one size per named axis (``N`` is the same
    wherever it appears); a scalar stays a scalar."""
    from service.datatypes import DTYPES

    named: dict[str, int] = {}

    def size(axis: int, dim: int | str | None) -> int:
        if isinstance(dim, int) and dim >= 0:
            return dim
        if isinstance(dim, str):
            return named.setdefault(dim, rows if axis == 0 else 20)
        return rows if axis == 0 else 20

    feeds: dict[str, np.ndarray] = {}
    for tensor in backend.signature.inputs:
        shape = [size(axis, dim) for axis, dim in enumerate(tensor.dims)]
        dtype = DTYPES.get(tensor.datatype)
        if tensor.name == "lengths":  # the built-in LSTM's
            feeds[tensor.name] = rng.integers(7, 20, shape).astype(np.int64)
        elif dtype is None or tensor.datatype == "BYTES":
            feeds[tensor.name] = np.full(shape, b"text", dtype=object)
        elif dtype.kind == "b":
            feeds[tensor.name] = np.asarray(rng.random(shape) < 0.5)
        elif dtype.kind in "iu":
            feeds[tensor.name] = np.asarray(rng.integers(0, 10, shape), dtype=dtype)
        else:
            feeds[tensor.name] = np.asarray(rng.random(shape) * (255 if len(shape) == 4 else 1), dtype=dtype)
    return feeds


def fixed_batch(backend: Backend) -> int | None:
    """The size a model fixes on its first input's first axis; None where that axis is open (or there is none)."""
    first = backend.signature.inputs[0].shape if backend.signature.inputs else []
    return first[0] if first and first[0] >= 0 else None


def rows_of(array: np.ndarray) -> np.ndarray:
    """An output as rows (its first axis), each row flat: a scalar is one row of one value."""
    return array.reshape(array.shape[0] if array.ndim else 1, -1)


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
        if fixed_batch(heuristic) is not None:
            print(f"| {name} | its batch is fixed at {fixed_batch(heuristic)}: no other batch size to measure | | | |")
            continue
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


def binary_payloads(repository: Path, models: list[str], rng: np.random.Generator) -> dict[str, Payload]:
    """32 random OIP binary requests of one row for each model (version 1), built from its signature."""
    from service.bench.payloads import Sample, build
    from service.loading import load_version
    from service.settings import Settings

    local = Settings(providers="cpu", warmup_batch_sizes=[1])
    loaded = {m: load_version(repository / m / "1", m, 1, local) for m in models}
    return {m: build(v, "v2-binary", [Sample(None, feeds_for(v.backend, 1, rng)) for _ in range(32)])
            for m, v in loaded.items()}


def served_load(repository: Path, models: list[str], servers: str, seconds: float,
                rng: np.random.Generator) -> list[str]:
    """Section 5 of the module doc; the servers that failed a request or answered none."""
    import asyncio

    from service.bench.loadgen import run_asyncio
    from service.bench.scrape import histogram_mean, scrape

    payloads = binary_payloads(repository, models, rng)
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
                batch = histogram_mean(before, after, "nnserve_batch_size", model)
                compute_ms = 1000 * histogram_mean(before, after, "nnserve_compute_seconds", model)
                print(f"| {label} | {model} | {result.rps:,.0f} | {result.p50_ms:.1f} | {batch:.1f} "
                      f"| {compute_ms:.2f} | {lone.p50_ms:.2f} | {result.errors + lone.errors} |", flush=True)
                if result.errors or lone.errors or not result.requests or not lone.requests:
                    failures.append(f"load {server} {model}")
    return failures


def used_mib(listing: str, pids: set[int] | None) -> float | None:
    """The MiB in nvidia-smi's CSV lines (``pid, used`` or just ``used``) of ``pids`` (every line for None); None
    where no line counts (no such pid, ``[N/A]``)."""
    values = []
    for line in listing.splitlines():
        cells = [c.strip() for c in line.split(",")]
        try:
            if pids is None or (len(cells) == 2 and int(cells[0]) in pids):
                values.append(float(cells[-1]))
        except ValueError:
            continue
    return sum(values) if values else None


def _gpu_mib(pids: list[int]) -> float | None:
    """GPU memory the processes hold; the whole GPU's where nvidia-smi shows none of them (a container sees the
    host's pids); None where it tells nothing (no driver: the CPU test of this section)."""
    import subprocess

    def query(what: str) -> str:
        try:
            return subprocess.run(["nvidia-smi", what, "--format=csv,noheader,nounits"], capture_output=True,
                                  text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    own = used_mib(query("--query-compute-apps=pid,used_memory"), set(pids))
    return own if own is not None else used_mib(query("--query-gpu=memory.used"), None)


def grew(values: list[float | None]) -> tuple[float, float] | None:
    """(the warm-up's largest, the last) where the last exceeds the largest of the first half of ``values`` by
    more than 5% and 64 MiB (section 6); None otherwise, or where either is unknown."""
    warm_up = [v for v in values[:max(1, len(values) // 2)] if v is not None]
    last = values[-1] if values else None
    if not warm_up or last is None:
        return None
    largest = max(warm_up)
    return (largest, last) if last > largest * 1.05 and last - largest > 64 else None


def soak(repository: Path, model: str, seconds: float, rng: np.random.Generator, providers: str = "cuda",
         spell: float = 10.0) -> list[str]:
    """Section 6 of the module doc; what failed."""
    import asyncio

    from service.bench.loadgen import run_asyncio
    from service.bench.scrape import rss_mb, tree_pids

    payload = binary_payloads(repository, [model], rng)[model]
    failures: list[str] = []
    rss: list[float | None] = []
    gpu: list[float | None] = []
    print(f"\n| {model}, --providers {providers}, c=64 | req/s | errors | server RSS MiB | GPU MiB |")
    print("|---|---|---|---|---|")
    with serve_subprocess(repository, ["--providers", providers, "--no-access-log", "--model", model],
                          timeout=180) as (url, process, _):
        start = time.monotonic()
        while not rss or time.monotonic() - start < seconds:
            try:
                result = asyncio.run(run_asyncio(url, payload, 64, spell))
            except Exception as error:  # a connection lost: what a soak is for
                failures.append(f"soak {model}: {type(error).__name__}: {str(error)[:200]}")
                break
            pids = tree_pids(process.pid)
            resident = 0.0
            for pid in pids:
                try:
                    resident += rss_mb(pid)
                except OSError:  # a worker gone meanwhile
                    continue
            rss.append(resident)
            gpu.append(_gpu_mib(pids))
            shown = "n/a" if gpu[-1] is None else f"{gpu[-1]:,.0f}"
            print(f"| {time.monotonic() - start:.0f} s | {result.rps:,.0f} | {result.errors} | {resident:,.0f} | "
                  f"{shown} |", flush=True)
            if result.errors or not result.requests:
                failures.append(f"soak {model}: {result.errors} errors, {result.requests} answered")
    for what, values in (("RSS", rss), ("GPU memory", gpu)):
        growth = grew(values)
        if growth is not None:
            failures.append(f"soak {model}: {what} grew past its warm-up, from {growth[0]:,.0f} to "
                            f"{growth[1]:,.0f} MiB")
    return failures


def check_models(repository: Path, seconds: float, rng: np.random.Generator) -> list[str]:
    """Sections 1 and 2 of the module doc; the models that failed."""
    failures = []
    print("| model | CUDA active | top-1 equal to CPU | max abs diff | batch | CUDA samples/s | CPU samples/s |")
    print("|---|---|---|---|---|---|---|")
    for folder in sorted(p for p in repository.iterdir() if (p / "1" / "model.onnx").exists()):
        path = folder / "1" / "model.onnx"
        try:
            cuda = OnnxBackend(path, RuntimeOptions("cuda", intra_op_threads=0))
            cpu = OnnxBackend(path, RuntimeOptions("cpu", intra_op_threads=0))
            batch = fixed_batch(cpu) or 64
            name = cpu.signature.outputs[0].name
            equal, diff, feeds = [], 0.0, {}
            for _ in range(max(1, 64 // batch)):  # 64 rows compared, whatever the batch
                feeds = feeds_for(cpu, batch, rng)
                got, expected = rows_of(cuda.run(feeds)[name]), rows_of(cpu.run(feeds)[name])
                equal += list(got.argmax(-1) == expected.argmax(-1))
                diff = max(diff, float(np.abs(got.astype(np.float64) - expected).max()))
            active = cuda.providers[0] == CUDA
            agreement = float(np.mean(equal))
            print(f"| {folder.name} | {active} | {agreement:.3f} | {diff:.1e} | {batch} | "
                  f"{samples_per_s(cuda.session, feeds, batch, seconds):,.0f} | "
                  f"{samples_per_s(cpu.session, feeds, batch, seconds):,.0f} |", flush=True)
        except Exception as error:  # an imported model this script cannot feed: said, and the others still run
            print(f"| {folder.name} | {type(error).__name__}: {str(error)[:200]} | | | | | |", flush=True)
            failures.append(folder.name)
            continue
        if not active or agreement < 0.98:  # onnxruntime's CUDA convolutions and products run in TF32 by default
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
    parser.add_argument("--sections", default="1,3,4,5", help="which sections to run (1 includes 2; 6 soaks)")
    parser.add_argument("--soak-seconds", type=float, default=120.0, help="section 6's length")
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
    if "6" in sections:
        failures += soak(args.repository, load_models[0], args.soak_seconds, rng)
    print("FAILED: " + ", ".join(failures) if failures else "all CUDA checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
