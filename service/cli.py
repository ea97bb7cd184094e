"""``nnserve``: the one command-line entry. Thin: parses flags, then hands over.

Training commands import ``training`` (and so torch) lazily, so a serving-only install never needs torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from training.families import FAMILIES


def _training_options(args: argparse.Namespace) -> Any:
    from training.pipeline import Options

    return Options(data_dir=args.data_dir, repository=args.repository, checkpoint_dir=args.checkpoint_dir,
                   epochs=args.epochs, seed=args.seed, quick=args.quick, quiet=args.quiet, threads=args.threads,
                   int8=not getattr(args, "no_int8", False))


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="dataset folder (else $NNSERVE_DATA_DIR, ~/.cache/nnserve/data, /usr/share/datasets,"
                             " then download)")
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository (default models/)")
    parser.add_argument("--checkpoint-dir", type=Path, default=Path(".nnserve/checkpoints"))
    parser.add_argument("--epochs", type=int, default=None, help="override the model's default epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a few hundred samples, one epoch, no accuracy gate")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _add_publishing_flags(parser: argparse.ArgumentParser, scores_default: str) -> None:
    parser.add_argument("--labels", type=Path, default=None,
                        help="class names, one per line (or a JSON list), in the order of the scores output")
    parser.add_argument("--scores", choices=("probabilities", "logits"), default=scores_default,
                        help=f"what the labelled output holds (default {scores_default}; logits: /predict applies "
                             "softmax)")
    parser.add_argument("--image-preprocessing", default=None, metavar="PRESET|JSON",
                        help="how /predict turns pictures into the input: imagenet, imagenet-bgr, unit, mnist, or a "
                             "JSON object or file with the config's processor fields")


def cmd_pipeline(args: argparse.Namespace) -> int:
    from training.pipeline import format_int8_table, format_table, run_pipeline

    families = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        print(f"unknown model(s) {unknown}; choose from {list(FAMILIES)}", file=sys.stderr)
        return 2
    rows, int8, ok = run_pipeline(families, _training_options(args))
    print()
    print(format_table(rows))
    if int8:
        print()
        print(format_int8_table(int8))
    for name, version, status in [(r.name, r.version, r.status) for r in rows] + \
            [(r.name, r.version, r.status) for r in int8]:
        if version is None and not status.startswith("skipped"):
            print(f"{name}: {status}", file=sys.stderr)
    return 0 if ok else 1


def cmd_train(args: argparse.Namespace) -> int:
    from training.pipeline import train

    checkpoint = train(args.model, _training_options(args))
    print(f"{args.model}: best validation accuracy {checkpoint.fit['best_val_accuracy']:.4f} "
          f"(epoch {checkpoint.fit['best_epoch']}); checkpoint {args.checkpoint_dir / (args.model + '.pt')}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.module:
        return _export_module(args)
    if args.model is None:
        print("nnserve export: name a built-in family (" + ", ".join(FAMILIES) + ") or give --module", file=sys.stderr)
        return 2
    from training.errors import GateFailed
    from training.pipeline import export

    try:
        result = export(args.model, _training_options(args))
    except GateFailed as error:
        print(f"{args.model}: NOT PUBLISHED: {error}", file=sys.stderr)
        return 1
    metrics, parity = result.report.metrics, result.report.parity
    assert metrics is not None and parity is not None
    print(f"{args.model}: published version {result.version} at {result.path} "
          f"(onnx test accuracy {metrics.onnx_test_accuracy:.4f}, parity {max(parity.max_abs_diff.values()):.1e})")
    return 0


def _export_module(args: argparse.Namespace) -> int:
    from service.importer import ImportFailed, summary
    from training.errors import GateFailed
    from training.module_export import InputSpec, ModuleExportOptions, export_module

    if not args.name or not args.input:
        print("nnserve export --module needs --name and at least one --input NAME:DTYPE:DIMS", file=sys.stderr)
        return 2
    try:
        options = ModuleExportOptions(
            module=args.module, name=args.name, inputs=[InputSpec.parse(s) for s in args.input], weights=args.weights,
            outputs=args.output or [], repository=args.repository, labels=args.labels,
            image_preprocessing=args.image_preprocessing, scores=args.scores)
        loaded = export_module(options)
    except (GateFailed, ImportFailed, ValueError, ImportError, OSError, RuntimeError) as error:
        print(f"nnserve export: {args.module}: NOT PUBLISHED: {error}", file=sys.stderr)
        return 1
    print(summary(Path(args.module), loaded))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from service.importer import ImportFailed, ImportOptions, import_model, summary

    options = ImportOptions(name=args.name, repository=args.repository, labels=args.labels, config=args.config,
                            image_preprocessing=args.image_preprocessing, scores=args.scores,
                            max_batch_size=args.max_batch_size)
    try:
        loaded = import_model(args.file, options)
    except ImportFailed as error:
        print(f"nnserve import: {args.file}: {error}; nothing was written", file=sys.stderr)
        return 1
    print(summary(args.file, loaded))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from service.importer import ImportFailed
    from training.calibration import CalibrationError
    from training.errors import GateFailed
    from training.quantize import QuantizeFailed, QuantizeOptions, quantize, summary

    options = QuantizeOptions(
        model=args.model, version=args.version, repository=args.repository, name=args.name, data_dir=args.data_dir,
        calibration=args.calibration, evaluation=args.evaluation, count=args.count,
        evaluation_count=args.evaluation_count, seed=args.seed,
        method=args.method, min_agreement=args.min_agreement / 100, max_accuracy_drop=args.max_accuracy_drop / 100,
        min_speedup=args.min_speedup, speed_batches=tuple(int(b) for b in args.speed_batches.split(",")),
        speed_rounds=args.speed_rounds)
    try:
        result = quantize(options)
    except GateFailed as error:
        print(f"{options.target}: NOT PUBLISHED: {error}", file=sys.stderr)
        return 1
    except (QuantizeFailed, CalibrationError, ImportFailed, OSError) as error:
        print(f"nnserve quantize {args.model}: {error}; nothing was written", file=sys.stderr)
        return 1
    print(summary(result))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from service.hosting.server import serve

    return serve(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from service.bench.command import bench

    return bench(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnserve", description="Train, export, import and serve neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pipeline", help="train, export, verify and publish the built-in models")
    p.add_argument("--models", default=",".join(FAMILIES), help="comma-separated subset of " + ",".join(FAMILIES))
    p.add_argument("--no-int8", action="store_true",
                   help="make no INT8 variants (default: one for each family where INT8 pays: cnn, resnet)")
    _add_training_flags(p)
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("train", help="train one built-in model into a checkpoint")
    p.add_argument("model", choices=list(FAMILIES))
    _add_training_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export a built-in checkpoint, or your own PyTorch module (--module), through "
                                      "the gates and publish it")
    p.add_argument("model", nargs="?", choices=list(FAMILIES), help="a built-in family's checkpoint")
    p.add_argument("--module", default=None, metavar="PKG.MOD:FACTORY",
                   help="your nn.Module: a function with no arguments that builds it, or its class")
    p.add_argument("--weights", type=Path, default=None, help="a state dict to load into it (torch.save)")
    p.add_argument("--input", action="append", default=None, metavar="NAME:DTYPE:DIMS",
                   help="one input, per row: image:float32:3x224x224 (-1 for an open axis); repeat for several")
    p.add_argument("--output", action="append", default=None, metavar="NAME", help="output names, in order")
    p.add_argument("--name", default=None, help="the model's name in the repository")
    _add_publishing_flags(p, scores_default="logits")
    _add_training_flags(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="publish any ONNX file into the repository, checked as the server loads it")
    p.add_argument("file", type=Path, help="the .onnx file")
    p.add_argument("--name", required=True, help="the model's name in the repository (a safe folder name)")
    p.add_argument("--repository", type=Path, default=Path("models"), help="model repository (default models/)")
    p.add_argument("--config", type=Path, default=None, help="a JSON file of config fields (see README)")
    p.add_argument("--max-batch-size", type=int, default=None,
                   help="0: never batch; default: batch when every tensor has an open first axis")
    _add_publishing_flags(p, scores_default="probabilities")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("quantize", help="make an INT8 variant of a published model, gated against it, and publish "
                                        "it as a model of its own (NAME-int8)")
    p.add_argument("model", help="the published FP32 model")
    p.add_argument("--version", type=int, default=None, help="its version (default: the newest)")
    p.add_argument("--repository", type=Path, default=Path("models"), help="model repository (default models/)")
    p.add_argument("--name", default=None, help="the variant's model name (default: MODEL-int8)")
    p.add_argument("--data-dir", type=Path, default=None, help="where the data set its report names is found")
    p.add_argument("--calibration", type=Path, default=None, metavar="FILE.npz|FOLDER",
                   help="calibration inputs: an .npz of arrays named like the inputs (first axis: samples; an array "
                        "'labels' of class indices is optional), or a folder of pictures for a model with an image "
                        "processor (sub-folders named by label make it labelled); default: the training split of "
                        "the data set its report names")
    p.add_argument("--evaluation", type=Path, default=None, metavar="FILE.npz|FOLDER",
                   help="inputs the gates compare on, as --calibration (default: the data set's test split, else "
                        "the calibration inputs)")
    p.add_argument("--count", type=int, default=1024, help="calibration inputs drawn (default 1024; all if fewer)")
    p.add_argument("--evaluation-count", type=int, default=None, help="evaluation inputs drawn (default: all)")
    p.add_argument("--seed", type=int, default=0, help="of the calibration and evaluation draws")
    p.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax",
                   help="how activation ranges are calibrated (default minmax)")
    p.add_argument("--min-agreement", type=float, default=99.0, metavar="PERCENT",
                   help="gate: top-1 agreement with the source, in percent (default 99.0)")
    p.add_argument("--max-accuracy-drop", type=float, default=0.3, metavar="POINTS",
                   help="gate, with labelled inputs: accuracy below the source's by at most (default 0.3 points)")
    p.add_argument("--min-speedup", type=float, default=1.2, metavar="X",
                   help="gate: raw samples/s at least X times the source's at the largest speed batch (default 1.2; "
                        "0: publish a variant that does not pay)")
    p.add_argument("--speed-batches", default="1,64", help="batch sizes of the raw speed measurement (default 1,64)")
    p.add_argument("--speed-rounds", type=int, default=5, help="rounds of the speed measurement (default 5)")
    p.set_defaults(func=cmd_quantize)

    from service.hosting.server import add_serve_flags

    p = sub.add_parser("serve", help="serve the model repository over HTTP")
    add_serve_flags(p)
    p.set_defaults(func=cmd_serve)

    from service.bench.flags import add_bench_flags

    p = sub.add_parser("bench", help="load-test a server and compare with in-process onnxruntime")
    add_bench_flags(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
