"""``nnserve import`` as a user runs it: what it prints, what it writes, and what it refuses (a file onnxruntime
cannot load, a name that is not a safe folder name, a signature it cannot serve, a model whose warm-up fails)
with a non-zero exit, a message naming the file and the reason, and nothing written. And a bare ``model.onnx``
dropped into the repository with no config serves, its config completed from the graph."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import onnxruntime
import pytest

from service.hosting.launcher import serve_subprocess
from tests.imported.signatures import fixed_batch_one, multi_io
from tests.zoo import zoo_file

IRIS = Path(onnxruntime.__file__).parent / "datasets" / "logreg_iris.onnx"  # scikit-learn's ZipMap output


def nnserve(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_import_prints_what_it_inferred_and_publishes_the_next_version(tmp_path: Path) -> None:
    source = tmp_path / "multi.onnx"
    multi_io(source)
    repository = tmp_path / "models"
    first = nnserve("import", source, "--name", "multi", "--repository", repository)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "published multi version 1" in out
    assert "input       a FP32 [-1, 3]" in out and "input       b INT64 [-1, 2]" in out
    assert "output      a_max FP64 [-1]" in out and "open axes   a: [0]" in out
    assert "batching    dynamic, up to the server's --max-batch-size" in out
    assert "warm-up     a [1, 3], b [1, 2]" in out
    assert re.search(r"speed       one onnxruntime thread \(a default server process's\): batch 1 [\d,]+ "
                     r"samples/s, batch 8 [\d,]+; combining requests (pays|does not pay) \(\d+\.\d\dx\)", out), out
    assert files_under(repository) == ["multi", "multi/1", "multi/1/config.json", "multi/1/model.onnx"]
    config = json.loads((repository / "multi" / "1" / "config.json").read_text())
    assert config["inputs"][1] == {"name": "b", "datatype": "INT64", "shape": [-1, 2]} and "version" not in config
    second = nnserve("import", source, "--name", "multi", "--repository", repository, "--max-batch-size", "0")
    assert second.returncode == 0 and "published multi version 2" in second.stdout
    assert "batching    none, one request at a time: max_batch_size in config.json" in second.stdout
    assert "speed" not in second.stdout  # nothing to combine


def test_import_with_labels_and_a_preset_of_a_real_classifier(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("0\n90\n180\n270\n")
    result = nnserve("import", zoo_file("orientation"), "--name", "orientation", "--repository", tmp_path / "models",
                     "--labels", labels, "--image-preprocessing", "imagenet-bgr")
    assert result.returncode == 0, result.stderr
    assert "pictures: BGR 224x224 (shorter side to 256, centre crop)" in result.stdout
    assert "labels      4 on output 'fetch_name_0'" in result.stdout


REFUSALS = [
    ("not an onnx file", "text", "good", ["onnxruntime cannot load"]),
    ("an unsafe name", "multi", "../elsewhere", ["not a safe folder name"]),
    ("a non-tensor output", "iris", "iris", ["output 'probabilities' is of type seq(map(int64,tensor(float)))"]),
    ("a warm-up that fails", "silero", "vad", ["warm-up inference with inputs input [1, 32], state [2, 1, 128]",
                                               "\"warmup\""]),
    ("labels that do not fit", "multi-labels", "multi", ["3 labels", "holds 1 scores per row"]),
    ("a batch the model cannot take", "fixed-batched", "fixed", ["max_batch_size is 8", "fixed first axis (1)"]),
]


@pytest.mark.parametrize("case,kind,name,words", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_import_refuses_and_writes_nothing(tmp_path: Path, case: str, kind: str, name: str, words: list[str]) -> None:
    repository = tmp_path / "models"
    (repository / "existing" / "1").mkdir(parents=True)
    shutil.copyfile(IRIS, repository / "existing" / "1" / "model.onnx")
    before = files_under(repository)
    extra: list[str | Path] = []
    if kind == "text":
        source = tmp_path / "notes.onnx"
        source.write_text("not a graph")
    elif kind == "iris":
        source = IRIS
    elif kind == "silero":
        source = zoo_file("silero-vad")
    elif kind == "fixed-batched":
        source = tmp_path / "fixed.onnx"
        fixed_batch_one(source)
        extra = ["--max-batch-size", "8"]
    else:
        source = tmp_path / "multi.onnx"
        multi_io(source)
        if kind == "multi-labels":
            labels = tmp_path / "labels.txt"
            labels.write_text("x\ny\nz\n")
            config = tmp_path / "config.json"
            config.write_text(json.dumps({"classification": {"output": "a_max"}}))
            extra = ["--labels", labels, "--config", config]
    result = nnserve("import", source, "--name", name, "--repository", repository, *extra)
    assert result.returncode == 1, result.stdout
    assert str(source) in result.stderr and "nothing was written" in result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    assert files_under(repository) == before


def test_a_bare_model_file_serves_with_its_config_completed_from_the_graph(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    (repository / "bare" / "3").mkdir(parents=True)
    multi_io(repository / "bare" / "3" / "model.onnx")
    with serve_subprocess(repository, ["--no-access-log"]) as (url, _, _):
        config = httpx.get(f"{url}/v2/models/bare/config").json()
        assert config["max_batch_size"] == 64 and config["input"][0] == {"name": "a", "data_type": "TYPE_FP32",
                                                                          "dims": [3]}
        completed = config["nnserve"]
        assert completed["version"] == 3 and len(completed["sha256"]) == 64
        assert [o["name"] for o in completed["outputs"]] == ["a_plus_one", "b_sum", "a_max"]
        response = httpx.post(f"{url}/v2/models/bare/infer", json={"inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 5, 2]},
            {"name": "b", "datatype": "INT64", "shape": [1, 2], "data": [4, 5]}]})
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        assert outputs == {"a_plus_one": [2, 6, 3], "b_sum": [9], "a_max": [5]}
        card = next(m for m in httpx.get(f"{url}/models").json()["models"] if m["name"] == "bare")
        assert card["report"] is None and any("training report" in lack for lack in card["lacks"])
