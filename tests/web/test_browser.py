"""The page in a real browser: Debian's headless Chromium driven by Playwright (no browser download),
against the real server (``python -m gradcam_core.web``) on the bundled SqueezeNet and the VQA and
captioning test fixtures.

A user's steps: choose a file, pick the task and its fields, press Explain, see the result images;
each image on the page (its data URL, and what the browser actually paints) is the CLI's file for the
same options. Also a sample, a text file's one-line message, a disabled task, nothing fetched from
another origin, no console error (a use of what the page's Content-Security-Policy forbids would be
one), and the page cannot be framed by another. And how the result is shown: pictures at least 320 px
wide at 1280 x 800 and beside the form, in view, at 1920 x 1080; at the uploaded image's aspect ratio;
the overlay the browser's blend of the heatmap over the input with the slider's opacity; a colour bar
that is the heatmap's colour map; a click enlarges a picture, Escape or a click closes it; the result
cleared when the task or the image changes; a spinner while a request runs; a top-5 row clicked
explains that class. Segmentation and detection, each on a server of its own: the class region over
the input; the detected boxes, a button over each and a table, a box clicked showing its maps.

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

import httpx
import numpy as np
import pytest
from PIL import Image

from .conftest import (
    CLI_MODEL_ARGS,
    IMAGE,
    IMAGE_KEYS,
    ROOT,
    CliRun,
    Server,
    assert_images_are_the_clis,
    cli_run,
    data_url_pixels,
    read_pixels,
    run_script,
)

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run

#: The element that shows each result image: the overlay is the page's own blend of two <img>s.
SHOWN = {k: f"#img-{k}" for k in IMAGE_KEYS} | {"overlay": "#overlay-view"}

if os.environ.get("GRADCAM_NO_BROWSER") == "1":
    pytest.skip("GRADCAM_NO_BROWSER=1: the browser tests are skipped", allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = Path("/tmp")
TABBY = ROOT / "images" / "tabbycat_dog.jpg"


def find_chromium() -> str | None:
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

    def __init__(self, browser, url: str, width: int = 1500, height: int = 1100) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
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
        self.wait_for_result()

    def wait_for_result(self) -> None:
        """Wait until the request that runs has ended in the result or an error."""
        self.page.wait_for_function(
            "() => !document.getElementById('explain').disabled && "
            "(!document.getElementById('result').hidden || !document.getElementById('error').hidden)",
            timeout=60_000)

    def choose_task(self, task: str) -> None:
        """Pick ``task``'s radio button: its fields are shown, classification's hidden."""
        self.page.check(f"#task-{task}")
        assert self.shown(f"#fields-{task}") and not self.shown("#fields-classification")

    def shown(self, selector: str) -> bool:
        return self.page.is_visible(selector)

    def result_images(self) -> tuple[dict[str, str], dict[str, str]]:
        """The result's data URLs and the download links' file names: each link is its <img>, the
        overlay's link is the server's overlay, and the overlay shown blends the gcam over the input."""
        images = {k: self.page.get_attribute(f"#img-{k}", "src") for k in IMAGE_KEYS if k != "overlay"}
        images["overlay"] = self.page.get_attribute("#dl-overlay", "href")
        for key in IMAGE_KEYS:
            assert self.page.get_attribute(f"#dl-{key}", "href") == images[key], key
        assert self.page.get_attribute("#blend-input", "src") == images["input"]
        assert self.page.get_attribute("#blend-heat", "src") == images["gcam"]
        files = {k: self.page.get_attribute(f"#dl-{k}", "download") for k in IMAGE_KEYS if k != "input"}
        return images, files

    def screenshot(self, name: str, tmp_path: Path) -> np.ndarray:
        """The whole page, into tmp_path and /tmp/web_browser_<name>.png (to be looked at)."""
        png = self.page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        (SCREENSHOTS / f"web_browser_{name}.png").write_bytes(png)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def painted(self, key: str) -> np.ndarray:
        """What the browser painted for the result image ``key`` (an element screenshot), RGB."""
        return self.painted_element(SHOWN[key])

    def painted_element(self, selector: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(self.page.locator(selector).screenshot())).convert("RGB"))

    def box(self, selector: str) -> dict[str, float]:
        """The element's box in the viewport (CSS px): left, top, right, bottom, width, height."""
        return self.page.eval_on_selector(selector, "e => { const r = e.getBoundingClientRect(); return "
                                          "{left: r.left, top: r.top, right: r.right, bottom: r.bottom, "
                                          "width: r.width, height: r.height}; }")

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


