"""``nnserve bench --protocols v2-binary,v2-shm`` as a user runs it: the shared memory rows measure the same model
without an error, and the bench leaves no region registered and no object behind in /dev/shm."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_bench_measures_over_shared_memory_and_cleans_up(models_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    markdown = tmp_path / "bench.md"
    before = set(Path("/dev/shm").iterdir())
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "bench", "--repository", str(models_dir), "--models", "cnn,lstm",
         "--protocols", "v2-binary,v2-shm", "--concurrency", "4", "--duration", "1", "--warmup", "0",
         "--raw-seconds", "0.05", "--samples", "16", "--data-dir", str(data_dir), "--markdown", str(markdown)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = re.findall(r"^\| (cnn|lstm) \| (v2-binary|v2-shm) \| 4 \| ([\d,]+) \| .* \| (\d+) \| [\d.]+ \|",
                      markdown.read_text(), re.MULTILINE)
    assert sorted((m, p) for m, p, _, _ in rows) == [("cnn", "v2-binary"), ("cnn", "v2-shm"), ("lstm", "v2-binary"),
                                                       ("lstm", "v2-shm")], markdown.read_text()
    for _, _, rps, errors in rows:
        assert float(rps.replace(",", "")) > 0 and errors == "0"
    assert {p for p in set(Path("/dev/shm").iterdir()) - before if p.name.startswith("nnserve-bench-")} == set()
