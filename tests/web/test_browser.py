"""The page in a real browser: Debian's headless Chromium driven by Playwright (no browser download),
against the real server (``python -m gradcam_core.web``) on the bundled SqueezeNet and the VQA and
captioning test fixtures.

A user's steps: choose a file, pick the task and its fields, press Explain, see the result images;
each image on the page (its data URL, and what the browser actually paints) is the CLI's file for the
same options. Also a sample, a text file's one-line message, a disabled task, nothing fetched from
another origin, no console error (a use of what the page's Content-Security-Policy forbids would be
one), and the page cannot be framed by another.

Without Chromium (``apt-get install chromium``) the tests are skipped with a one-line reason, unless
``GRADCAM_REQUIRE_BROWSER=1`` (CI sets it): then a missing Chromium is an error. ``GRADCAM_NO_BROWSER=1``
skips them even where Chromium is installed; ``GRADCAM_CHROMIUM`` names the browser's executable
(default: ``chromium`` on PATH, else /usr/bin/chromium).
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Optional

import httpx
import numpy as np
import pytest
from PIL import Image

from .conftest import IMAGE, IMAGE_KEYS, ROOT, assert_images_are_the_clis, cli_run, data_url_pixels

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run

if os.environ.get("GRADCAM_NO_BROWSER") == "1":
    pytest.skip("GRADCAM_NO_BROWSER=1: the browser tests are skipped", allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = Path("/tmp")
TABBY = ROOT / "images" / "tabbycat_dog.jpg"


def find_chromium() -> Optional[str]:
    """The Chromium executable the tests drive, or None when there is none."""
    named = os.environ.get("GRADCAM_CHROMIUM", "")
    path = named or shutil.which("chromium") or "/usr/bin/chromium"
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


@pytest.fixture(scope="session", autouse=True)
def chromium() -> str:
    """The browser's path; without one, every test here is skipped (or, with GRADCAM_REQUIRE_BROWSER=1,
    an error). Session-scoped and autouse, so it runs before the servers the tests also ask for."""
    path = find_chromium()
    if path is None:
        where = os.environ.get("GRADCAM_CHROMIUM") or "chromium on PATH or /usr/bin/chromium"
        reason = f"no Chromium ({where}): the browser tests need it: apt-get install chromium"
        if os.environ.get("GRADCAM_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (GRADCAM_REQUIRE_BROWSER=1 makes this an error)", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def browser(chromium: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Page:
    """A fresh page on a server, with every request's URL and every console error recorded."""

    def __init__(self, browser, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1500, "height": 1100}, device_scale_factor=1)
        self.page = self.context.new_page()
        self.url, self.requests, self.errors = url, [], []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)
        # predicates as functions: an expression would be eval'ed in the page, which its CSP forbids
        self.page.wait_for_function("() => document.querySelectorAll('#layer option').length > 0", timeout=30_000)

    def explain(self) -> None:
        """Press Explain and wait until the result or an error shows."""
        self.page.click("#explain")
        self.page.wait_for_function(
            "() => !document.getElementById('explain').disabled && "
            "(!document.getElementById('result').hidden || !document.getElementById('error').hidden)",
            timeout=60_000)

    def shown(self, selector: str) -> bool:
        return self.page.is_visible(selector)

    def result_images(self) -> tuple[dict[str, str], dict[str, str]]:
        """The result's <img> data URLs and the download links' file names; each link is its image."""
        images = {k: self.page.get_attribute(f"#img-{k}", "src") for k in IMAGE_KEYS}
        for key in IMAGE_KEYS:
            assert self.page.get_attribute(f"#dl-{key}", "href") == images[key], key
        files = {k: self.page.get_attribute(f"#dl-{k}", "download") for k in IMAGE_KEYS if k != "input"}
        return images, files

    def screenshot(self, name: str, tmp_path: Path) -> np.ndarray:
        """The whole page, into tmp_path and /tmp/web_browser_<name>.png (to be looked at)."""
        png = self.page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        (SCREENSHOTS / f"web_browser_{name}.png").write_bytes(png)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def painted(self, key: str) -> np.ndarray:
        """What the browser painted for the result image ``key`` (an element screenshot), RGB."""
        return np.asarray(Image.open(io.BytesIO(self.page.locator(f"#img-{key}").screenshot())).convert("RGB"))

    def close(self) -> None:
        foreign = [u for u in self.requests if not u.startswith((self.url, "data:", "blob:"))]
        assert foreign == [], f"the page fetched from elsewhere: {foreign}"
        assert self.errors == [], f"console errors: {self.errors}"
        self.context.close()


@pytest.fixture
def page(browser, full_server):
    p = Page(browser, full_server.url)
    yield p
    p.close()