def blocks(pixels: np.ndarray) -> np.ndarray:
    """An image reduced to 28 x 28 block means (RGB floats), its border blocks left out: what a picture
    painted at any size and aspect ratio is compared by (its scaling, sub-pixel position and rounded
    corners do not count)."""
    im = Image.fromarray(pixels.astype(np.uint8)).convert("RGB")
    return np.asarray(im.resize((28, 28), Image.BOX)).astype(float)[1:-1, 1:-1]


def assert_painted_like(shot: np.ndarray, ref: np.ndarray, what: str) -> None:
    """What the browser painted is the picture ``ref`` (H, W, 3 or H, W) within a few levels: the picture
    is there, the right way round, not a broken-image icon or another image."""
    assert shot.shape[0] >= 150 and shot.shape[1] >= 150, (what, shot.shape)
    diff = np.abs(blocks(shot) - blocks(ref))
    assert diff.mean() < 2.5 and diff.max() < 60, f"{what}: the painted image is {diff.mean():.1f} levels from its PNG"


def assert_painted_like_the_files(page: Page, images: dict[str, str]) -> None:
    """Each result image as the browser painted it is its PNG on screen (the overlay: the browser's blend
    at the slider's initial 50 %, which is the server's overlay file)."""
    for key in IMAGE_KEYS:
        assert_painted_like(page.painted(key), data_url_pixels(images[key]), key)


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
    page.choose_task("vqa")
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


# ------------------------------------------------------------------------------------- how the result shows


def open_page(browser, server, width: int, height: int) -> Page:
    return Page(browser, server.url, width, height)


def held_requests(page: Page) -> list:
    """Hold every POST /api/explain of the page until the test lets it go (``route.continue_()``)."""
    held: list = []
    page.page.route("**/api/explain", lambda route: held.append(route))
    return held


def wait_for_held(page: Page, held: list, count: int = 1) -> None:
    for _ in range(300):  # Playwright hands the routes over while the page waits
        if len(held) >= count:
            return
        page.page.wait_for_timeout(100)
    raise AssertionError(f"{count} request(s) to /api/explain expected, {len(held)} seen")


def aspect(box: dict[str, float]) -> float:
    return box["width"] / box["height"]


def test_the_pictures_are_large_at_1280_and_in_view_beside_the_form_at_1920(browser, full_server):
    """At 1280 x 800 every result picture is at least 320 px wide; at 1920 x 1080 the whole result (its
    five pictures and the top 5) is in the viewport beside the form without scrolling, and the pictures
    are larger still."""
    small = open_page(browser, full_server, 1280, 800)
    try:
        small.page.set_input_files("#file", str(IMAGE))
        small.explain()
        widths = {k: small.box(SHOWN[k])["width"] for k in IMAGE_KEYS}
        assert min(widths.values()) >= 320, widths
        (SCREENSHOTS / "web_browser_1280x800.png").write_bytes(small.page.screenshot(full_page=True))
    finally:
        small.close()
    wide = open_page(browser, full_server, 1920, 1080)
    try:
        wide.page.set_input_files("#file", str(IMAGE))
        wide.explain()
        (SCREENSHOTS / "web_browser_1920x1080.png").write_bytes(wide.page.screenshot())
        assert wide.page.evaluate("() => [scrollX, scrollY]") == [0, 0]
        for selector in [*SHOWN.values(), "#predictions", "#target", "#explain", "#preview"]:
            box = wide.box(selector)
            assert box["left"] >= 0 and box["top"] >= 0 and box["right"] <= 1920 and box["bottom"] <= 1080, (selector, box)
        widths = {k: wide.box(SHOWN[k])["width"] for k in IMAGE_KEYS}
        assert min(widths.values()) >= 360, widths
        assert wide.box("#images")["left"] > wide.box("#explain")["right"]  # beside the form, not below it
    finally:
        wide.close()


