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
                   epochs=args.epochs, seed=args.seed, quick=args.quick, quiet=args.quiet, threads=args.threads)


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


def cmd_pipeline(args: argparse.Namespace) -> int:
    from training.pipeline import format_table, run_pipeline

    families = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        print(f"unknown model(s) {unknown}; choose from {list(FAMILIES)}", file=sys.stderr)
        return 2
    rows, ok = run_pipeline(families, _training_options(args))
    print()
    print(format_table(rows))
    for row in rows:
        if row.version is None:
            print(f"{row.name}: {row.status}", file=sys.stderr)
    return 0 if ok else 1


def cmd_train(args: argparse.Namespace) -> int:
    from training.pipeline import train

    checkpoint = train(args.model, _training_options(args))
    print(f"{args.model}: best validation accuracy {checkpoint.fit['best_val_accuracy']:.4f} "
          f"(epoch {checkpoint.fit['best_epoch']}); checkpoint {args.checkpoint_dir / (args.model + '.pt')}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.gates import GateFailed
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


def cmd_serve(args: argparse.Namespace) -> int:
    from service.hosting.server import serve

    return serve(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from service.bench.command import bench

    return bench(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnserve", description="Train, export and serve neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pipeline", help="train, export, verify and publish the built-in models")
    p.add_argument("--models", default=",".join(FAMILIES), help="comma-separated subset of " + ",".join(FAMILIES))
    _add_training_flags(p)
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("train", help="train one built-in model into a checkpoint")
    p.add_argument("model", choices=list(FAMILIES))
    _add_training_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export a built-in checkpoint through the gates and publish it")
    p.add_argument("model", choices=list(FAMILIES))
    _add_training_flags(p)
    p.set_defaults(func=cmd_export)

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
