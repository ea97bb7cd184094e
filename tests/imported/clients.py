"""Clients of a served model, and the reference they are compared with: a direct onnxruntime run of the same
file, the unmodified tritonclient, and a plain httpx request with binary tensors both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import tritonclient.http as triton
from tritonclient.utils import np_to_triton_dtype


def direct(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same file in a plain onnxruntime session (strings in as str, out as bytes)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_feeds = {n: np.vectorize(bytes.decode, otypes=[object])(a) if a.dtype == object else a
                 for n, a in feeds.items()}
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(names, ort_feeds), strict=True))
    return {n: np.vectorize(str.encode, otypes=[object])(a) if a.dtype == object else a for n, a in out.items()}


def via_triton(url: str, model: str, feeds: dict[str, np.ndarray], outputs: list[str], binary: bool,
               ) -> dict[str, np.ndarray]:
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    inputs = []
    for name, array in feeds.items():
        tensor = triton.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    requested = [triton.InferRequestedOutput(o, binary_data=binary) for o in outputs]
    result = client.infer(model, inputs, outputs=requested)
    got = {o: result.as_numpy(o) for o in outputs}
    client.close()
    return {n: np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(a)
            if a.dtype == object else a for n, a in got.items()}


# Where onnxruntime offers CUDA, the servers these tests start (``--providers auto``) compute on the GPU, whose
# convolutions and products run in TF32 by default: up to ~1e-4 from the CPU's float32 (an H100, docs/benchmarks.md).
SERVED_ON_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def assert_same(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    if expected.dtype.kind == "f":
        assert got.dtype == expected.dtype, what
        if SERVED_ON_CUDA:  # relative to the output's own scale: a 1000-class softmax's values are ~1e-3
            scale = float(np.abs(expected).max()) if expected.size else 0.0
            np.testing.assert_allclose(got, expected, rtol=1e-2, atol=2e-3 * scale + 1e-6, err_msg=what)
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-3 if expected.dtype == np.float16 else 1e-5,
                                       atol=1e-6, err_msg=what)
    else:
        assert got.tolist() == expected.tolist(), what


def binary_request(header: dict[str, Any], binary: bytes) -> dict[str, Any]:
    """httpx's keywords for an OIP request in Triton's binary extension: the JSON header, then the tensors' bytes."""
    head = orjson.dumps(header)
    return {"content": head + binary, "headers": {"Inference-Header-Content-Length": str(len(head))}}


async def post_binary(client: httpx.AsyncClient, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """OIP over HTTP with binary inputs and outputs (numeric tensors)."""
    header = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": np_to_triton_dtype(a.dtype),
                          "parameters": {"binary_data_size": a.nbytes}} for n, a in feeds.items()],
              "parameters": {"binary_data_output": True}}
    response = await client.post(f"/v2/models/{model}/infer",
                                 **binary_request(header, b"".join(a.tobytes() for a in feeds.values())))
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    offset, out = length, {}
    for described in orjson.loads(response.content[:length])["outputs"]:
        size = described["parameters"]["binary_data_size"]
        dtype = triton_to_np(described["datatype"])
        out[described["name"]] = np.frombuffer(response.content[offset:offset + size], dtype).reshape(
            described["shape"])
        offset += size
    return out


def triton_to_np(datatype: str) -> type:
    from tritonclient.utils import triton_to_np_dtype

    return triton_to_np_dtype(datatype)
