"""The page at `/` and the API docs (`/docs`, `/redoc`) in a real browser: Debian's Chromium
driven by Playwright (never a downloaded browser). Every request the browser makes to a host
other than the server (or the test's image server) is refused and recorded: the pages must
work offline."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image
from playwright.sync_api import expect

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that phones home (updates, sync, field trials).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DETECTOR = "shapes-detect/1"
IMAGE = "dev/02_multi_640x480.jpg"
# Waits for rendering and for a model's first load (CPU only, shared machine).
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test does)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # A fresh profile: no state from an earlier run.
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 1000},
        )
        yield context
        context.close()


def new_tab(chromium, *allowed_urls):
    """A tab that may reach only `allowed_urls`' hosts; `tab.outside` lists the other URLs it
    tried, `tab.script_errors` the page's uncaught errors."""
    allowed = {urlsplit(url).netloc for url in allowed_urls}
    tab = chromium.new_page()
    outside: list[str] = []

    def gate(route):
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc in allowed:
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    tab.route("**/*", gate)
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.outside = outside
    tab.script_errors = errors
    return tab


@pytest.fixture
def page(chromium, server, image_server):
    tab = new_tab(chromium, server, image_server)
    yield tab
    tab.close()


def open_page(page, server):
    page.goto(f"{server}/")
    # The picker is filled from /model/registry and /models.
    page.wait_for_selector(f'#model-pick option[value="{DETECTOR}"]', state="attached", timeout=WAIT_MS)


def run_and_wait(page):
    page.click("#run")
    # Locators, not wait_for_function: the page's CSP forbids the eval that the latter uses.
    page.locator("#error:not([hidden]), #result:not([hidden])").first.wait_for(timeout=WAIT_MS)
    error = page.locator("#error")
    assert not error.is_visible(), f"the page shows an error: {error.inner_text()}"


def shown_result(page) -> tuple[dict, dict]:
    """The drawn image's attributes (once decoded) and the JSON the page shows."""
    expect(page.locator("#result-image")).to_have_js_property("complete", True, timeout=WAIT_MS)
    image = page.eval_on_selector(
        "#result-image", "img => ({src: img.src.slice(0, 32), width: img.naturalWidth, height: img.naturalHeight})")
    return image, json.loads(page.inner_text("#result-json"))


