"""``nnserve bench --baseline REV`` and ``--versus-args ARGS``: the same matrix against this checkout's server
and another one, in one sitting, alternating the two sides round by round (these machines drift by 20% within
minutes: only figures taken together compare). The other side is a server of another git revision, run from a
temporary ``git worktree`` with this environment's Python and its own ``models/``; or this checkout's server with
other flags (``--versus-args="--workers 1"`` beside the defaults). The table gives each side's mean throughput,
the ratio, and each side's median p50 latency."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from service.bench.loadgen import LoadResult


class Measured(Protocol):
    model: str
    protocol: str
    concurrency: int
    beside: LoadResult | None  # another model's paced requests meanwhile (--beside)

    @property
    def samples_per_s(self) -> float: ...

    @property
    def p50_ms(self) -> float: ...


@dataclass(frozen=True)
class Side:
    label: str  # in the table
    cwd: Path | None  # the checkout whose server runs (None: this one)
    repository: Path
    server_args: str


RowT = TypeVar("RowT", bound=Measured)


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    top = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                              check=True).stdout.strip())
    folder = Path(tempfile.mkdtemp(prefix="nnserve-baseline-")) / "checkout"
    subprocess.run(["git", "-C", str(top), "worktree", "add", "--detach", "-q", str(folder), revision], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "-C", str(top), "worktree", "remove", "--force", str(folder)], check=False)


def baseline_repository(args: argparse.Namespace, checkout: Path) -> Path:
    """The other revision's own copy of a repository inside this checkout (its file formats), else the same."""
    here = Path.cwd().resolve()
    repository: Path = Path(args.repository).resolve()
    return checkout / repository.relative_to(here) if repository.is_relative_to(here) else repository


@contextmanager
def other_side(args: argparse.Namespace) -> Iterator[Side]:
    if args.baseline:
        with worktree(args.baseline) as checkout:
            yield Side(args.baseline, checkout, baseline_repository(args, checkout), args.server_args)
    else:
        yield Side(f"`{args.versus_args}`", None, args.repository, args.versus_args)


def compare(args: argparse.Namespace, measure_side: Callable[[Side], list[RowT]]) -> str:
    """Alternate ``measure_side(side)``, the other side first, for ``args.rounds`` rounds."""
    results: dict[tuple[str, str, int], dict[str, list[RowT]]] = defaultdict(lambda: defaultdict(list))
    current = Side(f"`{args.server_args}`" if args.versus_args and args.server_args else
                   "defaults" if args.versus_args else "this checkout", None, args.repository, args.server_args)
    with other_side(args) as other:
        for round_ in range(args.rounds or 2):
            for side in (other, current):
                print(f"round {round_ + 1}, {side.label}:", flush=True)
                for row in measure_side(side):
                    results[(row.model, row.protocol, row.concurrency)][side.label].append(row)
    head = ["model", "protocol", "conc.", f"{other.label} samples/s", f"{current.label} samples/s", "ratio",
            f"each round: {other.label} / {current.label}", "p50 ms (median of rounds)"]
    besides = any(r.beside for sides in results.values() for rows in sides.values() for r in rows)
    if besides:
        head.append(f"beside: p50, p99 ms (median of rounds): {other.label} / {current.label}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (model, protocol, concurrency), sides_rows in results.items():
        before, after = sides_rows[other.label], sides_rows[current.label]
        cells = side_by_side([r.samples_per_s for r in before], [r.samples_per_s for r in after])
        p50 = " / ".join(f"{statistics.median(r.p50_ms for r in rows):.2f}" if rows else "-"
                         for rows in (before, after))
        extra = [" / ".join(_beside_median(rows) for rows in (before, after))] if besides else []
        lines.append(f"| {model} | {protocol} | {concurrency} | " + " | ".join([*cells, p50, *extra]) + " |")
    return "\n".join(lines)


def _beside_median(rows: list[RowT]) -> str:
    measured = [r.beside for r in rows if r.beside]
    if not measured:
        return "-"
    return f"{statistics.median(m.p50_ms for m in measured):.2f}, {statistics.median(m.p99_ms for m in measured):.2f}"


def side_by_side(first: list[float], second: list[float]) -> list[str]:
    """Table cells for two sides measured in alternating rounds: each side's mean, the ratio of the means
    (second / first), and every round's figures (first / second)."""
    ratio = statistics.mean(second) / statistics.mean(first) if first and second else float("nan")
    mean = [f"{statistics.mean(v):,.0f}" if v else "-" for v in (first, second)]
    return [*mean, f"{ratio:.3f}", f"{', '.join(f'{v:,.0f}' for v in first)} / "
                                   f"{', '.join(f'{v:,.0f}' for v in second)}"]
