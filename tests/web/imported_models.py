"""Two small imported models for the page's tests, published with ``nnserve import``'s own code: a classifier whose
labels and description are HTML that must render as text, and a model with no processor and no labels (two named
inputs of two datatypes, two outputs) for the tensor form."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.importer import ImportOptions, import_model

XSS_LABELS = ["<img src=x onerror=alert(1)>", "<script>alert(2)</script>", "plain & simple"]
XSS_DESCRIPTION = '<b onmouseover="alert(3)">bold</b> claims & </p>'


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def xss_classifier(folder: Path) -> Path:
    """features FP32 [batch, 4] -> scores FP32 [batch, 3], probabilities (softmax of a fixed matrix product)."""
    weights = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "weights")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "weights"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["scores"], axis=-1)],
        "xss", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])], [weights])
    return _save(graph, folder / "xss.onnx")


def doubler(folder: Path) -> Path:
    """x FP32 [batch, 3] -> y = 2x; n INT64 [batch, 2] -> m = n + 1."""
    two = numpy_helper.from_array(np.array(2, dtype=np.float32), "two")
    one = numpy_helper.from_array(np.array(1, dtype=np.int64), "one")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"]), helper.make_node("Add", ["n", "one"], ["m"])],
        "doubler", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
                    helper.make_tensor_value_info("n", TensorProto.INT64, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("m", TensorProto.INT64, ["batch", 2])], [two, one])
    return _save(graph, folder / "doubler.onnx")


def publish_imported_models(repository: Path, work: Path) -> None:
    """``nnserve import`` both into ``repository`` (as ``xss``, and ``doubler`` twice: versions 1 and 2)."""
    labels = work / "labels.json"
    labels.write_text(json.dumps(XSS_LABELS))
    overrides = work / "overrides.json"
    overrides.write_text(json.dumps({"description": XSS_DESCRIPTION, "task": "<i>task</i>"}))
    import_model(xss_classifier(work), ImportOptions(name="xss", repository=repository, labels=labels,
                                                     config=overrides))
    for _ in range(2):  # two versions, for the page's version picker
        import_model(doubler(work), ImportOptions(name="doubler", repository=repository))


def repository_with_imports(models: Path, root: Path) -> Path:
    """The committed models (linked, not copied) and the two imported ones, in a fresh repository under ``root``."""
    repository = root / "models"
    repository.mkdir(parents=True)
    for model in models.iterdir():
        if model.is_dir() and not model.name.startswith("."):
            (repository / model.name).symlink_to(model.resolve(), target_is_directory=True)
    work = root / "work"
    work.mkdir()
    publish_imported_models(repository, work)
    return repository
