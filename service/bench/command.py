"""``nnserve bench``: drive a server (or start one) with real test-set inputs over /predict JSON, OIP JSON and
OIP binary; report req/s, latency percentiles, errors, the server's batch sizes, CPU shares and memory, and the
ratio to raw in-process onnxruntime throughput of the same model on the same machine. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from service.bench.bare_server import bare_server
from service.bench.baseline import Side, compare
from service.bench.beside import Beside, milliseconds, running_beside
from service.bench.beside import parse as parse_beside
from service.bench.grpc_load import run_h2load
from service.bench.inprocess import raw_throughput
from service.bench.loadgen import LoadResult, run_load
from service.bench.pairs import pair_table, variant_pairs
from service.bench.payloads import build, samples
from service.bench.reference_server import reference_server
from service.bench.scrape import batch_histogram, cpu_seconds, grpc_failures, histogram_mean, rss_mb, scrape, tree_pids
from service.bench.shared_payloads import payload_for
from service.hosting.launcher import free_port, serve_subprocess
from service.loading import LoadedVersion, load_version
from service.repository import list_versions
from service.settings import Settings, default_workers, usable_cpus


@dataclass
class Server:
    url: str
    pid: int | None
    grpc: str = ""  # host:port of its gRPC side

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in tree_pids(self.pid)) if self.pid else 0.0

    def rss(self) -> float:
        return sum(rss_mb(p) for p in tree_pids(self.pid)) if self.pid else 0.0


@contextmanager
def started_server(repository: Path, extra: str, cwd: Path | None = None, shared_memory: bool = False
                   ) -> Iterator[Server]:
    """A server started with ``extra`` flags; with ``shared_memory``, its extension on (by its variable: a
    baseline checkout without it ignores the variable, and its v2-shm rows fail)."""
    args = shlex.split(extra)
    grpc_port = free_port()
    if "--grpc-port" not in extra:
        args += ["--grpc-port", str(grpc_port)]
    env = {"NNSERVE_SHARED_MEMORY": "true"} if shared_memory else None
    with serve_subprocess(repository, args, timeout=120, cwd=cwd, env=env) as (url, process, _):
        yield Server(url, process.pid, f"127.0.0.1:{grpc_port}")


@dataclass
class Row:
    model: str
    protocol: str
    concurrency: int
    load: LoadResult
    samples_per_request: int
    batch_mean: float
    batch_over_1: float
    server_cpu: float
    rss_mb: float
    queue_ms: float  # the server's mean wait of a request in its model's queue
    compute_ms: float  # the server's mean onnxruntime time of a batch

    round: int = 1
    beside: LoadResult | None = None  # the other model's paced requests meanwhile (--beside)

    @property
    def samples_per_s(self) -> float:
        return self.load.rps * self.samples_per_request

    @property
    def p50_ms(self) -> float:
        return self.load.p50_ms


def measure(server: Server, model: LoadedVersion, protocol: str, concurrency: int, args: argparse.Namespace,
            raw: list, beside: Beside | None = None) -> Row:  # type: ignore[type-arg]
    with payload_for(server.url, model, protocol, raw) as payload:
        if args.warmup > 0:
            if protocol == "grpc":
                run_h2load(server.grpc, payload, concurrency, args.warmup)
            else:
                run_load(server.url, payload, concurrency, args.warmup)
        before, cpu_before = scrape(server.url), server.cpu()
        with running_beside(server.url, beside, args.duration) as other:
            if protocol == "grpc":
                load = run_h2load(server.grpc, payload, concurrency, args.duration)
            else:
                load = run_load(server.url, payload, concurrency, args.duration)
    after, cpu_after = scrape(server.url), server.cpu()
    if other.error:
        print(f"  --beside: {other.error}", flush=True)
    if protocol == "grpc":  # gRPC errors travel in trailers h2load does not read: the server counted them
        load.errors += int(grpc_failures(after, model.config.name) - grpc_failures(before, model.config.name))
    hist = batch_histogram(before, after, model.config.name)
    batches = hist.get("+Inf", 0.0)
    ones = hist.get("1.0", 0.0)
    cores = os.cpu_count() or 1
    name = model.config.name
    return Row(name, protocol, concurrency, load, payload.samples_per_request, hist["mean"],
               (batches - ones) / batches if batches else 0.0, (cpu_after - cpu_before) / load.seconds / cores,
               server.rss(), 1000 * histogram_mean(before, after, "nnserve_queue_wait_seconds", name),
               1000 * histogram_mean(before, after, "nnserve_compute_seconds", name), beside=other.result)


def newest(repository: Path, name: str) -> LoadedVersion:
    """The newest version, loaded as a server would (its completed config, its batching) on the CPU."""
    versions = list_versions(repository / name)
    if not versions:
        raise SystemExit(f"no versions of {name} under {repository}")
    settings = Settings(providers="cpu", warmup_batch_sizes=[1], graph_optimization="all")
    return load_version(repository / name / str(versions[-1]), name, versions[-1], settings)


def run_matrix(server: Server, args: argparse.Namespace, models: list[str], round_: int = 1) -> list[Row]:
    """Every protocol and concurrency, the models measured back to back in each cell (in reverse order on even
    rounds, so that neither side always runs first)."""
    loaded = {name: newest(args.repository, name) for name in models}
    raw = {name: samples(model, args.data_dir, args.samples) for name, model in loaded.items()}
    beside = None
    if args.beside:
        name, rate = parse_beside(args.beside)
        other = newest(args.repository, name)
        beside = Beside(name, rate, build(other, "v2-binary", samples(other, args.data_dir, 64)))
    order = models if round_ % 2 else models[::-1]
    rows = []
    for protocol in args.protocols.split(","):
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for name in order:
                row = measure(server, loaded[name], protocol, concurrency, args, raw[name], beside)
                row.round = round_
                print(f"  {name:7} {protocol:9} c={concurrency:<3} {row.load.rps:8.0f} req/s  p50 "
                      f"{row.load.p50_ms:7.2f} ms  p99 {row.load.p99_ms:7.2f} ms  errors {row.load.errors}  "
                      f"mean batch {row.batch_mean:5.1f}" +
                      (f"  {beside.label} p50 / p99 {milliseconds(row.beside)} ms, "
                       f"{row.beside.requests if row.beside else 0} requests" if beside else ""), flush=True)
                rows.append(row)
    return sorted(rows, key=lambda r: models.index(r.model))


def table(rows: list[Row], raw_best: dict[str, tuple[float, str]], unbatched: dict[tuple[str, str, int], Row],
          reference: dict[tuple[str, str, int], Row]) -> str:
    head = ["model", "protocol", "conc.", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99/p50", "errors",
            "mean batch", "batches >1", "queue ms", "compute ms/batch", "raw ORT samples/s (batch)", "% of raw",
            "server CPU", "client CPU", "RSS MB"]
    if unbatched:
        head += ["unbatched req/s", "speed-up", "unbatched p50 ms"]
    rounds = max(r.round for r in rows) > 1
    if rounds:
        head.insert(3, "round")
    if reference:
        head += ["reference req/s", "reference p50 ms", "p50 added ms"]
    besides = any(r.beside for r in rows)
    if besides:
        head += ["beside: p50 / p99 ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cores = os.cpu_count() or 1
    for r in rows:
        best, batch = raw_best[r.model]
        cells = [r.model, r.protocol, str(r.concurrency), *([str(r.round)] if rounds else []),
                 f"{r.load.rps:,.0f}", f"{r.load.p50_ms:.2f}",
                 f"{r.load.p90_ms:.2f}", f"{r.load.p99_ms:.2f}", f"{r.load.p99_ms / max(r.load.p50_ms, 1e-9):.1f}",
                 str(r.load.errors), f"{r.batch_mean:.1f}", f"{r.batch_over_1:.0%}", f"{r.queue_ms:.2f}",
                 f"{r.compute_ms:.2f}", f"{best:,.0f} ({batch})",
                 f"{r.samples_per_s / best:.0%}", f"{r.server_cpu:.0%}",
                 f"{r.load.client_cpu_s / r.load.seconds / cores:.0%} ({r.load.generator})", f"{r.rss_mb:.0f}"]
        if unbatched:
            u = unbatched.get((r.model, r.protocol, r.concurrency))
            cells += [f"{u.load.rps:,.0f}", f"{r.load.rps / u.load.rps:.2f}x", f"{u.load.p50_ms:.2f}"] if u \
                else ["-", "-", "-"]
        if reference:
            f = reference.get((r.model, r.protocol, r.concurrency))
            cells += [f"{f.load.rps:,.0f}" + (f" ({f.load.errors} errors)" if f.load.errors else ""),
                      f"{f.load.p50_ms:.2f}", f"{r.load.p50_ms - f.load.p50_ms:+.2f}"] if f else ["-", "-", "-"]
        if besides:
            cells.append(milliseconds(r.beside))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cells(server: Server, args: argparse.Namespace, models: list[str], protocols: str | None = None
          ) -> dict[tuple[str, str, int], Row]:
    """One pass of the matrix on a server compared with nnserve's (``--unbatched``, ``--reference``, ``--bare``),
    without the ``--beside`` load, of ``protocols`` if given: its rows by (model, protocol, concurrency)."""
    overrides: dict[str, object] = {"beside": None, **({"protocols": protocols} if protocols is not None else {})}
    return {(r.model, r.protocol, r.concurrency): r
            for r in run_matrix(server, argparse.Namespace(**{**vars(args), **overrides}), models)}


def server_processes(server_args: str) -> int:
    """How many processes a server started with these flags runs on the CPU: ``--workers`` if given, else one per
    usable CPU (for ``--url``, whose processes are not known)."""
    args = shlex.split(server_args)
    for i, arg in enumerate(args):
        if arg == "--workers" and i + 1 < len(args):
            return int(args[i + 1])
        if arg.startswith("--workers="):
            return int(arg.split("=", 1)[1])
    return default_workers("cpu", usable_cpus(), cuda_offered=False)


def cpu_ms_per_request(row: Row) -> tuple[float, float]:
    """(server, client) CPU milliseconds per request, over every core."""
    cores = os.cpu_count() or 1
    requests = max(row.load.requests, 1)
    return row.server_cpu * cores * row.load.seconds * 1000 / requests, row.load.client_cpu_s * 1000 / requests


def bare_table(rows: list[Row], bare: dict[tuple[str, str, int], Row], raw_best: dict[str, tuple[float, str]]
               ) -> str:
    """nnserve's CPU per request beside the bare server's on the same requests (and what of nnserve's is beyond the
    compute its samples take at the raw ceiling), and the share of raw onnxruntime a server costing only the bare
    one's CPU could reach: each core computes a sample in ``cores / raw`` seconds, and every request also costs the
    bare server's and the client's CPU on the same cores."""
    head = ["model", "protocol", "conc.", "bare req/s", "bare errors", "bare server CPU ms/req",
            "bare client CPU ms/req", "nnserve server CPU ms/req", "of it beyond raw compute",
            "nnserve client CPU ms/req", "% of raw at most", "nnserve % of raw"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cores = usable_cpus()  # those the raw ceiling ran on
    for r in rows:
        b = bare.get((r.model, r.protocol, r.concurrency))
        if b is None:
            continue
        best = raw_best[r.model][0]
        bare_server_ms, bare_client_ms = cpu_ms_per_request(b)
        server_ms, client_ms = cpu_ms_per_request(r)
        compute_ms = cores / best * 1000 * r.samples_per_request
        at_most = compute_ms / (compute_ms + bare_server_ms + bare_client_ms)
        lines.append("| " + " | ".join([
            r.model, r.protocol, str(r.concurrency), f"{b.load.rps:,.0f}", str(b.load.errors),
            f"{bare_server_ms:.3f}", f"{bare_client_ms:.3f}", f"{server_ms:.3f}", f"{server_ms - compute_ms:.3f}",
            f"{client_ms:.3f}",
            f"{at_most:.0%}", f"{r.samples_per_s / best:.0%}"]) + " |")
    return "\n".join(lines)


def environment() -> str:
    import onnxruntime

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    return (f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores ({cpu}), Python "
            f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}")


AFTER = ", again after the served rounds"


def measure_raw(loaded: dict[str, LoadedVersion], args: argparse.Namespace, when: str) -> dict[str, dict[str, float]]:
    """Each model's raw throughput (samples/s by batch size and arrangement), printed as it comes."""
    print(f"raw in-process onnxruntime throughput (samples/s by batch size){when}:", flush=True)
    results = {}
    for name, model in loaded.items():
        result = results[name] = raw_throughput(model, samples(model, args.data_dir, 1)[0].tensors,
                                                seconds=args.raw_seconds)
        print(f"  {name:7} " + "  ".join(f"b{b}: {v:,.0f}" for b, v in result.items()), flush=True)
    return results


