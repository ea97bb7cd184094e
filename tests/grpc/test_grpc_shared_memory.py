"""Triton's system shared memory extension over gRPC, with the unmodified tritonclient.grpc and its shared memory
utilities against a real server: every datatype (BYTES too) read from and written to one region at offsets, equal
to the same request carried in the message; an input in shared memory beside one carried raw; registration,
status and unregistration; and refusals with INVALID_ARGUMENT naming the problem."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, serialize_byte_tensor

from service.shared_memory import grpc_peer_host, same_host
from tests.grpc.conftest import GrpcServer
from tests.grpc.test_grpc_client import OUTPUTS, feeds_for, inputs_for


@pytest.fixture
def region() -> Iterator[Any]:
    handles: list[Any] = []

    def make(byte_size: int) -> tuple[str, Any]:
        name = f"nnserve-grpc-{uuid.uuid4().hex[:12]}"
        handles.append(shm.create_shared_memory_region(name, f"/{name}", byte_size))
        return name, handles[-1]

    yield make
    for handle in handles:
        shm.destroy_shared_memory_region(handle)


def wire_bytes(array: np.ndarray) -> bytes:
    return bytes(serialize_byte_tensor(array).item()) if array.dtype == object else array.tobytes()


def test_every_datatype_in_and_out_of_one_region(grpc_server: GrpcServer, region: Any) -> None:
    feeds = feeds_for("all-types")
    client = tg.InferenceServerClient(grpc_server.target)
    expected = client.infer("all-types", inputs_for(tg, feeds))
    blobs = {name: wire_bytes(array) for name, array in feeds.items()}
    size = 2 * sum(len(b) for b in blobs.values()) + 8 * len(blobs)
    name, handle = region(size)
    client.register_system_shared_memory(name, f"/{name}", size)
    status = client.get_system_shared_memory_status(as_json=True)["regions"][name]
    assert status["key"] == f"/{name}" and int(status["byte_size"]) == size
    inputs, offset, places = [], 0, {}
    for input_name, array in feeds.items():
        shm.set_shared_memory_region(handle, [serialize_byte_tensor(array) if array.dtype == object else array],
                                     offset=offset)
        tensor = tg.InferInput(input_name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_shared_memory(name, len(blobs[input_name]), offset=offset)
        inputs.append(tensor)
        offset += len(blobs[input_name])
    outputs = []
    for output_name, input_name in zip(OUTPUTS["all-types"], feeds, strict=True):
        requested = tg.InferRequestedOutput(output_name)
        requested.set_shared_memory(name, len(blobs[input_name]) + 8, offset=offset)
        places[output_name] = offset
        outputs.append(requested)
        offset += len(blobs[input_name]) + 8
    result = client.infer("all-types", inputs, outputs=outputs)
    for output_name, input_name in zip(OUTPUTS["all-types"], feeds, strict=True):
        want = expected.as_numpy(output_name)
        described = result.get_output(output_name)
        assert described.parameters["shared_memory_byte_size"].int64_param == len(blobs[input_name])
        got = shm.get_contents_as_numpy(handle, want.dtype, list(described.shape), offset=places[output_name])
        assert got.tolist() == want.tolist(), output_name
    client.unregister_system_shared_memory(name)
    assert name not in client.get_system_shared_memory_status(as_json=True).get("regions", {})


def test_an_input_in_shared_memory_beside_one_carried_raw(grpc_server: GrpcServer, region: Any) -> None:
    """The LSTM's frames in shared memory, its lengths in raw_input_contents: the raw entry is the lengths'."""
    feeds = feeds_for("lstm")
    client = tg.InferenceServerClient(grpc_server.target)
    expected = client.infer("lstm", inputs_for(tg, feeds)).as_numpy("probabilities")
    name, handle = region(feeds["sequence"].nbytes)
    shm.set_shared_memory_region(handle, [feeds["sequence"]])
    client.register_system_shared_memory(name, f"/{name}", feeds["sequence"].nbytes)
    frames = tg.InferInput("sequence", list(feeds["sequence"].shape), "FP32")
    frames.set_shared_memory(name, feeds["sequence"].nbytes)
    lengths = tg.InferInput("lengths", list(feeds["lengths"].shape), "INT64")
    lengths.set_data_from_numpy(feeds["lengths"])
    got = client.infer("lstm", [frames, lengths]).as_numpy("probabilities")
    np.testing.assert_allclose(got, expected, atol=1e-6)
    client.unregister_system_shared_memory(name)


def test_refusals_name_the_problem(grpc_server: GrpcServer, region: Any) -> None:
    client = tg.InferenceServerClient(grpc_server.target)
    with pytest.raises(InferenceServerException, match="no shared memory object '/nnserve-grpc-missing'") as caught:
        client.register_system_shared_memory("missing", "/nnserve-grpc-missing", 16)
    assert caught.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(InferenceServerException, match="CUDA shared memory is not supported"):
        client.register_cuda_shared_memory("gpu", "aGFuZGxl", 0, 16)  # base64 of a handle
    assert client.get_cuda_shared_memory_status(as_json=True) == {}
    feeds = feeds_for("mlp")
    tensor = tg.InferInput("image", list(feeds["image"].shape), "FP32")
    tensor.set_shared_memory("never-registered", feeds["image"].nbytes)
    with pytest.raises(InferenceServerException, match="no system shared memory region 'never-registered'") as caught:
        client.infer("mlp", [tensor])
    assert caught.value.status() == str(grpc.StatusCode.NOT_FOUND)
    name, _ = region(64)
    client.register_system_shared_memory(name, f"/{name}", 64)
    with pytest.raises(InferenceServerException, match="already registered") as caught:
        client.register_system_shared_memory(name, f"/{name}", 64)
    assert caught.value.status() == str(grpc.StatusCode.ALREADY_EXISTS)
    tensor.set_shared_memory(name, feeds["image"].nbytes)  # far more than the region holds
    with pytest.raises(InferenceServerException, match=f"run past shared memory region '{name}', which holds 64"):
        client.infer("mlp", [tensor])
    client.unregister_system_shared_memory(name)
    assert client.infer("mlp", inputs_for(tg, feeds)).as_numpy("probabilities").shape == (3, 10)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_outputs_in_shared_memory_beside_outputs_carried(grpc_server: GrpcServer, region: Any, protocol: str) -> None:
    """Every datatype's input in the message, every other output in a region: each output carried in the answer
    is its own (gRPC keeps an empty raw entry in each shared output's place; HTTP's binary parts skip them)."""
    module: Any = tg if protocol == "grpc" else th
    target = grpc_server.target if protocol == "grpc" else grpc_server.url.removeprefix("http://")
    feeds = feeds_for("all-types")
    client = module.InferenceServerClient(target)
    expected = client.infer("all-types", inputs_for(module, feeds))
    name, handle = region(4096)
    client.register_system_shared_memory(name, f"/{name}", 4096)
    outputs, places, offset = [], {}, 0
    for i, output_name in enumerate(OUTPUTS["all-types"]):
        requested = module.InferRequestedOutput(output_name) if protocol == "grpc" else \
            module.InferRequestedOutput(output_name, binary_data=True)
        if i % 2 == 0:
            requested.set_shared_memory(name, 256, offset=offset)
            places[output_name] = offset
            offset += 256
        outputs.append(requested)
    result = client.infer("all-types", inputs_for(module, feeds), outputs=outputs)
    for output_name in OUTPUTS["all-types"]:
        want = expected.as_numpy(output_name)
        if output_name in places:
            got = shm.get_contents_as_numpy(handle, want.dtype, list(want.shape), offset=places[output_name])
        else:
            got = result.as_numpy(output_name)
        assert got.tolist() == want.tolist(), output_name
    client.unregister_system_shared_memory(name)


def test_peer_strings_of_both_grpc_servers() -> None:
    assert grpc_peer_host("ipv4:127.0.0.1:5000") == "127.0.0.1"
    assert grpc_peer_host("ipv6:[::1]:5000") == "::1" and grpc_peer_host("ipv6:%5B::1%5D:5000") == "::1"
    assert grpc_peer_host("ipv6:[::ffff:127.0.0.1]:5000") == "::ffff:127.0.0.1"
    assert grpc_peer_host("unix:/tmp/socket") is None and grpc_peer_host("") is None
    assert same_host(grpc_peer_host("ipv4:127.0.0.1:1")) and not same_host(grpc_peer_host("ipv4:10.0.0.2:1"))