def test_the_pictures_take_the_uploaded_images_aspect_ratio(page, tmp_path):
    """A 640 x 480 photo is shown 4:3 (the API's images are 224 x 224), a 200 x 400 PNG 1:2, and the
    enlarged picture too; what is painted is still the picture (stretched, not cropped)."""
    p = page.page
    p.set_input_files("#file", str(IMAGE))
    page.explain()
    with Image.open(IMAGE) as im:
        expected = im.width / im.height
    images, _ = page.result_images()
    assert data_url_pixels(images["overlay"]).shape[:2] == (224, 224)
    for key, selector in SHOWN.items():
        assert abs(aspect(page.box(selector)) / expected - 1) < 0.02, (key, page.box(selector), expected)
    assert_painted_like_the_files(page, images)
    tall = tmp_path / "tall.png"
    ramp = np.linspace(0, 255, 400, dtype=np.float64)[:, None, None] * np.ones((1, 200, 3))
    ramp[:, :100, 0] = 255 - ramp[:, :100, 0]
    Image.fromarray(ramp.astype(np.uint8)).save(tall)
    p.set_input_files("#file", str(tall))
    page.explain()
    assert page.shown("#result"), p.text_content("#error")
    for key, selector in SHOWN.items():
        assert abs(aspect(page.box(selector)) * 2 - 1) < 0.02, (key, page.box(selector))
    p.click("#overlay-view")
    p.wait_for_selector("#lightbox[open]")
    assert abs(aspect(page.box("#lightbox-picture")) * 2 - 1) < 0.02, page.box("#lightbox-picture")
    p.keyboard.press("Escape")


def test_a_jpegs_exif_orientation_is_ignored_as_the_server_ignores_it(page, tmp_path):
    """A 640 x 480 JPEG tagged "turn a quarter" (EXIF orientation 6, as phones write them): the server
    explains its pixels as stored, so the preview and the pictures are 4:3, not the 3:4 the browser
    would turn it to."""
    p = page.page
    turned = tmp_path / "turned.jpg"
    with Image.open(IMAGE) as im:
        exif = im.getexif()
        exif[0x0112] = 6
        im.save(turned, quality=92, exif=exif.tobytes())
    p.set_input_files("#file", str(turned))
    page.explain()
    assert page.shown("#result"), p.text_content("#error")
    assert abs(aspect(page.box("#preview")) / (4 / 3) - 1) < 0.02, page.box("#preview")
    for key, selector in SHOWN.items():
        assert abs(aspect(page.box(selector)) / (4 / 3) - 1) < 0.02, (key, page.box(selector))


