"""The page at / and the API endpoints it added, over a real app (ASGI): the page and its assets with their
security headers, a model version's card, published samples and their files, and POST /preview — each with bad
input answered by a clear 4xx naming what was expected and what came."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.config import ImageProcessor, ModelConfig, SequenceProcessor, read_config_file
from service.processors.image import normalize_pixels
from service.processors.sequence import sequences_to_tensors
from service.web.page import STATIC
from tests.service.conftest import metric_value, png_bytes, running_app
from tests.web.imported_models import XSS_LABELS

ASSETS = sorted(p.name for p in STATIC.iterdir() if p.suffix in (".js", ".css", ".svg"))


@pytest.fixture
async def client(page_repository: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(page_repository) as c:
        yield c


def config_of(repository: Path, name: str) -> ModelConfig:
    return ModelConfig.model_validate({**read_config_file(repository / name / "1"), "version": 1})


# -- the page and its assets ---------------------------------------------------------------------------------------
async def test_the_page_and_every_asset_it_loads_are_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy and "unsafe" not in policy
    assert "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff" and "<base" not in page.text
    referenced = set(re.findall(r'(?:src|href)="web/([^"]+)"', page.text))
    imported = {name for asset in ASSETS if asset.endswith(".js")
                for name in re.findall(r'from "\./([^"]+)"', (STATIC / asset).read_text())}
    assert referenced >= {"app.js", "style.css", "icon.svg"} and imported
    assert referenced | imported <= set(ASSETS), "the page refers to a file that is not served"
    for name in ASSETS:
        response = await client.get(f"/web/{name}")
        assert response.status_code == 200 and response.content == (STATIC / name).read_bytes()
        assert response.headers["content-security-policy"] == policy
        expected = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}[name.rsplit(".", 1)[1]]
        assert response.headers["content-type"].startswith(expected)
        again = await client.get(f"/web/{name}", headers={"if-none-match": response.headers["etag"]})
        assert again.status_code == 304 and not again.content


async def test_an_unknown_asset_is_a_404_naming_the_files_there_are(client: httpx.AsyncClient) -> None:
    for path in ("/web/nope.js", "/web/index.html", "/web/..%2Fpage.py", "/web/.hidden.js"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"
    assert "app.js" in (await client.get("/web/nope.js")).json()["error"]


def test_the_page_fetches_nothing_from_elsewhere_and_never_parses_html() -> None:
    """Only relative URLs (an absolute one would break under a prefix or reach outside); text from the server is
    never parsed as HTML, and nothing is evaluated."""
    for name in [*ASSETS, "index.html"]:
        text = (STATIC / name).read_text()
        outside = [u for u in re.findall(r"(?:https?:)?//[\w.-]+[^\s\"'`)]*", text) if "www.w3.org/2000/svg" not in u]
        assert not outside, (name, outside)
        assert not re.findall(r'(?:src|href)="/', text), name
        for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                       "setAttribute(\"style", "style=\""):
            assert unsafe not in text, (name, unsafe)


async def test_behind_a_proxy_the_page_names_its_prefix_and_the_api_answers_under_it(page_repository: Path,
                                                                                      fashion: Any) -> None:
    """--root-path /nnserve (a proxy strips it): uvicorn puts the prefix in front of every path, as here."""
    async with running_app(page_repository, root_path="/nnserve") as client:
        page = await client.get("/nnserve/")
        assert page.status_code == 200 and '<base href="/nnserve/">' in page.text
        assert (await client.get("/nnserve/web/app.js")).status_code == 200
        response = await client.post("/nnserve/predict",
                                     json={"model": "cnn", "inputs": fashion.test_images[:1].tolist()})
        assert response.status_code == 200 and response.json()["predictions"][0]["index"] == fashion.test_labels[0]
        sample = (await client.get("/nnserve/models/cnn/samples")).json()["samples"][0]
        assert (await client.get("/nnserve/" + sample["url"])).status_code == 200


def test_a_root_path_must_be_a_plain_path() -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    for bad in ("nnserve", "/nnserve/", '/a"><script>', "/a b"):
        with pytest.raises(ValidationError):
            Settings(root_path=bad)


# -- a version's card ----------------------------------------------------------------------------------------------
async def test_a_versions_card_is_the_one_models_lists(client: httpx.AsyncClient) -> None:
    listed = {card["name"]: card for card in (await client.get("/models")).json()["models"]}
    for name, card in listed.items():
        for path in (f"/models/{name}", f"/models/{name}/versions/{card['version']}"):
            response = await client.get(path)
            assert response.status_code == 200 and response.json() == card
    assert listed["xss"]["labels"] == XSS_LABELS and listed["xss"]["lacks"]
    missing = await client.get("/models/cnn/versions/7")
    assert missing.status_code == 404 and missing.json()["code"] == "version_not_found"
    assert "served: [1]" in missing.json()["error"]
    assert (await client.get("/models/nope")).json()["code"] == "model_not_found"
    bad = await client.get("/models/cnn/versions/one")
    assert bad.status_code == 400 and "non-negative integer, received 'one'" in bad.json()["error"]


# -- samples -------------------------------------------------------------------------------------------------------
async def test_image_samples_are_real_test_items_whose_files_predict_their_labels(
        client: httpx.AsyncClient, page_repository: Path, fashion: Any) -> None:
    body = (await client.get("/models/resnet/samples")).json()
    assert body["kind"] == "image" and body["source"] == "repository" and body["dataset"] == "fashion-mnist"
    labels = config_of(page_repository, "resnet").classification.labels  # type: ignore[union-attr]
    assert {s["index"] for s in body["samples"]} == set(range(10))
    files = []
    for sample in body["samples"]:
        assert sample["label"] == labels[sample["index"]] == fashion.labels[fashion.test_labels[sample["row"]]]
        response = await client.get(sample["url"] if sample["url"].startswith("/") else "/" + sample["url"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(response.content))), fashion.test_images[sample["row"]])
        files.append(("file", (sample["file"], response.content, "image/png")))
    answers = (await client.post("/predict", data={"model": "resnet"}, files=files)).json()["predictions"]
    for sample, answer in zip(body["samples"], answers, strict=True):
        assert (answer["label"] != sample["label"]) == ("note" in sample), sample  # the note says it is wrong
    assert (await client.get("/models/resnet/versions/1/samples")).json() == body


async def test_sequence_samples_carry_their_frames_for_predict(client: httpx.AsyncClient, vowels: Any) -> None:
    body = (await client.get("/models/lstm/samples")).json()
    assert body["kind"] == "sequence" and len(body["samples"]) >= 9
    inputs = [sample["inputs"] for sample in body["samples"]]
    for sample in body["samples"]:
        assert np.array_equal(np.asarray(sample["inputs"], dtype=np.float32), vowels.test_sequences[sample["row"]])
        csv = await client.get("/" + sample["url"])
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        assert len(csv.text.splitlines()) == len(sample["inputs"])
    answers = (await client.post("/predict", json={"model": "lstm", "inputs": inputs})).json()["predictions"]
    for sample, answer in zip(body["samples"], answers, strict=True):
        assert (answer["label"] != sample["label"]) == ("note" in sample), sample


async def test_a_model_with_no_processor_gets_an_example_of_every_input_that_predict_takes(
        client: httpx.AsyncClient, page_repository: Path) -> None:
    body = (await client.get("/models/doubler/samples")).json()
    assert body["kind"] == "tensors" and body["source"] == "signature" and len(body["samples"]) == 1
    example = body["samples"][0]["inputs"]
    config = config_of(page_repository, "doubler")
    assert {t.name: (t.datatype, [1, *t.shape[1:]]) for t in config.inputs} == \
        {name: (t["datatype"], t["shape"]) for name, t in example.items()}
    assert np.asarray(example["x"]["value"]).shape == (1, 3) and example["n"]["value"] == [[0, 0]]
    response = await client.post("/predict", json={"model": "doubler", "inputs": {
        "x": [[1.5, -2, 3]], "n": example["n"]["value"]}})
    outputs = response.json()["outputs"]
    assert outputs["y"] == {"datatype": "FP32", "shape": [1, 3], "data": [3.0, -4.0, 6.0]}
    assert outputs["m"] == {"datatype": "INT64", "shape": [1, 2], "data": [1, 1]}
    imported = (await client.get("/models/xss/samples")).json()  # an imported classifier: the same example
    assert imported["source"] == "signature" and imported["samples"][0]["inputs"]["features"]["shape"] == [1, 4]


async def test_sample_files_are_only_those_the_index_lists(client: httpx.AsyncClient) -> None:
    for path in ("/models/cnn/versions/1/samples/config.json", "/models/cnn/versions/1/samples/test-99999.png",
                 "/models/cnn/versions/1/samples/..%2Fconfig.json", "/models/doubler/versions/1/samples/x.png"):
        response = await client.get(path)
        assert response.status_code == 404, path
    response = await client.get("/models/cnn/versions/1/samples/test-99999.png")
    assert response.json()["code"] == "sample_not_found"
    assert "publishes no sample 'test-99999.png'" in response.json()["error"]
    assert "test-00000.png" in response.json()["error"]
    assert (await client.get("/models/cnn/versions/2/samples")).json()["code"] == "version_not_found"


# -- POST /preview -------------------------------------------------------------------------------------------------
def decoded(picture: dict[str, Any]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(picture["png"]))))


async def test_the_preview_is_exactly_what_predict_feeds_the_model(client: httpx.AsyncClient,
                                                                    page_repository: Path, fashion: Any) -> None:
    spec = config_of(page_repository, "cnn").processor
    assert isinstance(spec, ImageProcessor)
    pixels = fashion.test_images[3]
    picture = Image.fromarray(pixels).resize((56, 56), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    response = await client.post("/preview", data={"model": "cnn"}, files={"file": ("big.png", buffer.getvalue())})
    assert response.status_code == 200, response.text
    body = response.json()
    seen = body["pictures"][0]
    assert seen["source"] == "big.png" and (seen["width"], seen["height"], seen["inverted"]) == (28, 28, False)
    assert seen["steps"][0] == "read a PNG picture, 56x56, mode L" and "fitted into 28x28" in seen["steps"][-1]
    tensor = normalize_pixels(decoded(seen)[None], spec)
    assert body["tensors"]["image"]["shape"] == [1, 1, 28, 28] and body["tensors"]["image"]["datatype"] == "FP32"
    assert body["tensors"]["image"]["min"] == pytest.approx(float(tensor.min()))
    assert body["tensors"]["image"]["max"] == pytest.approx(float(tensor.max()))
    json_pixels = await client.post("/preview", json={"model": "cnn", "inputs": [pixels.tolist()]})
    assert np.array_equal(decoded(json_pixels.json()["pictures"][0]), pixels)


async def test_a_dark_on_light_picture_is_shown_inverted_with_the_reason(client: httpx.AsyncClient,
                                                                          fashion: Any) -> None:
    photo = Image.new("RGB", (90, 90), (250, 250, 245))
    photo.paste(Image.fromarray(255 - fashion.test_images[0]).convert("RGB").resize((60, 60)), (15, 15))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG")
    response = await client.post("/preview", data={"model": "mlp"}, files={"file": ("shoe.jpg", buffer.getvalue())})
    body = response.json()
    seen = body["pictures"][0]
    assert seen["inverted"] is True
    assert "converted to 8-bit greyscale" in seen["steps"]
    assert any(step.startswith("inverted: its border is light") for step in seen["steps"])
    assert decoded(seen)[0, 0] < 20 and decoded(seen)[14, 14] > 100  # a light item on black, like the dataset's


async def test_a_sequence_preview_holds_the_standardised_frames(client: httpx.AsyncClient, page_repository: Path,
                                                                  vowels: Any) -> None:
    spec = config_of(page_repository, "lstm").processor
    assert isinstance(spec, SequenceProcessor)
    frames = vowels.test_sequences[5]
    body = (await client.post("/preview", json={"model": "lstm", "inputs": [frames.tolist()]})).json()
    expected = sequences_to_tensors([frames], spec)
    assert body["pictures"] == [] and body["tensors"]["lengths"]["data"] == [len(frames)]
    assert np.allclose(body["tensors"]["sequence"]["data"], expected["sequence"], atol=1e-6)


async def test_a_preview_is_not_an_inference(client: httpx.AsyncClient, fashion: Any) -> None:
    before = (await client.get("/metrics")).text
    await client.post("/preview", data={"model": "cnn"}, files={"file": ("a.png", png_bytes(fashion.test_images[0]))})
    after = (await client.get("/metrics")).text
    for name in ("nnserve_requests_total", "nnserve_batch_size_count"):
        assert metric_value(after, name, model="cnn") == metric_value(before, name, model="cnn")


@pytest.mark.parametrize("request_kwargs,status,code,words", [
    ({"data": {"model": "cnn"}, "files": {"file": ("broken.png", b"\x89PNG\r\n\x1a\nnot really")}}, 422,
     "invalid_image", ["broken.png", "cannot read image header"]),
    ({"json": {"model": "cnn", "inputs": [[[0] * 27] * 28]}}, 400, "invalid_shape",
     ["expected shape [N, 28, 28]", "received [1, 28, 27]"]),
    ({"json": {"model": "cnn", "inputs": [[[300] * 28] * 28]}}, 400, "invalid_value", ["[0, 255]", "300"]),
    ({"json": {"model": "lstm", "inputs": [[[0.1] * 5]]}}, 400, "invalid_shape", ["[T, 12]", "[1, 5]"]),
    ({"data": {"model": "lstm"}, "files": {"file": ("a.png", b"x")}}, 415, "unsupported_media_type",
     ["takes sequences"]),
    ({"json": {"model": "doubler", "inputs": {"x": [[1, 2, 3]]}}}, 415, "unsupported_media_type",
     ["no processor", "nothing to preview"]),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "malformed_request",
     ["not valid JSON"]),
    ({"json": {"inputs": []}}, 400, "malformed_request", ["missing \"model\""]),
    ({"json": {"model": "nope", "inputs": []}}, 404, "model_not_found", ["'nope'", "served: cnn"]),
])
async def test_a_bad_preview_says_what_was_expected_and_what_came(client: httpx.AsyncClient,
                                                                   request_kwargs: dict[str, Any], status: int,
                                                                   code: str, words: list[str]) -> None:
    response = await client.post("/preview", **request_kwargs)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    for word in words:
        assert word in response.json()["error"]


async def test_the_steps_name_transparency_only_where_there_is_some(client: httpx.AsyncClient) -> None:
    steps = []
    for alpha in (255, 0):
        picture = Image.new("RGBA", (40, 40), (255, 255, 255, alpha))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        response = await client.post("/preview", data={"model": "cnn"}, files={"file": ("a.png", buffer.getvalue())})
        steps.append(response.json()["pictures"][0]["steps"])
    assert not any("transparent" in step for step in steps[0])  # an opaque canvas, as the page's drawing pad sends
    assert "transparent parts composited over dark (0)" in steps[1]


async def test_a_card_says_when_a_model_publishes_no_samples(client: httpx.AsyncClient) -> None:
    cards = {card["name"]: card for card in (await client.get("/models")).json()["models"]}
    assert not any("samples" in lack for lack in cards["cnn"]["lacks"])
    assert any(lack.startswith("published samples") and "signature" in lack for lack in cards["doubler"]["lacks"])


def test_the_wheel_carries_the_page(tmp_path: Path) -> None:
    """The image installs nnserve from its wheel: the page's files must be in it (package data)."""
    import subprocess
    import sys
    import zipfile

    from tests.conftest import ROOT

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                    "-w", str(tmp_path)], check=True, capture_output=True)
    names = set(zipfile.ZipFile(next(tmp_path.glob("nnserve-*.whl"))).namelist())
    assert {f"service/web/static/{p.name}" for p in STATIC.iterdir()} <= names
