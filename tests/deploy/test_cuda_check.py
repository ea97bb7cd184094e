"""deploy/cuda-check.py runs only where CUDA is; its served-load section is driven here on the CPU, so the script
keeps working with the bench's load generator and the server's flags and metrics it relies on."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import ROOT


def _cuda_check() -> Any:
    spec = importlib.util.spec_from_file_location("cuda_check", ROOT / "deploy" / "cuda-check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_served_load_section_runs_and_reads_the_servers_metrics(models_dir: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    module = _cuda_check()
    assert module.served_load(models_dir, ["mlp"], "cpu:1,8,64:1", 0.5, np.random.default_rng(0)) == []
    row = next(line for line in capsys.readouterr().out.splitlines() if "| mlp |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "--providers cpu --allowed-batch-sizes 1,8,64, 1 process(es)"
    requests, batch = float(cells[2].replace(",", "")), float(cells[4])
    assert requests > 0 and 1 <= batch <= 64, row
    assert re.fullmatch(r"\d+\.\d\d", cells[6]), row  # the lone client's median
    assert cells[7] == "0", row  # errors


def test_a_server_that_fails_its_requests_fails_the_section(models_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NNSERVE_MAX_BODY_BYTES", "1024")  # the server started inherits it: every request gets 413
    module = _cuda_check()
    assert module.served_load(models_dir, ["mlp"], "cpu:any:1", 0.5, np.random.default_rng(0)) == \
        ["load cpu:any:1 mlp"]
    row = next(line for line in capsys.readouterr().out.splitlines() if "| mlp |" in line)
    assert int(row.strip("|").split("|")[7]) > 0, row  # the errors, counted


def test_the_soak_section_samples_memory_and_fails_on_failed_requests(models_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    module = _cuda_check()
    assert module.soak(models_dir, "mlp", 1.0, np.random.default_rng(0), providers="cpu", spell=0.5) == []
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and " s |" in line]
    assert len(rows) >= 2, rows
    cells = [c.strip() for c in rows[-1].strip("|").split("|")]
    assert float(cells[1].replace(",", "")) > 0 and cells[2] == "0" and float(cells[3].replace(",", "")) > 50, rows
    monkeypatch.setenv("NNSERVE_MAX_BODY_BYTES", "1024")  # every request gets 413
    failures = module.soak(models_dir, "mlp", 0.5, np.random.default_rng(0), providers="cpu", spell=0.5)
    assert len(failures) == 1 and failures[0].startswith("soak mlp: ") and "errors" in failures[0], failures


@pytest.mark.parametrize(("build", "expected", "batch"), [
    ("fixed_batch_one", {"x": (1, 4)}, 1),
    ("state_second_axis", {"x": (3, 4), "state": (2, 3, 4)}, None),
    ("scalar_input", None, None),
    ("bool_bytes", None, None),
    ("all_types", None, None),
])
def test_inputs_are_built_from_each_inputs_own_signature(tmp_path: Path, build: str,
                                                         expected: dict[str, tuple[int, ...]] | None,
                                                         batch: int | None) -> None:
    """Every input keeps the axes its model fixes (not another input's) and its datatype; scalars stay scalars;
    onnxruntime takes the result."""
    from service.backends import RuntimeOptions
    from service.backends.onnx import OnnxBackend
    from tests.imported import signatures

    getattr(signatures, build)(tmp_path / "model.onnx")
    backend = OnnxBackend(tmp_path / "model.onnx", RuntimeOptions("cpu", intra_op_threads=1))
    module = _cuda_check()
    feeds = module.feeds_for(backend, 3, np.random.default_rng(0))
    for spec in backend.signature.inputs:
        array = feeds[spec.name]
        assert array.ndim == len(spec.shape), spec
        assert all(d < 0 or d == got for d, got in zip(spec.shape, array.shape, strict=True)), (spec, array.shape)
    if expected is not None:
        assert {name: a.shape for name, a in feeds.items()} == expected
    assert module.fixed_batch(backend) == batch
    backend.run(feeds)


def test_gpu_memory_is_read_from_nvidia_smi_lines_of_the_servers_pids() -> None:
    module = _cuda_check()
    listing = "123, 500\n456, 700\n789, [N/A]\n"
    assert module.used_mib(listing, {123, 456}) == 1200
    assert module.used_mib(listing, {789}) is None  # [N/A]: nothing measured, not 0
    assert module.used_mib(listing, {999}) is None  # a container sees the host's pids: the caller asks the whole GPU
    assert module.used_mib("81559\n", None) == 81559
    assert module.used_mib("", None) is None


def test_memory_grown_past_its_warm_up_fails_the_soak_an_arena_settling_does_not() -> None:
    grew = _cuda_check().grew
    settling = [6724, 7040, 7040, 7048, 7122, 7122, 7122, 7196, 7196, 7344, 7344, 7344, 7344, 7344]  # the H100's
    assert grew(settling) is None
    leaking = [3600, 3610, 3620, 3630, 3700, 3800, 3900, 4000]
    assert grew(leaking) == (3630, 4000)
    assert grew([3600, 3601, 3602, 3603]) is None
    assert grew([100, 100, 100, 150]) is None  # +50%, but under 64 MiB: noise of a small process
    assert grew([None, None]) is None and grew([]) is None