def test_the_slider_sets_the_heatmaps_opacity_over_the_input(page):
    """The overlay shown is (1 - a) * input + a * heatmap as painted, for the slider's a; the overlay's
    download stays the server's file (its 50 % blend)."""
    p = page.page
    p.set_input_files("#file", str(IMAGE))
    page.explain()
    images, _ = page.result_images()
    rgb, heat = (data_url_pixels(images[k]).astype(float) for k in ("input", "gcam"))
    assert p.text_content("#opacity-value").strip() == "50 %"
    assert_painted_like(page.painted("overlay"), data_url_pixels(images["overlay"]), "overlay at 50 %")
    for percent in (0, 25, 80, 100):
        p.fill("#opacity", str(percent))
        assert p.text_content("#opacity-value").strip() == f"{percent} %"
        a = percent / 100
        assert_painted_like(page.painted("overlay"), (1 - a) * rgb + a * heat, f"overlay at {percent} %")
    assert p.get_attribute("#dl-overlay", "href") == images["overlay"]
    # the two ends differ: the slider does change what is shown
    p.fill("#opacity", "0")
    low = blocks(page.painted("overlay"))
    p.fill("#opacity", "100")
    assert np.abs(blocks(page.painted("overlay")) - low).mean() > 20


def test_the_colour_bar_is_the_heatmaps_colour_map(page):
    """The colour bar, as painted, left to right, is utils.to_heatmap of a ramp from low to high."""
    import torch

    from gradcam_core.image.render import to_heatmap

    p = page.page
    p.set_input_files("#file", str(IMAGE))
    page.explain()
    shot = page.painted_element("#colour-bar").astype(float)
    assert shot.shape[1] >= 100, shot.shape
    row = shot[shot.shape[0] // 2, 3:-3]  # the rounded ends left out
    ramp = torch.linspace(0, 1, shot.shape[1], dtype=torch.float64)[3:-3].reshape(1, -1)
    ramp = torch.cat([torch.zeros(1, 1, dtype=torch.float64), ramp, torch.ones(1, 1, dtype=torch.float64)], 1)
    expected = (255 * to_heatmap(ramp)[:, 0, 1:-1]).T.numpy()  # (W, 3), its own min-max undone by 0 and 1
    diff = np.abs(row - expected)
    assert diff.mean() < 3 and diff.max() < 16, f"the colour bar is {diff.mean():.1f} levels (max {diff.max()}) from to_heatmap"


def test_a_click_enlarges_a_picture_and_escape_or_a_click_closes_it(page):
    p = page.page
    p.set_input_files("#file", str(IMAGE))
    page.explain()
    images, _ = page.result_images()
    small = page.box("#img-gb")
    p.click("#img-gb")
    p.wait_for_selector("#lightbox[open]")
    big = page.box("#lightbox-picture")
    assert big["width"] > 2 * small["width"] and abs(aspect(big) / aspect(small) - 1) < 0.02, (big, small)
    assert p.eval_on_selector_all("#lightbox-picture img", "is => is.map(i => i.src)") == [images["gb"]]
    assert "Guided Backprop" in p.text_content("#lightbox")
    assert_painted_like(page.painted_element("#lightbox-picture"), data_url_pixels(images["gb"]), "enlarged gb")
    p.keyboard.press("Escape")
    p.wait_for_selector("#lightbox", state="hidden")
    assert p.eval_on_selector("#lightbox", "d => d.open") is False
    # the overlay enlarged is the blend at the slider's opacity; a click anywhere closes it
    p.fill("#opacity", "100")
    p.click("#overlay-view")
    p.wait_for_selector("#lightbox[open]")
    assert_painted_like(page.painted_element("#lightbox-picture"), data_url_pixels(images["gcam"]), "enlarged overlay")
    p.mouse.click(5, 5)  # on the backdrop
    p.wait_for_selector("#lightbox", state="hidden")
    p.click("#img-input")
    p.wait_for_selector("#lightbox[open]")
    p.click("#lightbox-picture")  # on the picture itself
    p.wait_for_selector("#lightbox", state="hidden")


def test_the_result_is_cleared_when_the_task_or_the_image_changes(page):
    """A result (and a request still running) belongs to its task and image: choosing another task or
    image takes it away; a request abandoned so shows nothing when its answer arrives."""
    p = page.page
    p.set_input_files("#file", str(IMAGE))
    page.explain()
    assert page.shown("#result") and p.text_content("#target").startswith("Label ")
    p.check("#task-captioning")
    assert not page.shown("#result") and p.text_content("#target") == "" and p.text_content("#predicted") == ""
    assert p.eval_on_selector_all("#images img[src]", "is => is.length") == 0
    page.explain()
    assert p.text_content("#predicted").startswith("Generated caption: ")
    p.click(f"#samples .sample[data-name='{TABBY.name}']")
    assert not page.shown("#result") and p.text_content("#predicted") == ""
    page.explain()
    assert page.shown("#result")
    p.set_input_files("#file", str(IMAGE))
    assert not page.shown("#result") and p.text_content("#target") == ""
    held = held_requests(page)
    p.click("#explain")
    wait_for_held(page, held)
    p.check("#task-classification")  # while the captioning request runs
    assert not page.shown("#busy") and p.is_enabled("#explain")
    try:
        held[0].continue_()
    except Exception:  # the page gave the request up already
        pass
    p.wait_for_timeout(1500)
    assert not page.shown("#result") and not page.shown("#error"), p.text_content("#error")
    assert p.text_content("#target") == ""


def test_a_spinner_runs_while_a_request_does(page):
    p = page.page
    p.set_input_files("#file", str(IMAGE))
    held = held_requests(page)
    assert not page.shown("#spinner")
    p.click("#explain")
    wait_for_held(page, held)
    assert page.shown("#spinner") and page.shown("#explain .spinner") and p.is_disabled("#explain")
    running = p.eval_on_selector("#spinner", "s => s.getAnimations().filter(a => a.playState === 'running').length")
    assert running >= 1, "the spinner does not turn"
    assert not page.shown("#result")
    held[0].continue_()
    page.wait_for_result()
    assert page.shown("#result") and not page.shown("#spinner") and not page.shown("#explain .spinner")


def test_a_top5_row_explains_its_class(page):
    p = page.page
    p.set_input_files("#file", str(IMAGE))
    page.explain()
    rows = p.locator("#predictions tbody tr")
    first = rows.nth(0).locator("td").nth(0).text_content()
    assert p.get_attribute("#predictions tbody tr:nth-child(1)", "aria-current") == "true"
    label, name = (rows.nth(2).locator("td").nth(i).text_content() for i in (0, 1))
    assert label != first
    rows.nth(2).click()
    page.wait_for_result()
    assert p.text_content("#target") == f"Label {label}: {name}" and p.input_value("#label") == label
    images, files = page.result_images()
    assert_images_are_the_clis(images, files, cli_run("classification.py", "-label", label), f"top-5 row {label}")
    assert p.get_attribute("#predictions tbody tr:nth-child(3)", "aria-current") == "true"
    # by keyboard, and for VQA's answers
    p.check("#task-vqa")
    p.set_input_files("#file", str(IMAGE))
    page.explain()
    answer = p.locator("#predictions tbody tr").nth(1).locator("td").nth(0).text_content()
    p.focus("#predictions tbody tr:nth-child(2)")
    p.keyboard.press("Enter")
    page.wait_for_result()
    assert p.text_content("#target") == f"Answer: {answer}" and p.input_value("#answer") == answer


# ------------------------------------------------------------------------------------------ CAM methods


@pytest.fixture(scope="module")
def methods_server():
    """The bundled SqueezeNet, the test-only method ``test-mean+`` registered (tests/mean_cam.py)."""
    from mean_cam import PRELUDE

    server = Server(prelude=PRELUDE)
    try:
        yield server
    finally:
        server.stop()


def test_a_method_chosen_on_the_page_shows_its_images(browser, methods_server, tmp_path):
    """The method selector lists the server's methods (Grad-CAM chosen), shows the chosen one's summary;
    with the test method and the counterfactual box the result is the CLI's files of ``-method
    test-mean+ -counterfactual 1``, its pictures and the summary named after the method."""
    from mean_cam import NAME, TOKEN, wrapper_script

    page = Page(browser, methods_server.url)
    try:
        p = page.page
        methods = p.eval_on_selector_all("#method option", "os => os.map(o => o.value)")
        assert methods[0] == "gradcam" and NAME in methods and p.input_value("#method") == "gradcam"
        assert p.text_content("#method-summary").startswith("Grad-CAM: ")
        p.set_input_files("#file", str(IMAGE))
        p.fill("#label", "243")
        p.select_option("#method", NAME)
        assert p.text_content("#method-summary").startswith("Mean activation: ")
        p.check("#counterfactual")
        page.explain()
        assert page.shown("#result") and not page.shown("#error"), p.text_content("#error")
        images, files = page.result_images()
        assert files["gcam"] == f"classify_{TOKEN}_cf_hm_243.png" and files["gb"] == "classify_gb_cf_243.png"
        script = "classification.py"
        out = tmp_path / "cli"
        result = run_script(wrapper_script(tmp_path, script), *CLI_MODEL_ARGS[script], "-input_image_path", str(IMAGE),
                            "-label", "243", "-method", NAME, "-counterfactual", "1", "-save_overlay", "1",
                            "-out_path", f"{out}/")
        assert result.returncode == 0, result.stderr
        cli = CliRun(result.stdout, {f.name: read_pixels(f.read_bytes()) for f in out.glob("*.png")})
        assert_images_are_the_clis(images, files, cli, "browser method")
        assert p.text_content("#result-method") == "Method: Mean activation (counterfactual)"
        captions = p.eval_on_selector_all("#images figcaption", "fs => fs.map(f => f.firstChild.textContent + "
                                          "(f.children[0] ? f.children[0].textContent : ''))")
        assert any("Mean activation (counterfactual)" in c for c in captions), captions
        assert p.get_attribute("#overlay-view", "data-title") == "Mean activation (counterfactual) overlay"
        assert_painted_like_the_files(page, images)
    finally:
        page.close()


# ------------------------------------------------------------------------------------------ segmentation


@pytest.fixture(scope="module")
def segment_server(tmp_path_factory):
    """The bundled SqueezeNet and, for segmentation, an ONNX export of tests/test_segmentation.py's tiny
    model (64 x 64 inputs)."""
    import warnings

    import torch
    from test_segmentation import tiny

    path = tmp_path_factory.mktemp("seg") / "tiny_seg.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny(), torch.zeros(1, 3, 64, 64), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})
    server = Server("-segment_model_file", str(path))
    try:
        yield server
    finally:
        server.stop()


def test_segmentation_shows_the_class_region_over_the_input(browser, segment_server, tmp_path):
    """The segmentation task: its label empty (the class with the most pixels), the result's pictures
    the server's, and the class region the server's mask blended over the input at the slider's 50 %."""
    page = Page(browser, segment_server.url)
    try:
        p = page.page
        assert "tiny_seg.onnx" in p.text_content("#task-segmentation-note")
        page.choose_task("segmentation")
        p.set_input_files("#file", str(IMAGE))
        page.explain()
        assert page.shown("#result") and not page.shown("#error"), p.text_content("#error")
        assert page.shown("#mask-figure")
        images, files = page.result_images()
        mask = p.get_attribute("#mask-region", "src")
        label = p.text_content("#target").split()[1]
        assert p.get_attribute("#dl-mask", "download") == f"segment_mask_{label}.png"
        assert files["gcam"] == f"segment_gcam_hm_{label}.png" and p.get_attribute("#mask-input", "src") == images["input"]
        blend = 0.5 * data_url_pixels(images["input"]).astype(float) + 0.5 * data_url_pixels(mask)[..., None]
        assert_painted_like(page.painted_element("#mask-figure .picture"), blend, "class region")
        page.screenshot("segmentation", tmp_path)
        p.check("#task-classification")  # another task: the result (and the region) cleared
        assert not page.shown("#result")
    finally:
        page.close()


# ------------------------------------------------------------------------------------------ detection

DETECT_ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


def detect_server_with(folder: Path, *args: str) -> Server:
    """The bundled SqueezeNet and, for detection, tests/test_detection.py's seeded random
    fasterrcnn_mobilenet_v3_large_320_fpn with class 18 ("dog") biased: every proposal a dog scoring
    0.970, so cat_dog.jpg has boxes (at most 2 explained)."""
    import torch
    from test_detection import _dog_detector

    path = folder / "dog_detector.pth"
    if not path.exists():
        torch.save(_dog_detector(DETECT_ARCH).state_dict(), path)
    return Server("-detect_arch", DETECT_ARCH, "-detect_model_file", str(path), "-detect_max_boxes", "2", *args)


@pytest.fixture(scope="module")
def detect_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("detect")


@pytest.fixture(scope="module")
def detect_server(detect_folder):
    server = detect_server_with(detect_folder)
    try:
        yield server
    finally:
        server.stop()


def explain_answer(page: Page) -> dict:
    """Press Explain; the JSON the server answered the page with."""
    with page.page.expect_response(lambda r: r.url.endswith("/api/explain")) as response:
        page.explain()
    return response.value.json()


def assert_shows_box(page: Page, body: dict, index: int) -> None:
    """The result's pictures and downloads are box ``index``'s images (the input: the image's own), its
    table row and its button marked current, the others not."""
    box = next(b for b in body["boxes"] if b["index"] == index)
    images, files = page.result_images()
    assert images == {"input": body["images"]["input"]} | {k: box["images"][k] for k in IMAGE_KEYS if k != "input"}
    assert files == {k: box["files"][k] for k in IMAGE_KEYS if k != "input"}, files
    p = page.page
    current = p.eval_on_selector_all("#boxes-table tbody tr[aria-current='true'], #boxes-view .box-hotspot"
                                     "[aria-current='true']", "es => es.map(e => e.tagName + e.dataset.index)")
    assert current == [f"TR{index}", f"BUTTON{index}"], current
    assert p.text_content("#target").endswith(f"shown: Box {index}: dog {100 * box['score']:.1f} %")


def test_detection_draws_the_boxes_and_a_box_clicked_shows_its_maps_large(browser, detect_server, tmp_path):
    """The detection task: the server's overview (its detect_boxes.png) with a button over each detected
    box where the box is, and a table of the boxes; the first box's maps in the pictures; a box's button
    (or its table row) clicked shows that box's images and opens its overlay in the lightbox; another
    task clears the boxes."""
    page = Page(browser, detect_server.url)
    try:
        p = page.page
        assert "dog_detector.pth" in p.text_content("#task-detection-note")
        page.choose_task("detection")
        assert p.text_content("#detect-note") == "Explains every detected box scoring at least 0.5 (at most 2, best first)."
        p.set_input_files("#file", str(IMAGE))
        body = explain_answer(page)
        assert page.shown("#result") and not page.shown("#error"), p.text_content("#error")
        boxes = body["boxes"]
        assert [b["index"] for b in boxes] == [1, 2] and {b["name"] for b in boxes} == {"dog"}, boxes
        assert boxes[0]["images"]["gcam"] != boxes[1]["images"]["gcam"]  # a box clicked shows other pictures
        # the overview: the server's picture, a button over each box where the box is
        assert page.shown("#boxes-figure") and p.get_attribute("#img-boxes", "src") == body["images"]["boxes"]
        assert p.get_attribute("#dl-boxes", "download") == "detect_boxes.png"
        with Image.open(IMAGE) as im:
            assert (body["width"], body["height"]) == im.size
        view = page.box("#boxes-view")
        assert abs(view["width"] / view["height"] - body["width"] / body["height"]) < 0.02, view
        sx, sy = view["width"] / body["width"], view["height"] / body["height"]
        for b in boxes:
            x1, y1, x2, y2 = b["box"]
            shown = page.box(f"#boxes-view .box-hotspot[data-index='{b['index']}']")
            for got, want in [(shown["left"], view["left"] + x1 * sx), (shown["top"], view["top"] + y1 * sy),
                              (shown["right"], view["left"] + x2 * sx), (shown["bottom"], view["top"] + y2 * sy)]:
                assert abs(got - want) < 1.5, (b, shown, view)
        assert p.locator("#boxes-view .box-hotspot").count() == 2
        assert_painted_like(page.painted_element("#boxes-view"), data_url_pixels(body["images"]["boxes"]), "boxes")
        rows = p.eval_on_selector_all("#boxes-table tbody tr",
                                      "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
        assert rows == [[str(b["index"]), "dog", f"{100 * b['score']:.1f} %"] for b in boxes], rows
        assert page.shown("#boxes-table") and not page.shown("#predictions")
        assert p.text_content("#result-layer") == f"Layer: {body['layer']}"
        # the first box's maps, nothing enlarged yet
        assert_shows_box(page, body, 1)
        assert p.eval_on_selector("#lightbox", "d => d.open") is False
        # box 2's button clicked: its maps, and its overlay large
        p.click("#boxes-view .box-hotspot[data-index='2']")
        p.wait_for_selector("#lightbox[open]")
        assert p.eval_on_selector_all("#lightbox-picture img", "is => is.map(i => i.src)") == [
            body["images"]["input"], boxes[1]["images"]["gcam"]]
        assert p.text_content("#lightbox-caption").endswith(" - Box 2: dog " + rows[1][2])
        p.keyboard.press("Escape")
        p.wait_for_selector("#lightbox", state="hidden")
        assert_shows_box(page, body, 2)
        assert_painted_like(page.painted("gcam"), data_url_pixels(boxes[1]["images"]["gcam"]), "box 2's gcam")
        page.screenshot("detection", tmp_path)
        # box 1's table row clicked: its maps again, large
        p.click("#boxes-table tbody tr:nth-child(1)")
        p.wait_for_selector("#lightbox[open]")
        assert p.text_content("#lightbox-caption").endswith(" - Box 1: dog " + rows[0][2])
        p.keyboard.press("Escape")
        p.wait_for_selector("#lightbox", state="hidden")
        assert_shows_box(page, body, 1)
        # another task: the result, the boxes and their table cleared; its result has no overview
        p.check("#task-classification")
        assert not page.shown("#result") and p.locator("#boxes-view .box-hotspot").count() == 0
        assert p.locator("#boxes-table tbody tr").count() == 0
        page.explain()
        assert page.shown("#result") and not page.shown("#boxes-figure") and not page.shown("#boxes-table")
        assert all(page.shown(s) for s in SHOWN.values())
    finally:
        page.close()


def test_no_detection_shows_the_servers_message_and_the_overview(browser, detect_folder):
    """A threshold no detection reaches: the server's message, its overview, no map, no table."""
    server = detect_server_with(detect_folder, "-detect_score_threshold", "0.99")
    try:
        page = Page(browser, server.url)
        try:
            p = page.page
            p.check("#task-detection")
            p.set_input_files("#file", str(IMAGE))
            body = explain_answer(page)
            assert body["boxes"] == [] and body["message"] == ("no detection scores 0.99 or more (the best scores "
                                                               "0.970): nothing to explain"), body
            assert page.shown("#result") and not page.shown("#error"), p.text_content("#error")
            assert p.text_content("#target") == body["message"]
            assert page.shown("#boxes-figure") and p.get_attribute("#img-boxes", "src") == body["images"]["boxes"]
            assert p.locator("#boxes-view .box-hotspot").count() == 0 and not page.shown("#boxes-table")
            assert not any(page.shown(s) for s in SHOWN.values())
        finally:
            page.close()
    finally:
        server.stop()