def test_runs_a_model_on_a_chosen_file(page, server, fixtures_dir, tmp_path):
    open_page(page, server)
    page.select_option("#model-pick", DETECTOR)
    assert page.input_value("#model-id") == DETECTOR
    page.fill("#confidence", "0.5")
    path = fixtures_dir / "images" / IMAGE
    page.set_input_files("#image-file", str(path))
    run_and_wait(page)

    width, height = Image.open(path).size
    image, shown = shown_result(page)
    assert image["src"].startswith("data:image/jpeg;base64,")
    assert (image["width"], image["height"]) == (width, height)
    assert shown["image"] == {"width": width, "height": height}
    assert shown["predictions"], "no predictions shown"
    assert shown["visualization"].startswith("<base64 JPEG")

    # The page shows what the API answers for the same image and confidence.
    direct = requests.post(f"{server}/infer/object_detection", json={
        "model_id": DETECTOR, "confidence": 0.5,
        "image": {"type": "base64", "value": base64.b64encode(path.read_bytes()).decode()},
    }, timeout=60).json()
    assert sorted(p["class"] for p in shown["predictions"]) == sorted(p["class"] for p in direct["predictions"])
    summary = page.inner_text("#result-summary")
    assert summary.startswith(f"{len(direct['predictions'])} prediction")
    assert "round trip" in page.inner_text("#timing")

    # The server's lists: the model now loaded, the detection plugin on its route.
    row = page.locator("#models-body tr", has=page.locator("td", has_text=DETECTOR))
    expect(row.locator("td").nth(4)).to_have_text("yes", timeout=WAIT_MS)
    plugins = page.inner_text("#plugins-body")
    assert "/infer/object_detection" in plugins

    shot = tmp_path / "page-with-result.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] == 1280
    # Kept for a look when asked for (PAGE_SCREENSHOT_DIR=<dir>).
    if os.environ.get("PAGE_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["PAGE_SCREENSHOT_DIR"]) / shot.name)
    assert page.outside == [] and page.script_errors == []


def test_runs_a_model_on_an_image_url_from_the_keyboard(page, server, image_server):
    open_page(page, server)
    page.fill("#model-id", DETECTOR)
    page.fill("#image-url", f"{image_server}/dev/04_multi_160x120.jpg")
    # Enter in a field submits the form.
    page.press("#image-url", "Enter")
    page.locator("#error:not([hidden]), #result:not([hidden])").first.wait_for(timeout=WAIT_MS)
    assert page.locator("#error").is_hidden(), page.inner_text("#error")
    image, shown = shown_result(page)
    assert (image["width"], image["height"]) == (160, 120)
    assert shown["image"] == {"width": 160, "height": 120}
    assert page.outside == [] and page.script_errors == []


def test_runs_a_model_on_a_dropped_file(page, server, fixtures_dir):
    path = fixtures_dir / "images" / "dev" / "13_multi_300x200.png"
    open_page(page, server)
    page.fill("#model-id", DETECTOR)
    # What a drag from the desktop delivers: a drop event carrying the file.
    transfer = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            return transfer;
        }""", [base64.b64encode(path.read_bytes()).decode(), path.name])
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    expect(page.locator("#preview")).to_be_visible()
    run_and_wait(page)
    image, shown = shown_result(page)
    assert image["src"].startswith("data:image/jpeg;base64,")
    assert (image["width"], image["height"]) == (300, 200) and shown["image"] == {"width": 300, "height": 200}
    assert page.outside == [] and page.script_errors == []


def test_typed_model_is_downloaded_with_the_api_key(chromium, start_server, fixtures_dir, tmp_path):
    """A model the server lacks: the page loads it (`/model/add`, with the key) to learn its task,
    then runs it on that task's route."""
    from roboflow_double import RoboflowDouble

    model = "shapes-rf-seg/1"
    with RoboflowDouble(keys=("rf-page-key",)) as roboflow:
        roboflow.add_shapes(model, file="shapes-seg.onnx", task="instance-segmentation")
        models = tmp_path / "models"
        models.mkdir()
        h = start_server(["--cache-dir", str(tmp_path / "cache"), "--roboflow-api-url", roboflow.url], models=models)
        tab = new_tab(chromium, h.url)
        try:
            tab.goto(f"{h.url}/")
            expect(tab.locator("#models-body")).to_contain_text("No models yet", timeout=WAIT_MS)
            tab.fill("#model-id", model)
            tab.set_input_files("#image-file", str(fixtures_dir / "images" / IMAGE))
            tab.fill("#api-key", "wrong-key")
            tab.click("#run")
            error = tab.locator("#error")
            error.wait_for(state="visible", timeout=WAIT_MS)
            assert error.inner_text().endswith("(HTTP 401)"), error.inner_text()

            tab.fill("#api-key", "rf-page-key")
            run_and_wait(tab)
            image, shown = shown_result(tab)
            assert image["src"].startswith("data:image/jpeg;base64,") and image["width"] == 640
            # The instance segmentation route answered: outlines.
            assert shown["predictions"] and all(p["points"] for p in shown["predictions"])
            assert "instance_segmentation" in tab.inner_text("#status")
            row = tab.locator("#models-body tr", has=tab.locator("td", has_text=model))
            expect(row).to_contain_text("instance-segmentation", timeout=WAIT_MS)
            assert tab.outside == [] and tab.script_errors == []
        finally:
            tab.close()
            h.stop()


def test_every_control_has_a_label(page, server):
    open_page(page, server)
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('input, select, button')]"
        ".filter((e) => e.tagName !== 'BUTTON' ? e.labels.length === 0 : !e.textContent.trim()).map((e) => e.id)")
    assert unlabelled == []


def test_unknown_model_shows_the_servers_message(page, server, fixtures_dir):
    model = "no-such-model/1"
    expected = requests.post(f"{server}/model/add", json={"model_id": model}, timeout=30)
    assert expected.status_code == 404
    open_page(page, server)
    page.fill("#model-id", model)
    page.set_input_files("#image-file", str(fixtures_dir / "images" / IMAGE))
    page.click("#run")
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=WAIT_MS)
    assert error.inner_text() == f"{expected.json()['message']} (HTTP 404)"
    assert page.locator("#result").is_hidden()
    assert page.outside == [] and page.script_errors == []


def test_missing_image_is_refused_in_the_page(page, server):
    open_page(page, server)
    page.fill("#model-id", DETECTOR)
    page.click("#run")
    assert page.locator("#error").inner_text().startswith("Choose an image")


def test_swagger_ui_renders_the_operations(page, server):
    page.goto(f"{server}/docs/")
    path = page.locator('.opblock-summary-path[data-path="/infer/object_detection"]')
    path.wait_for(timeout=WAIT_MS)
    assert page.locator(".opblock").count() >= 15
    assert page.locator('.opblock-summary-path[data-path="/models"]').count() == 1
    # Swagger UI's bundle is served by the server; nothing came from elsewhere.
    assert page.outside == []


def test_redoc_renders_the_operations(page, server):
    page.goto(f"{server}/redoc")
    heading = page.locator("h2", has_text="Object detection").first
    heading.wait_for(timeout=WAIT_MS)
    for summary in ("Loaded models", "Models on this server", "Installed plugins"):
        assert page.locator("h2", has_text=summary).count() >= 1, summary
    assert page.outside == []
