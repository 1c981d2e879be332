"""The web API's detection task, in process (as test_api.py) on tests/test_detection.py's tiny seeded
detector: each box's images are the bytes of detection.py's files for that box, the overview is its
``detect_boxes.png``, a box's overlay its heatmap blended half over the input; no detection above the
threshold is a 200 with the overview and a message; bad fields are a one-line 400."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image
from test_detection import NAMES, tiny_detector

from gradcam_core.cli.detection import DetectionOptions, run_detection
from gradcam_core.cli.paths import input_images
from gradcam_core.run.detection import DetectionTask
from gradcam_core.run.task import Methods
from gradcam_core.web.demo import Demo, DetectionDemoTask

from .test_api import Client, assert_error, ok


@pytest.fixture(scope="module")
def task() -> DetectionTask:
    return DetectionTask(tiny_detector(), NAMES, "tiny")


@pytest.fixture(scope="module")
def client(task, tmp_path_factory):
    cpu = torch.device("cpu")
    demo = Demo({"detection": DetectionDemoTask(task, "tiny", "", cpu, score_threshold=0.5, max_boxes=2)})
    with Client(demo, tmp_path_factory.mktemp("uploads")) as c:
        yield c


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "street.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def png(url: str) -> bytes:
    assert url.startswith("data:image/png;base64,")
    return base64.b64decode(url.removeprefix("data:image/png;base64,"))


def pixels(url: str) -> np.ndarray:
    """A PNG data URL's RGB pixels (H, W, 3) as floats."""
    with Image.open(io.BytesIO(png(url))) as im:
        assert im.mode == "RGB", im.mode
        return np.asarray(im).astype(float)


def cli_files(task, image, out, **options) -> tuple[list[str], dict[str, bytes]]:
    lines: list[str] = []
    inputs = input_images("input_image_path", str(image), "", out)
    files = run_detection(task, DetectionOptions("tiny", None, inputs, **options), lines.append)
    return lines, {f.name: f.read_bytes() for f in files}


def test_each_box_s_images_are_the_cli_s_files(client, task, image, tmp_path):
    config = client.http.get("/api/config").json()["tasks"]["detection"]
    assert config["enabled"] and config["default_layer"] == "backbone" and config["classes"] == NAMES
    assert config["score_threshold"] == 0.5 and config["max_boxes"] == 2
    body = ok(client.explain(image=image.read_bytes(), filename=image.name, task="detection"))
    lines, files = cli_files(task, image, tmp_path / "out", max_boxes=2)
    assert body["task"] == "detection" and body["layer"] == "backbone" and "message" not in body
    assert (body["width"], body["height"]) == (64, 48)
    assert [b["index"] for b in body["boxes"]] == [1, 2]
    for box, line in zip(body["boxes"], lines[1:], strict=True):
        assert line == f"Box {box['index']}: thing {box['score']:.3f} at ({', '.join(f'{v:g}' for v in box['box'])})"
        assert box["name"] == "thing" and box["label"] == 1
        assert set(box["images"]) == {"gcam", "gb", "gb_gcam", "overlay"}
        for kind in ("gcam", "gb", "gb_gcam"):
            assert png(box["images"][kind]) == files[box["files"][kind]], (box["index"], kind)
        assert box["files"]["gcam"] == f"detect_gcam_hm_{box['index']}_thing.png"
        # the overlay (no CLI file): the box's heatmap blended half over the input
        blend = 0.5 * pixels(body["images"]["input"]) + 0.5 * pixels(box["images"]["gcam"])
        assert np.abs(pixels(box["images"]["overlay"]) - blend).max() <= 1.0, box["index"]
    assert body["files"]["boxes"] == "detect_boxes.png"
    assert png(body["images"]["boxes"]) == files["detect_boxes.png"]
    with Image.open(io.BytesIO(png(body["images"]["input"]))) as shown:
        assert shown.size == (64, 48)  # the image at its own size, as the detector saw it
    # another method: its files (names and bytes)
    body = ok(client.explain(image=image.read_bytes(), filename=image.name, task="detection", method="eigencam"))
    _, files = cli_files(task, image, tmp_path / "eigen", max_boxes=2, methods=Methods(("eigencam",)))
    assert body["method"] == "eigencam"
    assert all(png(b["images"][k]) == files[b["files"][k]] for b in body["boxes"] for k in ("gcam", "gb_gcam"))


def test_no_detection_above_the_threshold_is_a_message_and_bad_fields_are_400(task, image, tmp_path):
    cpu = torch.device("cpu")
    demo = Demo({"detection": DetectionDemoTask(task, "tiny", "", cpu, score_threshold=0.99, max_boxes=2)})
    with Client(demo, tmp_path / "uploads") as client:
        body = ok(client.explain(image=image.read_bytes(), filename=image.name, task="detection"))
        assert body["boxes"] == [] and body["message"] == ("no detection scores 0.99 or more (the best scores "
                                                           "0.966): nothing to explain")
        _, files = cli_files(task, image, tmp_path / "out", score_threshold=0.99)
        assert png(body["images"]["boxes"]) == files["detect_boxes.png"]
        assert_error(client.explain(image=image.read_bytes(), filename=image.name, task="detection", aug_smooth="1"),
                     400, r"^aug_smooth does not apply to detection")
        assert_error(client.explain(image=image.read_bytes(), filename=image.name, task="detection", layer="nope"),
                     400, r"nope")
        assert_error(client.explain(image=b"not an image", filename="x.png", task="detection"), 400, r"x\.png")
        assert client.leftovers() == []
