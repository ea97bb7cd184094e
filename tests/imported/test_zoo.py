"""Real models nobody here wrote, served after ``nnserve import``: the ``onnx`` package's test models against
their reference outputs, a pretrained document-orientation classifier answering picture uploads with its labels,
a text detector taking pictures of any size, and a voice-activity model with a recurrent state; bad input for them
refused naming what was expected and what came, while a valid request beside it is answered."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image, ImageDraw, ImageFont

from tests.imported.clients import assert_same, binary_request, direct, post_binary, via_triton
from tests.imported.conftest import LIGHT_MODELS, RANDOM_WEIGHT_MODELS, Served
from tests.zoo import onnx_test_model


def reference_input(path: str) -> np.ndarray:
    """The input the onnx backend test feeds its light models: arange(n) / n in the input's shape."""
    graph = onnx.load(path).graph
    initializers = {i.name for i in graph.initializer}
    (tensor,) = [i for i in graph.input if i.name not in initializers]
    shape = tuple(d.dim_value or 1 for d in tensor.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_onnx_test_models_give_their_reference_outputs(served: Served, name: str) -> None:
    """The real graphs load, warm up and serve unbatched. Their weights are constant (every class 0.001, or 0.46
    for DenseNet, whatever the input), so this cannot tell a picture that arrived garbled: the orientation
    classifier, the text detector and the torchvision exports (tests/imported/test_module_export.py) do."""
    model, expected_file = onnx_test_model(name)
    expected = numpy_helper.to_array(onnx.load_tensor(str(expected_file)))
    x = reference_input(str(model))
    metadata = httpx.get(f"{served.url}/v2/models/onnx-{name}").json()
    (input_name,) = [i["name"] for i in metadata["inputs"]]
    assert metadata["parameters"]["max_batch_size"] == 0  # a fixed batch of one: served unbatched
    got = via_triton(served.url, f"onnx-{name}", {input_name: x}, [metadata["outputs"][0]["name"]], binary=True)
    np.testing.assert_allclose(next(iter(got.values())), expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", RANDOM_WEIGHT_MODELS)
def test_the_same_architectures_with_random_weights_answer_each_picture_as_onnxruntime_does(served: Served,
                                                                                           name: str) -> None:
    """With weights that make the answer depend on the picture, a picture garbled on its way (bytes misread,
    axes swapped) would show: each of two pictures, served unbatched, gets exactly a direct run's answer, and the
    two answers differ by far more than the tolerance."""
    model = f"onnx-{name}-random"
    path = served.repository / model / "1" / "model.onnx"
    metadata = httpx.get(f"{served.url}/v2/models/{model}").json()
    (input_name,) = [i["name"] for i in metadata["inputs"]]
    output = metadata["outputs"][0]["name"]
    rng = np.random.default_rng(3)
    answers = []
    for binary in (True, False):
        picture = rng.random((1, 3, 224, 224)).astype(np.float32)
        got = via_triton(served.url, model, {input_name: picture}, [output], binary)[output]
        assert_same(got, direct(path, {input_name: picture})[output], f"{model} binary={binary}")
        answers.append(got)
    assert np.abs(answers[0] - answers[1]).max() > 100 * (1e-6 + 1e-5 * np.abs(answers[0]).max())


def text_page() -> Image.Image:
    page = Image.new("RGB", (600, 800), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=22)
    for i in range(22):
        draw.text((40, 40 + 32 * i), f"Line {i}: the quick brown fox jumps over the lazy dog {i * 7}", fill="black",
                  font=font)
    return page


def test_a_pretrained_orientation_classifier_labels_uploaded_pictures(served: Served) -> None:
    page = text_page()
    answers = {}
    for angle in (0, 90, 180, 270):  # PIL turns counter-clockwise; the model's labels are clockwise degrees
        buffer = io.BytesIO()
        page.rotate(angle, expand=True).save(buffer, format="JPEG", quality=90)
        response = httpx.post(f"{served.url}/predict", data={"model": "orientation", "top_k": "4"},
                              files={"file": ("page.jpg", buffer.getvalue(), "image/jpeg")})
        assert response.status_code == 200, response.text
        prediction = response.json()["predictions"][0]
        assert len(prediction["top_k"]) == 4 and prediction["probability"] > 0.5
        answers[angle] = prediction["label"]
    assert answers == {0: "0", 90: "270", 180: "180", 270: "90"}


def test_the_orientation_classifier_over_the_protocol_equals_onnxruntime(served: Served) -> None:
    x = np.random.default_rng(0).normal(size=(3, 3, 224, 224)).astype(np.float32)
    expected = direct(served.repository / "orientation" / "1" / "model.onnx", {"x": x})
    got = via_triton(served.url, "orientation", {"x": x}, list(expected), binary=True)
    for name, array in expected.items():
        assert_same(got[name], array, name)


async def test_a_text_detector_takes_pictures_of_any_size_each_its_own(served: Served) -> None:
    rng = np.random.default_rng(1)
    inputs = [rng.random((1, 3, h, w)).astype(np.float32) for h, w in ((64, 96), (96, 64), (64, 96), (128, 128))]

    async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
        results = await asyncio.gather(*[post_binary(client, "text-detector", {"x": x}) for x in inputs])
    for x, got in zip(inputs, results, strict=True):
        expected = direct(served.repository / "text-detector" / "1" / "model.onnx", {"x": x})
        for name, array in expected.items():
            assert_same(got[name], array, f"{name} for {x.shape}")


def test_a_stateful_voice_activity_model_runs_unbatched_with_its_state(served: Served) -> None:
    metadata = httpx.get(f"{served.url}/v2/models/silero-vad").json()
    assert metadata["parameters"]["max_batch_size"] == 0 and "state" in metadata["parameters"]["batching"]
    t = np.arange(576) / 16000
    state = np.zeros((2, 2, 128), np.float32)
    model_file = served.repository / "silero-vad" / "1" / "model.onnx"
    for chunk in range(3):  # two streams at once, the state carried from call to call as a client would
        audio = np.stack([np.sin(2 * np.pi * 440 * (t + chunk)), np.zeros(576)]).astype(np.float32)
        feeds: dict[str, np.ndarray] = {"input": audio, "state": state, "sr": np.array(16000, np.int64)}
        expected = direct(model_file, feeds)
        got = via_triton(served.url, "silero-vad", feeds, ["output", "stateN"], binary=chunk % 2 == 0)
        assert_same(got["output"], expected["output"], "output")
        assert_same(got["stateN"], expected["stateN"], "stateN")
        state = got["stateN"]


def _binary_body(name: str, array: np.ndarray, datatype: str = "FP32", shape: list[int] | None = None
                 ) -> dict[str, Any]:
    return binary_request({"inputs": [{"name": name, "shape": shape or list(array.shape), "datatype": datatype,
                                       "parameters": {"binary_data_size": array.nbytes}}]}, array.tobytes())


PICTURE = (1, 3, 224, 224)
NAN_PICTURE = np.zeros(PICTURE, np.float32)
NAN_PICTURE[0, 1, 2, 3] = np.nan
BAD_FOR_REAL_MODELS = [
    ("FP64 for FP32", "orientation", _binary_body("x", np.zeros(PICTURE), "FP64"), "invalid_datatype",
     ["input 'x'", "expected datatype FP32", "'FP64'"]),
    ("a picture a pixel too wide", "orientation", _binary_body("x", np.zeros((1, 3, 224, 225), np.float32)),
     "invalid_shape", ["expected shape [-1, 3, 224, 224]", "received [1, 3, 224, 225]"]),
    ("a NaN pixel", "orientation", _binary_body("x", NAN_PICTURE), "invalid_value", ["1 value(s) are NaN"]),
    ("two pictures for a fixed batch of one", "onnx-resnet50",
     _binary_body("gpu_0/data_0", np.zeros((2, 3, 224, 224), np.float32)), "invalid_shape",
     ["expected shape [1, 3, 224, 224]", "received [2, 3, 224, 224]"]),
    ("bytes that do not fill the shape", "text-detector",
     _binary_body("x", np.zeros((1, 3, 64, 64), np.float32), shape=[1, 3, 64, 65]), "invalid_shape",
     ["shape [1, 3, 64, 65] of FP32 needs 49920 bytes", "binary_data_size is 49152"]),
]


@pytest.mark.parametrize("model,request_kwargs,code,words", [b[1:] for b in BAD_FOR_REAL_MODELS],
                         ids=[b[0] for b in BAD_FOR_REAL_MODELS])
async def test_bad_input_for_a_real_model_fails_alone(served: Served, model: str, request_kwargs: dict[str, Any],
                                                      code: str,
                                                      words: list[str]) -> None:
    x = np.random.default_rng(4).normal(size=PICTURE).astype(np.float32)
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
        bad, good = await asyncio.gather(client.post(f"/v2/models/{model}/infer", **request_kwargs),
                                         post_binary(client, "orientation", {"x": x}))
    assert bad.status_code == 400, bad.text
    assert bad.json()["code"] == code
    for word in words:
        assert word in bad.json()["error"], bad.json()["error"]
    expected = direct(served.repository / "orientation" / "1" / "model.onnx", {"x": x})
    for name, array in expected.items():
        assert_same(good[name], array, name)