def ceilings(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]] | None
             ) -> dict[str, tuple[float, str]]:
    """Each model's ceiling: its best batch size and arrangement, by the mean of the measurements before and
    after the served rounds where there are both (these machines drift: a ceiling measured once can sit 10% off
    the rounds it is compared with), labelled with what it is and, bracketed, both readings."""
    best_of = {}
    for name, first in before.items():
        last = (after or {}).get(name)
        if last and first.keys() & last.keys():  # the arrangements both measured (the usable cores can change)
            mean = {b: (v + last[b]) / 2 for b, v in first.items() if b in last}
        else:
            last, mean = None, first
        best = max(mean, key=lambda b: mean[b])
        best_of[name] = (mean[best], f"{best}; {first[best]:,.0f} before, {last[best]:,.0f} after" if last else best)
    return best_of


def bench(args: argparse.Namespace) -> int:
    if args.beside:
        parse_beside(args.beside)  # a malformed one is refused before anything is measured
    models = [m for m in args.models.split(",") if m]
    shared = "v2-shm" in args.protocols.split(",")
    loaded = {name: newest(args.repository, name) for name in models}
    raw_before = measure_raw(loaded, args, "")

    unbatched: dict[tuple[str, str, int], Row] = {}
    reference: dict[tuple[str, str, int], Row] = {}
    soak = ""
    if args.baseline or args.versus_args:
        def side(which: Side) -> list[Row]:
            with started_server(which.repository, which.server_args, which.cwd, shared) as server:
                return run_matrix(server, args, models)

        text = compare(args, side)
        print()
        print(text)
        _append_markdown(args, text, "")
        return 0
    raw_after: dict[str, dict[str, float]] | None = None
    serving_processes = 0  # the started server's, counted while it runs (the bare server runs as many)
    if args.url:
        rows = run_matrix(Server(args.url, None, args.grpc_target or f"{urlsplit(args.url).hostname}:8001"),
                          args, models)
        raw_after = measure_raw(loaded, args, AFTER)
    else:
        print(f"batched server ({args.server_args or 'defaults'}):", flush=True)
        with started_server(args.repository, args.server_args, shared_memory=shared) as server:
            serving_processes = len(tree_pids(server.pid)) if server.pid else 0
            rows = []
            for round_ in range(1, (args.rounds or 1) + 1):
                if (args.rounds or 1) > 1:
                    print(f"round {round_}:", flush=True)
                rows += run_matrix(server, args, models, round_)
            rows.sort(key=lambda r: models.index(r.model))
            if args.soak:  # the rounds' ceiling before the soak's minutes (the server idles meanwhile)
                raw_after = measure_raw(loaded, args, AFTER)
                soak = run_soak(server, args, models[0])
        if raw_after is None:  # once the server is gone, before any other
            raw_after = measure_raw(loaded, args, AFTER)
        if args.unbatched:
            print("unbatched server (--max-batch-size 1):", flush=True)
            with started_server(args.repository, args.server_args + " --max-batch-size 1", shared_memory=shared
                                ) as server:
                unbatched = cells(server, args, models)
    if args.reference:
        protocols = ",".join(p for p in args.protocols.split(",") if p in ("v2-json", "v2-binary"))
        print(f"reference: FastAPI calling onnxruntime in its event loop ({protocols}):", flush=True)
        with reference_server(args.repository, models, free_port()) as (url, pid):
            reference = cells(Server(url, pid), args, models, protocols)
    bare: dict[tuple[str, str, int], Row] = {}
    http = ",".join(p for p in args.protocols.split(",") if p in ("predict", "v2-json", "v2-binary"))
    if args.bare and not http:
        print("bare: no HTTP protocol among --protocols, nothing to compare", flush=True)
    elif args.bare:
        processes = serving_processes or server_processes(args.server_args)
        print(f"bare: the body read, a fixed 200, {processes} process(es) ({http}):", flush=True)
        with bare_server(free_port(), processes) as (url, pid):
            bare = cells(Server(url, pid), args, models, http)
    raw_best = ceilings(raw_before, raw_after)
    text = table(rows, raw_best, unbatched, reference)
    if bare:
        text += "\n\nThe least a Python server can do per request (--bare), beside nnserve's:\n\n" + \
            bare_table(rows, bare, raw_best)
    pairs = variant_pairs(loaded)
    if pairs:
        text += "\n\nINT8 variants beside their sources (served, same server, alternated):\n\n" + \
            pair_table(list(rows), pairs, raw_best)
    print()
    print(text)
    if soak:
        print(soak)
    _append_markdown(args, text, soak)
    return 0


