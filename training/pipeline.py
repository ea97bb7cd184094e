"""train -> export -> verify -> publish for each model, then its INT8 variant (``training.quantize``) where the
family's measured figures say INT8 pays (``Family.int8_skip``), and the closing tables. Called by the CLI."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from service.report import Quantization
from training import checkpoint as ckpt
from training.errors import GateFailed
from training.export import ExportResult, export_and_publish
from training.families import FAMILIES
from training.models import build_model, count_parameters
from training.tasks import Task, load_task
from training.train import fit
from training.train_config import TrainConfig

QUICK_SAMPLES = 512


@dataclass
class Options:
    data_dir: Path | None = None
    repository: Path = Path("models")
    checkpoint_dir: Path = ckpt.DEFAULT_DIR
    epochs: int | None = None
    seed: int = 0
    quick: bool = False
    quiet: bool = False
    threads: int | None = None
    int8: bool = True


@dataclass
class Row:
    name: str
    parameters: int
    epochs: int
    wall_time_s: float
    samples_per_s: float
    torch_accuracy: float | None
    onnx_accuracy: float | None
    parity: float | None
    version: int | None
    status: str


@dataclass
class Int8Row:
    name: str
    source: str
    status: str
    version: int | None = None
    measured: Quantization | None = None  # what its report says


def train_config(family: str, options: Options) -> TrainConfig:
    config = replace(FAMILIES[family].train, seed=options.seed)
    if options.quick:
        config = replace(config, epochs=1)
    if options.epochs is not None:
        config = replace(config, epochs=options.epochs)
    return config


def task_for(family: str, options: Options, config: TrainConfig) -> Task:
    limit = QUICK_SAMPLES if options.quick else None
    return load_task(family, options.data_dir, options.seed, config.val_fraction, limit)


def train(family: str, options: Options, task: Task | None = None) -> ckpt.Checkpoint:
    config = train_config(family, options)
    task = task or task_for(family, options, config)
    torch.manual_seed(options.seed)
    model, model_config = build_model(family, {"num_classes": len(task.labels)})
    result = fit(model, task, config, family, quiet=options.quiet)
    checkpoint = ckpt.make_checkpoint(family, family, model_config, config, result, count_parameters(model))
    ckpt.save(checkpoint, options.checkpoint_dir / f"{family}.pt")
    return checkpoint


def export(family: str, options: Options, task: Task | None = None) -> ExportResult:
    checkpoint = ckpt.load(options.checkpoint_dir / f"{family}.pt")
    config = TrainConfig(**checkpoint.train_config)
    task = task or task_for(family, options, config)
    min_accuracy = None if options.quick else FAMILIES[family].target_accuracy
    return export_and_publish(checkpoint, task, options.repository, min_accuracy)


def run_one(family: str, options: Options) -> Row:
    start = time.perf_counter()
    config = train_config(family, options)
    task = task_for(family, options, config)
    checkpoint = train(family, options, task)
    fit_ = checkpoint.fit
    row = Row(family, checkpoint.parameters, config.epochs, 0.0, fit_["samples_per_s"], None, None, None, None,
              "ok")
    try:
        result = export(family, options, task)
    except GateFailed as error:
        row.status = f"NOT PUBLISHED: {error}"
    else:
        metrics, parity = result.report.metrics, result.report.parity
        assert metrics is not None and parity is not None
        row.torch_accuracy = metrics.torch_test_accuracy
        row.onnx_accuracy = metrics.onnx_test_accuracy
        row.parity = max(parity.max_abs_diff.values())
        row.version = result.version
    row.wall_time_s = time.perf_counter() - start
    return row


def quantize_step(family: str, version: int, options: Options) -> Int8Row:
    """The INT8 variant of a just-published built-in model, through the gates of ``nnserve quantize`` and, unless
    ``--quick``, its speed gate: a variant that does not pay is not published either. ``--quick`` calibrates on 256
    images, compares on 1,000 and gates nothing, as its export gates no accuracy."""
    from training.quantize import QuantizeOptions, quantize

    name = f"{family}-int8"
    skip = FAMILIES[family].int8_skip
    if skip is not None:
        return Int8Row(name, family, f"skipped: {skip}")
    quantize_options = QuantizeOptions(model=family, version=version, repository=options.repository,
                                       data_dir=options.data_dir, seed=options.seed)
    if options.quick:
        quantize_options = replace(quantize_options, count=256, evaluation_count=1000, min_agreement=0.0,
                                   max_accuracy_drop=1.0, min_speedup=0.0, speed_rounds=1, speed_seconds=0.2)
    try:
        result = quantize(quantize_options)
    except GateFailed as error:
        return Int8Row(name, family, f"NOT PUBLISHED: {error}")
    return Int8Row(name, family, "ok", result.version, result.quantization)


def format_duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _percent(value: float | None) -> str:
    return f"{value:.2%}" if value is not None else "-"


def format_table(rows: list[Row]) -> str:
    head = ("model", "params", "epochs", "wall time", "train samples/s", "torch test acc", "onnx test acc",
            "parity max|diff|", "version")
    lines: list[tuple[str, ...]] = [head]
    for r in rows:
        lines.append((
            r.name, f"{r.parameters:,}", str(r.epochs), format_duration(r.wall_time_s), f"{r.samples_per_s:,.0f}",
            _percent(r.torch_accuracy), _percent(r.onnx_accuracy), f"{r.parity:.1e}" if r.parity is not None else "-",
            str(r.version) if r.version is not None else r.status,
        ))
    return _markdown(lines)


def format_int8_table(rows: list[Int8Row]) -> str:
    head = ("variant", "source", "source test acc", "int8 test acc", "top-1 agreement", "raw speed-up b=1",
            "raw speed-up b=64", "version")
    lines: list[tuple[str, ...]] = [head]
    for r in rows:
        q = r.measured
        speed = {s.batch: s.speedup for s in q.speed.values()} if q else {}
        figures = (q.source_accuracy, q.variant_accuracy, q.top1_agreement) if q else (None, None, None)
        lines.append((r.name, r.source, *map(_percent, figures),
                      *(f"{speed[b]:.2f}x" if b in speed else "-" for b in (1, 64)),
                      str(r.version) if r.version is not None else r.status))
    return _markdown(lines)


def _markdown(lines: list[tuple[str, ...]]) -> str:
    head = lines[0]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def run_pipeline(families: list[str], options: Options) -> tuple[list[Row], list[Int8Row], bool]:
    """Every family trained, exported and published, each followed by its INT8 variant; ok when everything that
    was to be published was (a skipped variant is not a failure)."""
    if options.threads:
        torch.set_num_threads(options.threads)
    rows: list[Row] = []
    int8: list[Int8Row] = []
    for family in families:
        rows.append(run_one(family, options))
        if not options.quiet:
            print(format_table(rows[-1:]), flush=True)
        version = rows[-1].version
        if options.int8 and version is not None:
            int8.append(quantize_step(family, version, options))
            if not options.quiet:
                print(format_int8_table(int8[-1:]), flush=True)
    ok = all(r.version is not None for r in rows) and all(r.version is not None or r.status.startswith("skipped")
                                                           for r in int8)
    return rows, int8, ok