def assert_painted_like_the_files(page: Page, images: dict[str, str]) -> None:
    """Each result image as the browser painted it is its PNG on screen: both reduced to 28 x 28 block
    means (so the box's scaling and sub-pixel position do not count; the rounded corners are left out),
    they are the same within a few levels: the picture is there, the right way round, not a broken-image
    icon or another image."""
    def blocks(im: Image.Image) -> np.ndarray:
        return np.asarray(im.convert("RGB").resize((28, 28), Image.BOX)).astype(float)[1:-1, 1:-1]

    for key in IMAGE_KEYS:
        shot = page.painted(key)
        assert shot.shape[0] >= 150 and shot.shape[1] >= 150, (key, shot.shape)
        painted, ref = blocks(Image.fromarray(shot)), blocks(Image.fromarray(data_url_pixels(images[key])))
        diff = np.abs(painted - ref)
        assert diff.mean() < 2.5 and diff.max() < 60, f"{key}: the painted image is {diff.mean():.1f} levels from its PNG"


def test_upload_classify_label_243_shows_the_clis_images_and_the_top5(page, tmp_path):
    p = page.page
    assert p.is_checked("#task-classification") and page.shown("#fields-classification")
    p.set_input_files("#file", str(IMAGE))
    assert p.text_content("#chosen") == "cat_dog.jpg"
    p.fill("#label", "243")
    page.explain()
    assert page.shown("#result") and not page.shown("#error"), p.text_content("#error")
    p.wait_for_selector("#img-gb_gcam[src^='data:image/png']")
    images, files = page.result_images()
    assert_images_are_the_clis(images, files, cli_run("classification.py", "-label", "243"), "browser 243")
    assert p.text_content("#target") == "Label 243: boxer"
    predicted = cli_run("classification.py", "-label", "-1")
    label = predicted.stdout.split("using predicted label", 1)[1].split()[0]
    assert p.text_content("#predicted").startswith(f"Predicted: {label} ")
    rows = p.locator("#predictions tbody tr")
    assert page.shown("#predictions") and rows.count() == 5
    assert rows.nth(0).locator("td").nth(0).text_content() == label
    scores = [float(rows.nth(i).locator("td").nth(2).text_content().split()[0]) for i in range(5)]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 100.5, scores
    assert p.text_content("#time").startswith("explained in ")
    shot = page.screenshot("classification", tmp_path)
    x, y, w, h = p.evaluate("(() => { const r = document.getElementById('images').getBoundingClientRect();"
                            " return [r.left + scrollX, r.top + scrollY, r.width, r.height].map(Math.round); })()")
    region = shot[y: y + h, x: x + w]  # the five result images in the page's screenshot
    assert region.shape[0] > 200 and region.shape[1] > 5 * 200, region.shape
    assert len(np.unique(region.reshape(-1, 3), axis=0)) > 5000, "the result images look blank"
    left, right = region[:, : w // 2], region[:, w // 2:]  # input and overlay | heatmap, guided images
    assert left.std() > 30 and right.std() > 20, (left.std(), right.std())
    assert_painted_like_the_files(page, images)


def test_a_layer_from_the_list_and_a_class_name(page):
    p = page.page
    layers = p.eval_on_selector_all("#layer option", "os => os.map(o => o.value)")
    assert "fire9/concat" in layers and p.input_value("#layer") == "relu_conv10"
    p.set_input_files("#file", str(IMAGE))
    p.select_option("#layer", "fire9/concat")
    p.fill("#label", "243 boxer")  # a completion of the datalist: sent as 243
    page.explain()
    images, files = page.result_images()
    assert_images_are_the_clis(images, files, cli_run("classification.py", "-label", "243", "-layer_name",
                                                      "fire9/concat"), "browser fire9/concat")
    assert p.text_content("#result-layer") == "Layer: fire9/concat"
    p.fill("#label", "Tiger Cat")
    page.explain()
    images, files = page.result_images()
    assert files["gcam"] == "classify_gcam_hm_283.png" and p.text_content("#target") == "Label 283: tiger cat"


def test_vqa_with_a_question_shows_the_clis_images(page, tmp_path):
    p = page.page
    p.check("#task-vqa")
    assert page.shown("#fields-vqa") and not page.shown("#fields-classification")
    assert p.input_value("#question") == "What animal?" and p.input_value("#layer") == "relu5_4"
    p.set_input_files("#file", str(IMAGE))
    p.fill("#answer", "dog")
    page.explain()
    assert page.shown("#result"), p.text_content("#error")
    run = cli_run("visual_question_answering.py", "-question", "What animal?", "-answer", "dog")
    images, files = page.result_images()
    assert_images_are_the_clis(images, files, run, "browser vqa")
    predicted = run.stdout.split("Predicted answer:", 1)[1].split("\n")[0].strip()
    assert p.text_content("#target") == "Answer: dog"
    assert p.text_content("#predicted") == f"Predicted answer: {predicted}"
    assert p.locator("#predictions tbody tr").count() == 5
    page.screenshot("vqa", tmp_path)
    assert_painted_like_the_files(page, images)


def test_captioning_shows_the_generated_caption_and_the_clis_images(page, tmp_path):
    p = page.page
    p.check("#task-captioning")
    p.set_input_files("#file", str(IMAGE))
    page.explain()
    assert page.shown("#result"), p.text_content("#error")
    run = cli_run("captioning.py", "-caption", "")
    images, files = page.result_images()
    assert_images_are_the_clis(images, files, run, "browser captioning")
    generated = run.stdout.split("Generated caption:", 1)[1].split("\n")[0].strip()
    assert p.text_content("#predicted") == f"Generated caption: {generated}"
    assert p.text_content("#target") == f"Caption: {generated}"
    assert not page.shown("#predictions")
    page.screenshot("captioning", tmp_path)
    assert_painted_like_the_files(page, images)


def test_a_sample_thumbnail(page):
    p = page.page
    thumbs = p.locator("#samples .sample")
    assert thumbs.count() == len(list((ROOT / "images").glob("*.jpg")))
    p.click(f"#samples .sample[data-name='{TABBY.name}']")
    assert p.get_attribute(f"#samples .sample[data-name='{TABBY.name}']", "aria-pressed") == "true"
    assert p.text_content("#chosen") == f"Sample: {TABBY.name}"
    page.explain()
    assert page.shown("#result"), p.text_content("#error")
    images, files = page.result_images()
    assert_images_are_the_clis(images, files, cli_run("classification.py", "-label", "-1", image=TABBY), "sample")
    assert any("/samples/" + TABBY.name in u for u in page.requests)


def test_a_text_file_shows_the_servers_one_line_message_and_no_result(page, full_server, tmp_path):
    p = page.page
    p.set_input_files("#file", str(IMAGE))
    page.explain()
    assert page.shown("#result")  # a result first: the failed request must take it away
    text = b"Shopping list:\n- eggs\n- milk\n"
    p.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": text}])
    page.explain()
    server_says = httpx.post(full_server.url + "api/explain", data={"task": "classification"},
                             files={"image": ("notes.txt", text, "text/plain")}, timeout=60)
    assert server_says.status_code == 400
    assert page.shown("#error") and not page.shown("#result")
    assert p.text_content("#error") == server_says.json()["error"]
    assert "notes.txt" in p.text_content("#error") and "\n" not in p.text_content("#error")
    page.screenshot("text_file", tmp_path)
    page.errors.clear()  # Chromium logs the 400 itself; the page shows it


def test_a_task_without_a_model_is_shown_disabled_with_its_option(browser, plain_server, full_server):
    plain = Page(browser, plain_server.url)
    try:
        p = plain.page
        assert p.is_enabled("#task-classification") and p.is_checked("#task-classification")
        for task, option in (("vqa", "-vqa_model_path"), ("captioning", "-caption_model_path")):
            assert p.is_disabled(f"#task-{task}"), task
            assert "disabled" in p.get_attribute(f"#task-{task}-label", "class")
            assert option in p.text_content(f"#task-{task}-note"), p.text_content(f"#task-{task}-note")
    finally:
        plain.close()
    full = Page(browser, full_server.url)
    try:
        assert all(full.page.is_enabled(f"#task-{t}") for t in ("classification", "vqa", "captioning"))
    finally:
        full.close()


def test_the_page_cannot_be_framed_by_another(browser, plain_server):
    """A page of another site (here about:blank) embedding the demo in an iframe gets an error page in
    the frame, not the demo (its Content-Security-Policy's frame-ancestors, and X-Frame-Options)."""
    context = browser.new_context()
    try:
        page = context.new_page()
        messages: list[str] = []
        page.on("console", lambda m: messages.append(m.text))
        page.set_content(f'<iframe id="demo" src="{plain_server.url}"></iframe>')
        page.wait_for_function("() => window.frames.length === 1", timeout=30_000)
        # the frame's navigation ends on the server's page or on Chromium's error page (up to 30 s;
        # Playwright's events arrive while it waits)
        for _ in range(300):
            if page.frames[1].url not in ("", "about:blank") and messages:
                break
            page.wait_for_timeout(100)
        assert page.frames[1].url.startswith("chrome-error://"), [f.url for f in page.frames]
        assert page.frame_locator("#demo").locator("#layer").count() == 0
        assert any("frame-ancestors" in m for m in messages), messages
    finally:
        context.close()