def _append_markdown(args: argparse.Namespace, text: str, soak: str) -> None:
    if args.markdown:
        command = "nnserve bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        with args.markdown.open("a") as out:
            out.write(f"\n### `{command}`\n\n{environment()}\n\n{text}\n")
            if soak:
                out.write(f"\n{soak}\n")


def run_soak(server: Server, args: argparse.Namespace, model: str) -> str:
    loaded = newest(args.repository, model)
    protocol = args.protocols.split(",")[0]
    concurrency = max(int(c) for c in args.concurrency.split(","))
    with payload_for(server.url, loaded, protocol, samples(loaded, args.data_dir, args.samples)) as payload:
        run_load(server.url, payload, concurrency, 5)
        start_rss = server.rss()
        print(f"soak: {model} {protocol} c={concurrency} for {args.soak:.0f} s, RSS {start_rss:.0f} MB", flush=True)
        load = run_load(server.url, payload, concurrency, args.soak)
        end_rss = server.rss()
    return (f"Soak: {model} over {protocol}, concurrency {concurrency}, {args.soak:.0f} s, {load.requests:,} "
            f"requests, {load.errors} errors: server RSS {start_rss:.1f} MB -> {end_rss:.1f} MB "
            f"({(end_rss - start_rss) / start_rss:+.1%}).")
