"""Shared fixtures: the real datasets in ../shared/data and the committed model repository."""

from __future__ import annotations

import os
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
