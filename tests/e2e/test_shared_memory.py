"""Triton's system shared memory extension against a real two-process ``nnserve serve``, driven by the unmodified
tritonclient and its own shared memory utilities: inputs read from and outputs written to regions the client
registered, the same answers as binary tensors, every process seeing each registration and unregistration,
concurrent clients each getting their own answer, and bad regions refused with a 400 naming the problem while the
requests beside them succeed."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tests.e2e.server_process import nnserve_process

IMAGE_BYTES = 4 * 28 * 28
PROBABILITIES = 4 * 10


@pytest.fixture(scope="module")
def server(models_dir: Path) -> Iterator[str]:
    with nnserve_process(models_dir, "--no-access-log", "--workers", "2", "--model", "resnet", "--model",
                         "lstm", "--shared-memory") as (url, _):
        yield url


@pytest.fixture
def regions() -> Iterator[Any]:
    """Make shared memory regions (name -> handle); every one is destroyed after the test."""
    made: list[Any] = []

    def make(byte_size: int) -> tuple[str, str, Any]:
        name = f"nnserve-test-{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(name, f"/{name}", byte_size)
        made.append(handle)
        return name, f"/{name}", handle

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"))


def images(fashion_images: np.ndarray, count: int, start: int = 0) -> np.ndarray:
    return ((fashion_images[start:start + count] / 255.0 - 0.286) / 0.353).astype(np.float32)[:, None]


def infer_shared(url: str, x: np.ndarray, region: str, out_region: str, out_offset: int = 0) -> Any:
    tensor = triton.InferInput("image", list(x.shape), "FP32")
    tensor.set_shared_memory(region, x.nbytes)
    output = triton.InferRequestedOutput("probabilities")
    output.set_shared_memory(out_region, len(x) * PROBABILITIES, offset=out_offset)
    with client(url) as c:  # a new connection each time: either process may take it
        return c.infer("resnet", [tensor], outputs=[output])


def binary_answer(url: str, x: np.ndarray) -> np.ndarray:
    tensor = triton.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    with client(url) as c:
        return np.asarray(c.infer("resnet", [tensor]).as_numpy("probabilities"))


def test_inputs_and_outputs_in_shared_memory_match_binary_tensors(server: str, regions: Any,
                                                                  fashion_images: np.ndarray) -> None:
    x = images(fashion_images, 16)
    name_in, key_in, handle_in = regions(x.nbytes)
    name_out, key_out, handle_out = regions(16 * PROBABILITIES)
    shm.set_shared_memory_region(handle_in, [x])
    with client(server) as c:
        assert "system_shared_memory" in c.get_server_metadata()["extensions"]
        c.register_system_shared_memory(name_in, key_in, x.nbytes)
        c.register_system_shared_memory(name_out, key_out, 16 * PROBABILITIES)
        status = {r["name"]: r for r in c.get_system_shared_memory_status()}
        assert status[name_in] == {"name": name_in, "key": key_in, "offset": 0, "byte_size": x.nbytes}
    expected = binary_answer(server, x)
    for _ in range(6):  # new connections, which either process may take: each opens the region itself
        handle_out_view = np.zeros(16 * 10, np.float32)
        shm.set_shared_memory_region(handle_out, [handle_out_view])  # cleared: the answer must be written anew
        result = infer_shared(server, x, name_in, name_out)
        described = result.get_output("probabilities")
        assert described["shape"] == [16, 10] and described["datatype"] == "FP32"
        assert "data" not in described and described["parameters"] == {"shared_memory_byte_size": 16 * PROBABILITIES}
        got = shm.get_contents_as_numpy(handle_out, np.float32, [16, 10])
        np.testing.assert_allclose(got, expected, atol=1e-6)
    with client(server) as c:
        c.unregister_system_shared_memory(name_in)
        assert name_in not in {r["name"] for r in c.get_system_shared_memory_status()}
    for _ in range(4):  # unregistered through one process: gone in both
        with pytest.raises(InferenceServerException, match=f"no system shared memory region '{name_in}'") as caught:
            infer_shared(server, x, name_in, name_out)
        assert caught.value.status() == "404"


def test_several_tensors_at_offsets_of_one_region(server: str, regions: Any, vowels_batch: Any) -> None:
    """The LSTM's two inputs (FP32 frames and INT64 lengths) and its output, all in one region."""
    sequence, lengths = vowels_batch
    size = sequence.nbytes + lengths.nbytes + len(lengths) * 4 * 9
    name, key, handle = regions(size)
    shm.set_shared_memory_region(handle, [sequence])
    shm.set_shared_memory_region(handle, [lengths], offset=sequence.nbytes)
    inputs = [triton.InferInput("sequence", list(sequence.shape), "FP32"),
              triton.InferInput("lengths", list(lengths.shape), "INT64")]
    inputs[0].set_shared_memory(name, sequence.nbytes)
    inputs[1].set_shared_memory(name, lengths.nbytes, offset=sequence.nbytes)
    output = triton.InferRequestedOutput("probabilities")
    output.set_shared_memory(name, len(lengths) * 4 * 9, offset=sequence.nbytes + lengths.nbytes)
    with client(server) as c:
        c.register_system_shared_memory(name, key, size)
        c.infer("lstm", inputs, outputs=[output])
        direct = [triton.InferInput("sequence", list(sequence.shape), "FP32"),
                  triton.InferInput("lengths", list(lengths.shape), "INT64")]
        direct[0].set_data_from_numpy(sequence)
        direct[1].set_data_from_numpy(lengths)
        expected = c.infer("lstm", direct).as_numpy("probabilities")
        c.unregister_system_shared_memory(name)
    got = shm.get_contents_as_numpy(handle, np.float32, [len(lengths), 9], offset=sequence.nbytes + lengths.nbytes)
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.fixture(scope="module")
def vowels_batch(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from training.data import load_japanese_vowels

    frames = [np.asarray(s, np.float32) for s in load_japanese_vowels(data_dir).test_sequences[:4]]
    width = max(len(f) for f in frames)
    sequence = np.zeros((len(frames), width, 12), np.float32)
    for i, f in enumerate(frames):
        sequence[i, :len(f)] = f
    return sequence, np.array([len(f) for f in frames], np.int64)


def test_concurrent_clients_each_get_their_own_answer(server: str, regions: Any, fashion_images: np.ndarray) -> None:
    """Twelve clients at once, each with its own pictures and output slot: batched together, answered apart."""
    count = 12
    xs = [images(fashion_images, 2, start=2 * i) for i in range(count)]
    name_in, key_in, handle_in = regions(count * 2 * IMAGE_BYTES)
    name_out, key_out, handle_out = regions(count * 2 * PROBABILITIES)
    for i, x in enumerate(xs):
        shm.set_shared_memory_region(handle_in, [x], offset=i * x.nbytes)
    with client(server) as c:
        c.register_system_shared_memory(name_in, key_in, count * 2 * IMAGE_BYTES)
        c.register_system_shared_memory(name_out, key_out, count * 2 * PROBABILITIES)

    def one(i: int) -> None:
        tensor = triton.InferInput("image", [2, 1, 28, 28], "FP32")
        tensor.set_shared_memory(name_in, 2 * IMAGE_BYTES, offset=i * 2 * IMAGE_BYTES)
        output = triton.InferRequestedOutput("probabilities")
        output.set_shared_memory(name_out, 2 * PROBABILITIES, offset=i * 2 * PROBABILITIES)
        with client(server) as c:
            c.infer("resnet", [tensor], outputs=[output])

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        list(pool.map(one, range(count)))
    expected = binary_answer(server, np.concatenate(xs))
    got = shm.get_contents_as_numpy(handle_out, np.float32, [count * 2, 10])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with client(server) as c:
        c.unregister_system_shared_memory()
        assert c.get_system_shared_memory_status() == []


def test_bad_regions_get_a_400_naming_the_problem_and_the_server_keeps_serving(
        server: str, regions: Any, fashion_images: np.ndarray) -> None:
    x = images(fashion_images, 4)
    name, key, handle = regions(4 * IMAGE_BYTES + 4 * PROBABILITIES)
    shm.set_shared_memory_region(handle, [x])
    with client(server) as c:
        with pytest.raises(InferenceServerException, match="no shared memory object '/nnserve-test-missing'"):
            c.register_system_shared_memory("missing", "/nnserve-test-missing", 64)
        with pytest.raises(InferenceServerException, match="holds"):
            c.register_system_shared_memory("too-big", key, 10 * IMAGE_BYTES)  # past the object's end
        c.register_system_shared_memory(name, key, 4 * IMAGE_BYTES + 4 * PROBABILITIES)
        with pytest.raises(InferenceServerException, match="already registered") as caught:
            c.register_system_shared_memory(name, key, 64)
        assert caught.value.status() == "409"

    def refused(byte_size: int, offset: int, out_size: int, match: str) -> None:
        tensor = triton.InferInput("image", [4, 1, 28, 28], "FP32")
        tensor.set_shared_memory(name, byte_size, offset=offset)
        output = triton.InferRequestedOutput("probabilities")
        output.set_shared_memory(name, out_size, offset=4 * IMAGE_BYTES)
        with client(server) as c, pytest.raises(InferenceServerException, match=match) as caught:
            c.infer("resnet", [tensor], outputs=[output])
        assert caught.value.status() == "400"

    refused(3 * IMAGE_BYTES, 0, 4 * PROBABILITIES, f"needs {4 * IMAGE_BYTES} bytes")  # the shape needs more
    refused(4 * IMAGE_BYTES, 4 * IMAGE_BYTES, 4 * PROBABILITIES, "run past shared memory region")
    refused(4 * IMAGE_BYTES, 0, 4 * PROBABILITIES - 4, "do not fit the 156 bytes")  # the answer is larger

    # beside them, in the same moment, good requests over shared memory and over the body succeed
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        bad = pool.submit(refused, 4 * IMAGE_BYTES, 4 * IMAGE_BYTES, 4 * PROBABILITIES, "run past")
        good = [pool.submit(binary_answer, server, x) for _ in range(3)]
        bad.result()
        expected = good[0].result()
    infer_shared(server, x, name, name, out_offset=4 * IMAGE_BYTES)
    got = shm.get_contents_as_numpy(handle, np.float32, [4, 10], offset=4 * IMAGE_BYTES)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with client(server) as c:
        c.unregister_system_shared_memory(name)


def test_a_shrunk_object_is_refused_not_a_crash(server: str, fashion_images: np.ndarray) -> None:
    """The client truncates its object under a registered region: a 400 naming both sizes, and the server lives."""
    x = images(fashion_images, 1)
    name = f"nnserve-test-{uuid.uuid4().hex[:12]}"
    path = Path("/dev/shm") / name
    path.write_bytes(x.tobytes() + bytes(PROBABILITIES))
    try:
        with client(server) as c:
            c.register_system_shared_memory(name, f"/{name}", IMAGE_BYTES + PROBABILITIES)
            for _ in range(4):
                infer_shared(server, x, name, name, out_offset=IMAGE_BYTES)
            path.write_bytes(b"")  # truncated to nothing
            for _ in range(4):
                with pytest.raises(InferenceServerException, match=r"which holds 0\b"):
                    infer_shared(server, x, name, name, out_offset=IMAGE_BYTES)
            c.unregister_system_shared_memory(name)
            assert c.is_server_live() and c.is_model_ready("resnet")
    finally:
        path.unlink()


def test_the_extension_is_off_unless_asked_for(models_dir: Path) -> None:
    with nnserve_process(models_dir, "--no-access-log", "--workers", "1", "--model", "mlp") as (url, _):
        response = httpx.post(f"{url}/v2/systemsharedmemory/region/a/register",
                              json={"key": "/a", "offset": 0, "byte_size": 4})
        assert response.status_code == 400 and "start it with --shared-memory" in response.json()["error"]
        infer = {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "parameters": {
            "shared_memory_region": "a", "shared_memory_byte_size": 3136}}]}
        response = httpx.post(f"{url}/v2/models/mlp/infer", json=infer)
        assert response.status_code == 400 and "--shared-memory" in response.json()["error"]
        assert "system_shared_memory" not in httpx.get(f"{url}/v2").json()["extensions"]
