"""A model that keeps its tensors in files beside it (ONNX external data, as models over 2 GiB must): ``nnserve
import`` finds every such file without the ``onnx`` package, copies them into the version folder, and the served
model answers as onnxruntime does on the original; a location outside the model's folder is refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from service import onnx_external_data as ext
from service.hosting.launcher import serve_subprocess
from service.importer import ImportFailed, ImportOptions, import_model
from tests.imported.clients import assert_same, direct, via_triton

RNG = np.random.default_rng(9)


def build(folder: Path, one_file: bool) -> Path:
    """y = relu(x @ w1 + b1) @ w2, then + c where a Constant node holds c and, in an ``If`` branch, + d: tensors in
    initializers, a node's attribute and a subgraph, all saved as external data."""
    w1, b1, w2 = (numpy_helper.from_array(RNG.normal(size=s).astype(np.float32), n)
                  for n, s in (("w1", (4, 8)), ("b1", (8,)), ("w2", (8, 3))))
    c = numpy_helper.from_array(RNG.normal(size=(3,)).astype(np.float32), "c_value")
    d = numpy_helper.from_array(RNG.normal(size=(3,)).astype(np.float32), "d")
    branch = helper.make_graph([helper.make_node("Add", ["z", "d"], ["out"])], "then",
                               [], [helper.make_tensor_value_info("out", T.FLOAT, ["N", 3])], [d])
    other = helper.make_graph([helper.make_node("Identity", ["z"], ["out2"])], "else",
                              [], [helper.make_tensor_value_info("out2", T.FLOAT, ["N", 3])])
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["m"]),
             helper.make_node("Constant", [], ["c"], value=c), helper.make_node("Add", ["m", "c"], ["z"]),
             helper.make_node("Constant", [], ["flag"], value=helper.make_tensor("f", T.BOOL, [], [True])),
             helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=other)]
    graph = helper.make_graph(nodes, "external", [helper.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", T.FLOAT, ["N", 3])], [w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    folder.mkdir(parents=True)
    path = folder / "net.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=one_file,
                    location="net.bin" if one_file else None, size_threshold=0, convert_attribute=True)
    return path


def relocate(graph: onnx.GraphProto, location: str) -> None:
    """Every external tensor of the graph, its nodes' attributes and subgraphs, pointed at ``location``."""
    tensors = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            tensors += [attribute.t] if attribute.HasField("t") else []
            if attribute.HasField("g"):
                relocate(attribute.g, location)
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location


def written_beside(path: Path) -> set[str]:
    return {str(p.relative_to(path.parent)) for p in path.parent.rglob("*") if p.is_file() and p != path}


def test_the_wire_format_field_numbers_are_onnx_protos() -> None:
    messages: dict[int, Any] = {ext.MODEL: onnx.ModelProto, ext.GRAPH: onnx.GraphProto, ext.NODE: onnx.NodeProto,
                ext.ATTRIBUTE: onnx.AttributeProto, ext.FUNCTION: onnx.FunctionProto,
                ext.SPARSE: onnx.SparseTensorProto, ext.TENSOR: onnx.TensorProto, ext.TRAINING: onnx.TrainingInfoProto}
    for kind, fields in ext.HOLDS.items():
        descriptor = messages[kind].DESCRIPTOR
        for number, held in fields.items():
            field = descriptor.fields_by_number[number]
            assert field.message_type is messages[held].DESCRIPTOR, (descriptor.name, field.name)
    # and no field of any message on the way misses: every field that can lead to a TensorProto is walked
    leads: set[str] = {onnx.TensorProto.DESCRIPTOR.full_name}
    reachable, frontier = {}, [onnx.ModelProto.DESCRIPTOR]
    while frontier:
        descriptor = frontier.pop()
        if descriptor.full_name not in reachable:
            reachable[descriptor.full_name] = descriptor
            frontier += [f.message_type for f in descriptor.fields if f.message_type is not None]
    changed = True
    while changed:
        changed = False
        for name, descriptor in reachable.items():
            if name not in leads and any(f.message_type is not None and f.message_type.full_name in leads
                                         for f in descriptor.fields):
                leads.add(name)
                changed = True
    kinds = {messages[k].DESCRIPTOR.full_name: k for k in messages}
    for name in leads - {onnx.TensorProto.DESCRIPTOR.full_name}:
        descriptor = reachable[name]
        needed = {f.number for f in descriptor.fields
                  if f.message_type is not None and f.message_type.full_name in leads}
        assert name in kinds and set(ext.HOLDS[kinds[name]]) == needed, (name, sorted(needed))
    tensor = onnx.TensorProto.DESCRIPTOR
    assert tensor.fields_by_name["external_data"].number == ext.TENSOR_EXTERNAL_DATA
    assert tensor.fields_by_name["data_location"].number == ext.TENSOR_DATA_LOCATION
    assert onnx.TensorProto.EXTERNAL == 1
    entry = onnx.StringStringEntryProto.DESCRIPTOR
    assert (entry.fields_by_name["key"].number, entry.fields_by_name["value"].number) == (ext.ENTRY_KEY,
                                                                                          ext.ENTRY_VALUE)


@pytest.mark.parametrize("one_file", [True, False], ids=["one file", "a file per tensor"])
def test_every_file_the_model_names_is_found(tmp_path: Path, one_file: bool) -> None:
    path = build(tmp_path / "src", one_file)
    found = ext.external_data_locations(path.read_bytes())
    assert set(found) == written_beside(path) and len(found) == len(set(found))
    assert len(found) == (1 if one_file else 5)  # w1, b1, w2, the Constant node's c, the branch's d
    no_external = onnx.load(str(path))  # loads the data back in
    assert ext.external_data_locations(no_external.SerializeToString()) == []
    with pytest.raises(ext.MalformedModel):
        ext.external_data_locations(b"\x3a\xff\xff\x01not a model")


def test_an_imported_model_with_external_data_serves_from_its_own_copy(tmp_path: Path) -> None:
    path = build(tmp_path / "src", one_file=True)
    x = RNG.normal(size=(5, 4)).astype(np.float32)
    expected = direct(path, {"x": x})
    repository = tmp_path / "models"
    result = subprocess.run([sys.executable, "-m", "service.cli", "import", str(path), "--name", "external",
                             "--repository", str(repository)], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert "data files  net.bin" in result.stdout
    version = repository / "external" / "1"
    assert (version / "net.bin").read_bytes() == (path.parent / "net.bin").read_bytes()
    from service.repository import model_bytes  # what sizes the CUDA process count: the weights too

    assert model_bytes(version) == (version / "model.onnx").stat().st_size + (version / "net.bin").stat().st_size
    shutil.rmtree(path.parent)  # the served version needs nothing of the source folder
    with serve_subprocess(repository, ["--no-access-log"], env={"NNSERVE_WARMUP_BATCH_SIZES": "[1]"}) as (url, _, _):
        for binary in (True, False):
            assert_same(via_triton(url, "external", {"x": x}, ["y"], binary)["y"], expected["y"], f"binary={binary}")


@pytest.mark.parametrize("location,why", [("../outside.bin", "leaves the model's folder"),
                                          ("/etc/passwd", "leaves the model's folder"),
                                          (".", "is empty"),
                                          (".ssh/id_rsa", "is hidden, or in a hidden folder"),
                                          ("config.json", "has the name of a file nnserve writes"),
                                          ("Config.JSON", "has the name of a file nnserve writes"),
                                          ("missing.bin", "is not a file in"),
                                          ("linked.bin", "is not a file in")])
def test_a_location_outside_the_folder_is_refused_and_nothing_written(tmp_path: Path, location: str,
                                                                      why: str) -> None:
    path = build(tmp_path / "src", one_file=True)
    model = onnx.load(str(path), load_external_data=False)
    relocate(model.graph, location)
    onnx.save_model(model, str(path))
    (tmp_path / "outside.bin").write_bytes((path.parent / "net.bin").read_bytes())
    (path.parent / "linked.bin").symlink_to(tmp_path / "outside.bin")  # a link out of the folder
    with pytest.raises(ImportFailed, match=f"external data file '{location}' {why}"):
        import_model(path, ImportOptions(name="refused", repository=tmp_path / "models"))
    assert not (tmp_path / "models" / "refused").exists()


def test_a_location_in_a_subfolder_is_copied_into_the_same_subfolder(tmp_path: Path) -> None:
    path = build(tmp_path / "src", one_file=True)
    (path.parent / "weights").mkdir()
    (path.parent / "net.bin").rename(path.parent / "weights" / "net.bin")
    model = onnx.load(str(path), load_external_data=False)
    relocate(model.graph, "weights/net.bin")
    onnx.save_model(model, str(path))
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    expected = direct(path, {"x": x})
    loaded = import_model(path, ImportOptions(name="nested", repository=tmp_path / "models"))
    assert (loaded.folder / "weights" / "net.bin").is_file()
    assert_same(direct(loaded.folder / "model.onnx", {"x": x})["y"], expected["y"], "y")
