"""The page in a real browser (Chromium, driven by Playwright) against a real ``nnserve serve`` process: it loads
clean, a real Fashion-MNIST PNG, a drawing (mouse, pen, touch), a pasted picture and a dark-on-light photo are
classified, a test utterance predicts, an imported model's tensor form round-trips, a corrupt file shows the
server's own error and the page goes on working, HTML in labels stays text, a path prefix works, a phone-width
screen and the keyboard alone suffice, and "send 200 at once" shows batches larger than one. Screenshots of each
view go to test-artifacts/web/ (not committed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from service.config import read_config_file
from service.hosting.launcher import serve_subprocess
from service.report import TrainingReport
from service.samples import SampleIndex
from tests.conftest import MODELS_DIR
from tests.service.conftest import metric_value, png_bytes
from tests.web.imported_models import XSS_DESCRIPTION, XSS_LABELS
from tests.web.proxy import prefix_proxy

expect = pytest.importorskip("playwright.sync_api", reason="browser tests: the playwright package is not installed "
                             "(pip install -e '.[dev]')").expect
from tests.web.browser import ENGINES, Watched, launch, watch  # noqa: E402 (needs playwright)

WAIT_MS = 15_000


@pytest.fixture(scope="module", params=ENGINES)
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    yield from launch(request.param)


def chromium(page: Any) -> bool:
    """Only Chromium takes pen and touch input from a test (its DevTools protocol's Input domain)."""
    return bool(page.context.browser.browser_type.name == "chromium")


@pytest.fixture(scope="module")
def server(page_repository: Path) -> Iterator[str]:
    with serve_subprocess(page_repository, ["--no-access-log"]) as (url, _, _):
        yield url


@pytest.fixture(scope="module")
def rooted_server(page_repository: Path) -> Iterator[str]:
    """A second server, told by --root-path that a proxy serves it under /nnserve."""
    args = ["--no-access-log", "--root-path", "/nnserve", "--model", "mlp", "--model", "doubler:1",
            "--model", "doubler:2"]
    with serve_subprocess(page_repository, args) as (url, _, _):
        yield url


@pytest.fixture
def tab(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        yield watch(page)
    finally:
        context.close()


def open_view(tab: Watched, url: str, fragment: str) -> Any:
    page = tab.page
    page.goto(f"{url}/#/{fragment}")
    page.wait_for_selector("#panel :is(.card, .try, .live, .error)")
    return page


def predicted(page: Any) -> str:
    return str(page.locator(".answer .verdict .predicted").first.inner_text(timeout=WAIT_MS))


def test_every_view_of_every_model_loads_with_no_error_and_no_request_elsewhere(server: str, tab: Watched) -> None:
    page = tab.page
    page.goto(server + "/")
    page.wait_for_selector("#models a")
    names = page.locator("#models .model-name").all_inner_texts()
    assert names == sorted([p.name for p in MODELS_DIR.iterdir() if p.is_dir()] + ["doubler", "xss"])
    assert re.fullmatch(r"nnserve \S+ · ready", page.locator("#server").inner_text())
    for name in names:
        for view in ("card", "try", "live"):
            page.goto(f"{server}/#/{name}/1/{view}")
            page.wait_for_selector(f"#panel .{'card' if view == 'card' else view}")
            if view == "card":
                page.wait_for_selector(".readiness .ok")
            if view == "card" or name == "cnn":  # the other views have tests (and screenshots) of their own
                tab.screenshot(f"{view}-{name}")
    tab.assert_clean()
    assert all(u.startswith(server + "/") for u in tab.urls), [u for u in tab.urls if not u.startswith(server)]
    assert any(u.endswith("/metrics") for u in tab.urls)
    page.goto(f"{server}/#/cnn/1/card")
    page.wait_for_selector(".readiness .ok")
    text = page.locator("#panel").inner_text()
    committed = MODELS_DIR / "cnn" / "1"
    report = TrainingReport.load(committed)
    assert report is not None and report.metrics is not None
    for fact in (f"{report.metrics.onnx_test_accuracy:.2%}", "Shirt", "fashion-mnist", "sha256",
                 "CPUExecutionProvider", "dynamic, up to 64 per call", "torch.onnx.export",
                 read_config_file(committed)["sha256"]):
        assert fact in text, fact
    page.goto(f"{server}/#/doubler/2/card")
    page.wait_for_selector(".lacks")
    assert "training report" in page.locator(".lacks").inner_text()


def test_uploading_a_real_fashion_mnist_png_shows_its_label(server: str, tab: Watched, fashion: Any,
                                                             tmp_path: Path) -> None:
    page = open_view(tab, server, "resnet/1/try")
    for row in (0, 2, 5):  # Ankle boot, Trouser, Trouser ... each one the ResNet gets right
        path = tmp_path / f"item-{row}.png"
        path.write_bytes(png_bytes(fashion.test_images[row]))
        page.set_input_files("#picture-file", str(path))
        label = fashion.labels[fashion.test_labels[row]]
        expect(page.locator(".status")).to_have_text(re.compile("^Sent " + re.escape(path.name)))
        assert predicted(page) == label
        assert page.locator(".answer .bar-label").first.inner_text() == label
        assert "version 1 of resnet answered in" in page.locator(".answered").inner_text()
        assert page.locator(".steps li").first.inner_text() == "read a PNG picture, 28x28, mode L"
    assert page.eval_on_selector("img.seen", "img => [img.naturalWidth, img.naturalHeight]") == [28, 28]
    tab.screenshot("try-image-upload")
    tab.assert_clean()


def test_drawing_with_mouse_and_pen_produces_a_prediction(server: str, tab: Watched, browser: Any) -> None:
    page = open_view(tab, server, "cnn/1/try")
    box = page.locator("canvas.pad").bounding_box()
    x, y = box["x"], box["y"]
    page.mouse.move(x + 90, y + 30)
    page.mouse.down()
    for step in range(12):  # a trouser: two legs
        page.mouse.move(x + 90 - step * 2, y + 30 + step * 20)
    page.mouse.up()
    page.wait_for_selector(".answer .verdict")
    labels = page.locator(".answer .bar-label").all_inner_texts()
    assert len(labels) == 5 and predicted(page) in labels
    assert any("fitted into 28x28" in s for s in page.locator(".steps li").all_inner_texts())
    assert "your drawing" in page.locator(".status").inner_text()
    if chromium(page):
        page.evaluate("document.querySelector('.answer').remove()")
        cdp = page.context.new_cdp_session(page)  # a pen stroke, as a tablet's stylus sends it
        for kind, dy in (("mousePressed", 30), ("mouseMoved", 120), ("mouseMoved", 250), ("mouseReleased", 250)):
            cdp.send("Input.dispatchMouseEvent", {"type": kind, "x": x + 190, "y": y + dy, "button": "left",
                                                  "buttons": 1 if kind != "mouseReleased" else 0, "clickCount": 1,
                                                  "pointerType": "pen", "force": 0.6})
        page.wait_for_selector(".answer .verdict")
        assert predicted(page) in page.locator(".answer .bar-label").all_inner_texts()
    tab.screenshot("try-drawing")
    tab.assert_clean()


def test_a_pasted_picture_and_a_test_image_are_classified(server: str, tab: Watched, fashion: Any) -> None:
    page = open_view(tab, server, "mlp/1/try")
    data = list(png_bytes(fashion.test_images[1]))  # a Pullover
    page.evaluate("""bytes => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], "clip.png", {type: "image/png"}));
        document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true}));
    }""", data)
    if chromium(page):
        expect(page.locator(".status")).to_have_text(re.compile("pasted picture"))
        assert predicted(page) == "Pullover"
    else:  # Firefox gives a script-made paste event an empty clipboard of its own: the page says it holds nothing
        expect(page.locator(".status")).to_have_text("The clipboard holds no picture.")
    page.click("button.test-image")
    page.wait_for_selector(".answer .right, .answer .wrong")
    verdict = page.locator(".answer .verdict").inner_text()
    assert "true label: Ankle boot" in verdict and predicted(page) == "Ankle boot"
    tab.assert_clean()


def test_a_dark_on_light_photo_is_inverted_and_the_page_says_so(server: str, tab: Watched, fashion: Any,
                                                                tmp_path: Path) -> None:
    photo = Image.new("RGB", (240, 200), (244, 242, 236))  # a white table
    photo.paste(Image.fromarray(255 - fashion.test_images[0]).convert("RGB").resize((168, 168)), (36, 16))
    path = tmp_path / "shoe.jpg"
    photo.save(path, format="JPEG", quality=92)
    page = open_view(tab, server, "cnn/1/try")
    page.set_input_files("#picture-file", str(path))
    page.wait_for_selector(".steps li.inverted")
    assert "its border is light" in page.locator(".steps li.inverted").inner_text()
    assert predicted(page) == "Ankle boot"
    assert "inverted by the server" in page.locator(".note").inner_text()
    tab.screenshot("try-image-inverted")
    tab.assert_clean()


def test_a_test_utterance_is_plotted_and_predicted(server: str, tab: Watched, vowels: Any) -> None:
    page = open_view(tab, server, "lstm/1/try")
    page.wait_for_selector("button.utterance")
    published = SampleIndex.load(MODELS_DIR / "lstm" / "1")
    assert published is not None
    n, item = next((n, i) for n, i in enumerate(published.items) if i.note is None and n > 0)  # one it gets right
    page.locator("button.utterance").nth(n).click()
    assert page.locator(".picked").inner_text().startswith(f"Test-set row {item.row}, true label {item.label}")
    assert page.locator(".channels polyline").count() == 12
    assert f"over {len(vowels.test_sequences[item.row])} frames" in page.locator(".channels figcaption").inner_text()
    page.click("button.predict")
    page.wait_for_selector(".answer .verdict")
    assert predicted(page) == item.label
    assert f"right (true label: {item.label})" in page.locator(".verdict").inner_text()
    tab.screenshot("try-sequence")
    page.fill("#frames", "[[1, 2]]")  # an edited utterance of the wrong width: the server's message, by the input
    page.click("button.predict")
    page.wait_for_selector(".answer-slot .error")
    error = page.locator(".answer-slot .error").inner_text()
    assert "400 invalid_shape" in error and "expected shape [T, 12]" in error and "the edited frames" in error
    assert [s for s, _ in tab.statuses if s >= 400] == [400] and not tab.errors() and not tab.failed


def test_an_imported_models_tensor_form_round_trips(server: str, tab: Watched) -> None:
    page = open_view(tab, server, "doubler/2/try")
    expect(page.locator("textarea[data-input=x]")).not_to_have_value("")
    assert page.input_value("textarea[data-input=x]") == "[[0,0,0]]"
    assert page.input_value("textarea[data-input=n]") == "[[0,0]]"
    assert "x FP32 [?, 3]" in page.locator(".tensor-form").inner_text()
    page.fill("textarea[data-input=x]", "[[1.25, -2, 3], [0.5, 0, 7]]")
    page.fill("textarea[data-input=n]", "[[41, -1], [9, 99]]")
    page.click("button.predict")
    page.wait_for_selector("table.tensors")
    rows = {r.get_attribute("data-output"): r.locator("td").all_inner_texts()
            for r in page.locator("table.tensors tbody tr").all()}
    assert rows["y"] == ["y", "FP32", "[2, 3]", "[2.5,-4,6,1,0,14]"]
    assert rows["m"] == ["m", "INT64", "[2, 2]", "[42,0,10,100]"]
    tab.screenshot("try-tensors")
    page.fill("textarea[data-input=n]", "[[1, 2], [3]")
    page.click("button.predict")
    assert "not JSON" in page.locator(".field-error .error").inner_text()
    tab.assert_clean()


def test_a_corrupt_file_shows_the_servers_error_and_the_page_still_works(server: str, tab: Watched, fashion: Any,
                                                                          tmp_path: Path) -> None:
    broken = png_bytes(fashion.test_images[0])[:120]
    path = tmp_path / "broken.png"
    path.write_bytes(broken)
    expected = httpx.post(f"{server}/predict", data={"model": "cnn"}, files={"file": ("broken.png", broken)}).json()
    page = open_view(tab, server, "cnn/1/try")
    page.set_input_files("#picture-file", str(path))
    page.wait_for_selector(".answer-slot .error")
    error = page.locator(".answer-slot .error")
    assert error.locator("strong").inner_text() == f"422 {expected['code']}"
    assert error.locator(".message").inner_text() == expected["error"]
    assert "broken.png (image/png, 120 bytes)" in error.locator(".cause").inner_text()
    assert page.locator(".preview .error .message").inner_text() == expected["error"]
    tab.screenshot("error-corrupt-file")
    page.click("button.test-image")  # the page goes on working
    page.wait_for_selector(".answer .verdict")
    assert predicted(page) == "Ankle boot"
    assert [s for s, _ in tab.statuses if s >= 400] == [422, 422]  # /preview and /predict, nothing else
    assert not tab.errors() and not tab.failed


def test_html_in_an_imported_models_labels_and_description_is_shown_as_text(server: str, tab: Watched) -> None:
    page = open_view(tab, server, "xss/1/card")
    assert page.locator("ol.labels li").all_inner_texts() == XSS_LABELS
    assert page.locator(".description").inner_text() == XSS_DESCRIPTION
    assert page.locator("#models a[href='#/xss/1/card'] .model-meta").inner_text() == "v1 · <i>task</i>"
    page.goto(f"{server}/#/xss/1/try")
    page.wait_for_selector("textarea[data-input=features]")
    expect(page.locator("textarea[data-input=features]")).not_to_have_value("")
    page.fill("textarea[data-input=features]", "[[1, 2, 3, 4]]")
    page.click("button.predict")
    page.wait_for_selector(".answer .bar-label")
    assert sorted(page.locator(".answer .bar-label").all_inner_texts()) == sorted(XSS_LABELS)
    page.goto(f"{server}/#/xss/1/live")
    page.wait_for_selector(".live")
    assert page.locator("#main img, #main script, #main b, #main i").count() == 0
    tab.screenshot("xss-labels-as-text")
    tab.assert_clean()


def test_behind_a_proxy_that_strips_a_prefix(server: str, rooted_server: str, browser: Any) -> None:
    """An ingress serving nnserve at /nnserve/: relative links suffice for /nnserve/; --root-path also makes
    /nnserve (no trailing slash) work, through the <base href> it gives the page."""
    with prefix_proxy(rooted_server, "/nnserve") as proxy_a, prefix_proxy(server, "/nnserve") as proxy_b:
        for base, visit in ((proxy_a, "/nnserve"), (proxy_b, "/nnserve/")):
            context = browser.new_context()
            try:
                tab = watch(context.new_page())
                page = tab.page
                page.set_default_timeout(WAIT_MS)
                page.goto(base + visit + "#/mlp/1/try")
                page.click("button.test-image")
                page.wait_for_selector(".answer .verdict")
                assert predicted(page) == "Ankle boot"
                page.click("a.view-link:text('Card')")
                page.wait_for_selector(".readiness .ok")
                tab.assert_clean()
                fetched = [u for u in tab.urls[1:] if not u.startswith("blob:")]  # blob: the page's own previews
                assert tab.urls[0] == base + visit and all(u.startswith(base + "/nnserve/") for u in fetched)
                if visit == "/nnserve":  # a second version to pick, through the prefix
                    page.goto(base + visit + "#/doubler/2/card")
                    page.select_option(".versions select", "1")
                    expect(page.locator(".title h1")).to_have_text("doubler v1")
                    page.wait_for_selector(".readiness .ok")
                    assert "1, 2" in page.locator(".facts").last.inner_text()
                    tab.screenshot("behind-a-proxy")
            finally:
                context.close()


def test_a_phone_screen_and_a_finger_suffice(server: str, browser: Any) -> None:
    phone = {"is_mobile": True, "has_touch": True} if browser.browser_type.name == "chromium" else {}
    context = browser.new_context(viewport={"width": 390, "height": 844}, **phone)
    try:
        tab = watch(context.new_page())
        page = tab.page
        page.set_default_timeout(WAIT_MS)
        for fragment in ("cnn/1/card", "cnn/1/try", "lstm/1/try", "doubler/2/try", "resnet/1/live"):
            open_view(tab, server, fragment)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (fragment, overflow)
            tab.screenshot("phone-" + fragment.replace("/", "-"))
        open_view(tab, server, "cnn/1/try")
        page.locator("canvas.pad").scroll_into_view_if_needed()  # below the model list on a phone, as a person scrolls
        box = page.locator("canvas.pad").bounding_box()
        points = [(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * (0.1 + i * 0.07)) for i in range(12)]
        if chromium(page):  # a finger
            cdp = context.new_cdp_session(page)
            cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": points[0][0],
                                                                                        "y": points[0][1]}]})
            for px, py in points[1:]:
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": px, "y": py}]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        else:  # a mouse at phone width
            page.mouse.move(*points[0])
            page.mouse.down()
            for point in points[1:]:
                page.mouse.move(*point)
            page.mouse.up()
        page.wait_for_selector(".answer .verdict")
        assert "your drawing" in page.locator(".status").inner_text()
        tab.screenshot("phone-drawing")
        tab.assert_clean()
    finally:
        context.close()


