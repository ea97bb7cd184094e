"""``nnserve bench`` (placeholder flags until the load generator lands)."""

from __future__ import annotations

import argparse


def add_bench_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None)


def bench(args: argparse.Namespace) -> int:
    raise SystemExit("nnserve bench: not implemented yet")
