"""``nnserve bench``'s ceiling: raw onnxruntime throughput at each batch size, one session on every core and one
single-threaded session per core side by side (a server of one process per core runs the latter)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from service.bench.command import ceilings
from service.bench.inprocess import cpu_session, raw_throughput, side_by_side
from service.loading import load_version
from service.settings import Settings, usable_cpus


def test_raw_throughput_measures_both_arrangements(models_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mlp" / "1"
    shutil.copytree(max((models_dir / "mlp").iterdir(), key=lambda p: int(p.name)), folder)
    model = load_version(folder, "mlp", 1, Settings(warmup_batch_sizes=[1]))
    sample = {"image": np.zeros((1, 1, 28, 28), np.float32)}
    cores = usable_cpus()
    sizes = (1, 8, 8 * cores)
    result = raw_throughput(model, sample, batch_sizes=sizes, seconds=0.05)
    # side by side only while the sessions together hold no more rows than the largest batch alone (memory)
    expected = {str(b) for b in sizes} | ({f"{b}, {cores}x1 thread" for b in sizes if b * cores <= 8 * cores}
                                          if cores > 1 else set())
    assert set(result) == expected and all(v > 0 for v in result.values())
    if cores > 1:
        assert f"{8 * cores}, {cores}x1 thread" not in result


def test_side_by_side_runs_every_session(models_dir: Path) -> None:
    path = max((models_dir / "mlp").iterdir(), key=lambda p: int(p.name)) / "model.onnx"
    runs: list[int] = []

    class Counted:
        def __init__(self, index: int) -> None:
            self.index, self.session = index, cpu_session(path, 1)

        def run(self, outputs: None, feeds: dict[str, np.ndarray]) -> object:
            runs.append(self.index)
            return self.session.run(outputs, feeds)

    rate = side_by_side([Counted(0), Counted(1)], {"image": np.zeros((4, 1, 28, 28), np.float32)}, 4,
                        0.05)
    assert rate > 0 and {0, 1} <= set(runs) and runs.count(0) > 1 and runs.count(1) > 1


def test_the_ceiling_is_the_mean_of_what_was_measured_before_and_after() -> None:
    before = {"m": {"1": 100.0, "8": 300.0, "8, 2x1 thread": 340.0}, "n": {"1": 50.0}}
    after = {"m": {"1": 110.0, "8": 320.0, "8, 4x1 thread": 900.0}, "n": {}}  # the usable cores changed
    best = ceilings(before, after)
    assert best["m"] == (310.0, "8; 300 before, 320 after")  # only what both readings measured
    assert best["n"] == (50.0, "1")  # nothing after: the reading before, alone
    assert ceilings(before, None)["m"] == (340.0, "8, 2x1 thread")
