"""Shared fixtures: the real datasets in ../shared/data and the committed model repository."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("NNSERVE_TEST_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
MODELS_DIR = Path(os.environ.get("NNSERVE_TEST_MODELS", ROOT / "models")).resolve()
os.environ["NNSERVE_OFFLINE"] = "1"  # tests never download


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "fashion-mnist").is_dir():
        pytest.skip(f"real datasets not found at {DATA_DIR} (set NNSERVE_TEST_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS_DIR


@pytest.fixture(scope="session")
def fashion_images(data_dir: Path) -> np.ndarray:
    from training.data.idx import read_idx

    return read_idx(data_dir / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")


@pytest.fixture(scope="session")
def fashion_labels(data_dir: Path) -> np.ndarray:
    from training.data.idx import read_idx

    return read_idx(data_dir / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz")


# In CI (``NNSERVE_CI=1``, set by .ci/run) a skip is an error unless its reason matches a line of
# ci-allowed-skips.txt: a tool CI failed to install must not turn into a quietly skipped test. Locally skips stay
# allowed, each with its reason (``pytest -rs``).
ALLOWED_SKIPS = Path(__file__).with_name("ci-allowed-skips.txt")


def allowed_skip_patterns() -> list[re.Pattern[str]]:
    lines = (line.strip() for line in ALLOWED_SKIPS.read_text().splitlines())
    return [re.compile(line) for line in lines if line and not line.startswith("#")]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not (os.environ.get("NNSERVE_CI") and report.skipped and not hasattr(report, "wasxfail")):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not any(pattern.search(reason) for pattern in allowed_skip_patterns()):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, and no line of {ALLOWED_SKIPS.name} allows it: {reason}"


@pytest.fixture(scope="session")
def int8_repository(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, data_dir: Path) -> Path:
    """The committed mlp and cnn, each with an INT8 variant made by ``nnserve quantize`` (256 calibration images,
    one short speed round, no speed gate: the tests that need one force it)."""
    import shutil

    from training.quantize import QuantizeOptions, quantize

    root = tmp_path_factory.mktemp("int8") / "models"
    for name in ("mlp", "cnn"):
        shutil.copytree(models_dir / name, root / name)
        quantize(QuantizeOptions(name, repository=root, data_dir=data_dir, count=256, min_speedup=0.0,
                                 speed_rounds=1, speed_seconds=0.2))
    return root
