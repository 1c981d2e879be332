"""The web API on images of extreme shape, cut or lying JPEGs and EXIF-rotated photos (in process, as
test_api.py): a 200 with the CLI's files or a one-line 4xx, never a 500, and the next request on the
same client is answered. Images are made in tmp_path."""
from __future__ import annotations

import time

import numpy as np
import pytest
import test_extreme_images as shapes  # the image makers of the CLI's tests
from PIL import Image, ImageOps

from gradcam_core.web.demo import Demo, load_classification

from .conftest import IMAGE, MODEL, PROTO, SYNSET, assert_images_are_the_clis, cli_run
from .test_api import Client, assert_error, ok


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    demo = Demo({"classification": load_classification(MODEL, proto_file=PROTO, synset_file=SYNSET)})
    with Client(demo, tmp_path_factory.mktemp("uploads")) as c:
        yield c


def explain(client, path, **fields):
    return client.explain(image=path.read_bytes(), filename=path.name, task="classification", **fields)


@pytest.mark.slow
def test_extreme_aspect_ratios_are_explained_or_refused_and_the_next_request_works(client, tmp_path):
    tall = shapes.png(tmp_path / "tall.png", 1, 200_000)
    start = time.perf_counter()
    body = ok(explain(client, tall, label="243"))
    assert time.perf_counter() - start < 30
    assert_images_are_the_clis(body["images"], body["files"], cli_run("classification.py", "-label", "243", image=tall),
                               "1 x 200000")
    ok(explain(client, shapes.png(tmp_path / "taller.png", 1, 2_000_000)))
    assert_error(explain(client, shapes.png(tmp_path / "narrow.png", 3, 400_000)), 400,
                 r"^cannot scale image 'narrow\.png': 3x400000 is too tall for its width to scale to 224x224: "
                 r"an image narrower than 224 pixels")
    ok(client.explain(task="classification"))  # the same client, the next request: answered


def test_cut_and_lying_jpegs_are_400(client, tmp_path):
    assert_error(explain(client, shapes.cut_jpeg(tmp_path / "cut.jpg", 0.6)), 400,
                 r"^cannot decode image 'cut\.jpg': truncated JPEG")
    start = time.perf_counter()
    assert_error(explain(client, shapes.lying_jpeg(tmp_path / "lie.jpg")), 400,
                 r"^cannot decode image 'lie\.jpg': truncated JPEG")
    assert time.perf_counter() - start < 5
    ok(client.explain(task="classification"))


def test_exif_orientation_is_followed_as_a_browser_shows_the_photo(client, tmp_path):
    """A photo tagged Orientation 6 (turn a quarter clockwise) gives the CLI's files for the photo turned
    (the CLI itself ignores the tag, as the original did)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "rotated.jpg"
    with Image.open(IMAGE) as im:
        im.save(rotated, "JPEG", exif=exif, quality=90)
    upright = tmp_path / "upright.png"
    with Image.open(rotated) as im:
        turned = ImageOps.exif_transpose(im)
        assert turned.size == (im.height, im.width)
        turned.save(upright)
    body = ok(explain(client, rotated, label="243"))
    turned_run = cli_run("classification.py", "-label", "243", image=upright)
    assert_images_are_the_clis(body["images"], body["files"], turned_run, "Orientation 6")
    as_stored = cli_run("classification.py", "-label", "243", image=rotated)  # the scripts ignore the tag
    assert any(not np.array_equal(as_stored.files[n], turned_run.files[n]) for n in turned_run.files)
