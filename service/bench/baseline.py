"""``nnserve bench --baseline REV``: the same matrix against this checkout's server and a server of another git
revision, in one sitting, alternating the two sides round by round (these machines drift by 20% within minutes:
only figures taken together compare). The other revision runs from a temporary ``git worktree`` with this
environment's Python and its own ``models/``; the table gives each side's mean and the ratio."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar


class Measured(Protocol):
    model: str
    protocol: str
    concurrency: int

    @property
    def samples_per_s(self) -> float: ...


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


def compare(args: argparse.Namespace, measure_side: Callable[[str, Path | None, Path], list[RowT]]) -> str:
    """Alternate ``measure_side("current" | "baseline", cwd, repository)`` for ``args.rounds`` rounds."""
    results: dict[tuple[str, str, int], dict[str, list[RowT]]] = defaultdict(lambda: defaultdict(list))
    with worktree(args.baseline) as checkout:
        sides = [("baseline", checkout, baseline_repository(args, checkout)), ("current", None, args.repository)]
        for round_ in range(args.rounds or 2):
            for side, cwd, repository in sides:
                print(f"round {round_ + 1}, {side} ({args.baseline if side == 'baseline' else 'this checkout'}):",
                      flush=True)
                for row in measure_side(side, cwd, repository):
                    results[(row.model, row.protocol, row.concurrency)][side].append(row)
    head = ["model", "protocol", "conc.", f"{args.baseline} samples/s", "this checkout samples/s", "ratio",
            "each round: baseline / current"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (model, protocol, concurrency), sides_rows in results.items():
        cells = side_by_side([r.samples_per_s for r in sides_rows["baseline"]],
                             [r.samples_per_s for r in sides_rows["current"]])
        lines.append(f"| {model} | {protocol} | {concurrency} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def side_by_side(first: list[float], second: list[float]) -> list[str]:
    """Table cells for two sides measured in alternating rounds: each side's mean, the ratio of the means
    (second / first), and every round's figures (first / second)."""
    ratio = statistics.mean(second) / statistics.mean(first) if first and second else float("nan")
    mean = [f"{statistics.mean(v):,.0f}" if v else "-" for v in (first, second)]
    return [*mean, f"{ratio:.3f}", f"{', '.join(f'{v:,.0f}' for v in first)} / "
                                   f"{', '.join(f'{v:,.0f}' for v in second)}"]