def test_the_keyboard_alone_reaches_a_prediction(server: str, tab: Watched) -> None:
    page = tab.page
    page.goto(server + "/")
    page.wait_for_selector("#models a")

    def tab_to(selector: str) -> None:
        for _ in range(80):
            page.keyboard.press("Tab")
            if page.evaluate("s => document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to("#models a[href='#/lstm/1/card']")
    page.keyboard.press("Enter")
    tab_to("a.view-link[href='#/lstm/1/try']")
    page.keyboard.press("Enter")
    page.wait_for_selector("button.utterance")
    tab_to("button.utterance")
    page.keyboard.press("Enter")
    tab_to("button.predict")
    page.keyboard.press("Enter")
    page.wait_for_selector(".answer .verdict")
    assert predicted(page) == "speaker 1"
    page.goto(server + "/#/cnn/1/try")
    page.wait_for_selector("button.test-image")
    tab_to("button.test-image")
    page.keyboard.press("Space")
    page.wait_for_selector(".answer .verdict")
    assert predicted(page) == "Ankle boot"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # the focused control is visibly marked
    tab.assert_clean()


def test_send_200_at_once_shows_dynamic_batching(server: str, tab: Watched) -> None:
    before = httpx.get(f"{server}/metrics").text
    page = open_view(tab, server, "resnet/1/live")
    page.click("button.send-burst")
    page.wait_for_selector(".burst-result", timeout=60_000)
    assert "200 succeeded" in page.locator(".burst-result").inner_text()
    after = httpx.get(f"{server}/metrics").text
    batches = metric_value(after, "nnserve_batch_size_count", model="resnet") - \
        metric_value(before, "nnserve_batch_size_count", model="resnet")
    rows = metric_value(after, "nnserve_batch_size_sum", model="resnet") - \
        metric_value(before, "nnserve_batch_size_sum", model="resnet")
    assert rows == 200 and batches < 200  # the server put several requests in one batch
    expect(page.locator(".batch-sizes .bar-label").filter(has_not_text=re.compile("^1$")).first).to_be_visible()
    figures = dict(zip(page.locator(".live-figures dt").all_inner_texts(),
                       page.locator(".live-figures dd").all_inner_texts(), strict=True))
    assert float(figures["requests/s"]) > 0 and float(figures["mean batch size"]) > 1
    assert re.fullmatch(r"\d+\.\d\d ms", figures["p99 latency"])
    tab.screenshot("live-after-200")
    tab.assert_clean()
