"""deploy/cuda-check.py runs only where CUDA is; its served-load section is driven here on the CPU, so the script
keeps working with the bench's load generator and the server's flags and metrics it relies on."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT


def test_the_served_load_section_runs_and_reads_the_servers_metrics(models_dir: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("cuda_check", ROOT / "deploy" / "cuda-check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.served_load(models_dir, ["mlp"], "cpu:1,8,64:1", 0.5, np.random.default_rng(0)) == []
    row = next(line for line in capsys.readouterr().out.splitlines() if "| mlp |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "--providers cpu --allowed-batch-sizes 1,8,64, 1 process(es)"
    requests, batch = float(cells[2].replace(",", "")), float(cells[4])
    assert requests > 0 and 1 <= batch <= 64, row
    assert re.fullmatch(r"\d+\.\d\d", cells[6]), row  # the lone client's median
    assert cells[7] == "0", row  # errors
