"""``nnserve bench --beside MODEL:RATE`` as a user runs it: another model's paced requests go on while each measured
run does, and their latency is in the table; a malformed rate is refused naming it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def bench(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", "bench", *flags], capture_output=True, text=True,
                          timeout=300)


def test_bench_reports_another_models_latency_beside_the_load(models_dir: Path, data_dir: Path,
                                                                tmp_path: Path) -> None:
    markdown = tmp_path / "bench.md"
    done = bench("--repository", str(models_dir), "--models", "cnn", "--protocols", "v2-binary", "--concurrency", "8",
                 "--duration", "2", "--warmup", "0", "--raw-seconds", "0.05", "--samples", "16", "--data-dir",
                 str(data_dir), "--beside", "mlp:50", "--markdown", str(markdown))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    line = re.search(r"cnn +v2-binary c=8 .* mlp at 50/s beside p50 / p99 [\d.]+ / [\d.]+ ms, (\d+) requests",
                     done.stdout)
    assert line, done.stdout
    assert 60 <= int(line.group(1)) <= 101, line.group(0)  # paced: 50 a second for the 2 s of the run
    text = markdown.read_text()
    assert "| beside: p50 / p99 ms |" in text
    row = re.search(r"^\| cnn \| v2-binary \| 8 \| .* \| ([\d.]+) / ([\d.]+) \|$", text, re.MULTILINE)
    assert row, text
    p50, p99 = float(row.group(1)), float(row.group(2))
    assert 0 < p50 <= p99, row.group(0)


def test_a_malformed_beside_is_refused_naming_it(models_dir: Path) -> None:
    done = bench("--repository", str(models_dir), "--models", "cnn", "--beside", "mlp:fast")
    assert done.returncode != 0
    assert "--beside mlp:fast: expected MODEL or MODEL:RATE (requests a second), got rate 'fast'" in done.stderr
