"""``nnserve bench --models mlp,mlp-int8`` as a user runs it (a real server, wrk or the asyncio client, short
measurements): the variant gets a table beside its source, every round of both in it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_bench_puts_a_variant_beside_its_source_round_by_round(int8_repository: Path, data_dir: Path,
                                                                tmp_path: Path) -> None:
    markdown = tmp_path / "bench.md"
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "bench", "--repository", str(int8_repository), "--models",
         "mlp,mlp-int8", "--protocols", "v2-binary", "--concurrency", "4", "--duration", "1", "--warmup", "0",
         "--rounds", "2", "--raw-seconds", "0.05", "--samples", "16", "--data-dir", str(data_dir), "--markdown",
         str(markdown)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "round 1:" in done.stdout and "round 2:" in done.stdout
    assert "raw in-process onnxruntime throughput (samples/s by batch size), again after the served rounds:" in \
        done.stdout
    text = markdown.read_text()
    assert "INT8 variants beside their sources" in text
    assert "| source | variant | protocol | conc. | source samples/s | variant samples/s | ratio |" in text
    row = re.search(r"^\| mlp \| mlp-int8 \| v2-binary \| 4 \| ([\d,]+) \| ([\d,]+) \| ([\d.]+) \| "
                    r"([\d,]+), ([\d,]+) / ([\d,]+), ([\d,]+) \| .* \| [\d,]+ / [\d,]+ \(([\d.]+)x\) \|$", text,
                    re.MULTILINE)
    assert row, text
    source, variant, ratio = (float(row.group(i).replace(",", "")) for i in (1, 2, 3))
    assert source > 0 and variant > 0 and abs(ratio - variant / source) < 0.01
    # the main table lists each model in each round, with no errors
    rounds = re.findall(r"^\| (mlp(?:-int8)?) \| v2-binary \| 4 \| (\d) \| [\d,]+ \| .* \| 0 \|", text, re.MULTILINE)
    assert sorted(rounds) == [("mlp", "1"), ("mlp", "2"), ("mlp-int8", "1"), ("mlp-int8", "2")]
    # where a request's time went, by the server's own histograms: its queue and onnxruntime's time per batch
    head = next(line for line in text.splitlines() if line.startswith("| model | protocol | conc. | round |"))
    columns = [c.strip() for c in head.strip("|").split("|")]
    for line in (line for line in text.splitlines() if line.startswith("| mlp | v2-binary | 4 |")):
        cells = dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True))
        assert float(cells["queue ms"]) >= 0 and 0 < float(cells["compute ms/batch"]) < 100, line
    # the ceiling: the mean of the raw measurements before and after the rounds, both shown beside it
    ceilings = re.findall(r"\| ([\d,]+) \((\d+)[^;|]*; ([\d,]+) before, ([\d,]+) after\) \| (\d+)% \|", text)
    assert len(ceilings) == 4, text
    for cells in ceilings:
        mean, before, after = (float(cells[i].replace(",", "")) for i in (0, 2, 3))
        assert abs(mean - (before + after) / 2) <= 1
