"""Odd images through classification.py, as a user runs it.

Where the original worked, the run succeeds with the three images, and the image is read as the
original read it: grey becomes three equal channels, alpha is dropped, a palette is expanded - so
each such image gives exactly the files of its plain-RGB equivalent. Where it cannot work, ONE line
on stderr, exit code 2, and nothing written (see docs/numerics.md, "Where we differ", for the deliberate
differences: truncated JPEGs are refused, CMYK is converted, oversized images are refused).
Images are made in tmp_path.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cli_runner
import numpy as np
import pytest
from conftest import DATA, assert_png_close, assert_refused
from PIL import Image

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run

MODEL = DATA / "models" / "mini_vgg16_v1"
TRIPLET = ["classify_gb_3.png", "classify_gb_gcam_3.png", "classify_gcam_hm_3.png"]
RNG = np.random.default_rng(6)
GREY = RNG.integers(0, 256, (40, 48), dtype=np.uint8)  # not square: the scaling matters
RGB = RNG.integers(0, 256, (40, 48, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cli() -> cli_runner.PrewarmedCLI:
    return cli_runner.shared()


def classify(cli: cli_runner.PrewarmedCLI, image: Path, out: Path):
    return cli.run("classification.py", "-proto_file", f"{MODEL}.prototxt", "-model_file", f"{MODEL}.caffemodel",
                   "-input_image_path", str(image), "-label", "3", "-out_path", str(out))


def outputs_of(cli: cli_runner.PrewarmedCLI, image: Path, out: Path) -> dict[str, bytes]:
    """Run on ``image``: it must succeed with the three images, which are returned by name."""
    result = classify(cli, image, out)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == TRIPLET, os.listdir(out)
    return {name: (out / name).read_bytes() for name in TRIPLET}


def save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


# --------------------------------------------------------------------------------------------------
# Images the original read: same results as their plain RGB equivalent


def palette_image() -> Image.Image:
    im = Image.fromarray((GREY // 64).astype(np.uint8), "P")  # 4 colours
    im.putpalette([255, 0, 0, 0, 128, 0, 0, 0, 255, 250, 250, 250])
    return im


@pytest.mark.parametrize("make, equivalent", [
    (lambda p: save(Image.fromarray(GREY, "L"), p / "grey.png"), lambda: np.stack([GREY] * 3, -1)),
    (lambda p: save(Image.fromarray(np.stack([GREY, 255 - GREY], -1), "LA"), p / "grey_alpha.png"),
     lambda: np.stack([GREY] * 3, -1)),
    (lambda p: save(palette_image(), p / "palette.png"), lambda: np.asarray(palette_image().convert("RGB"))),
    (lambda p: save(palette_image(), p / "palette_trns.png", transparency=bytes([0, 128, 255, 255])),
     lambda: np.asarray(palette_image().convert("RGB"))),
    (lambda p: save(Image.fromarray(np.dstack([RGB, GREY]), "RGBA"), p / "rgba.png"), lambda: RGB),
], ids=["grey", "grey+alpha", "palette", "palette+tRNS", "RGBA"])
def test_an_image_gives_the_results_of_its_rgb_equivalent(cli, tmp_path, make, equivalent, rgb_outputs):
    assert outputs_of(cli, make(tmp_path), tmp_path / "odd") == rgb_outputs(equivalent())


@pytest.fixture(scope="module")
def rgb_outputs(cli, tmp_path_factory):
    """The outputs for a plain RGB PNG of given pixels, computed once per distinct image."""
    done: dict[bytes, dict[str, bytes]] = {}

    def outputs(pixels: np.ndarray) -> dict[str, bytes]:
        key = pixels.tobytes()
        if key not in done:
            folder = tmp_path_factory.mktemp("rgb")
            done[key] = outputs_of(cli, save(Image.fromarray(pixels, "RGB"), folder / "reference.png"), folder / "out")
        return done[key]

    return outputs


def test_a_16_bit_png_gives_the_results_of_its_8_bit_version(cli, tmp_path):
    """Samples v * 257 on 16 bits are v on 8 bits: the same image (read at full precision)."""
    deep = tmp_path / "deep.png"
    write_png16_rgb(deep, RGB.astype(np.uint16) * 257)
    reference = save(Image.fromarray(RGB, "RGB"), tmp_path / "reference.png")
    got = outputs_of(cli, deep, tmp_path / "deep")
    outputs_of(cli, reference, tmp_path / "rgb")
    for name in got:
        assert_png_close(tmp_path / "deep" / name, tmp_path / "rgb" / name, max_diff=1)


def write_png16_rgb(path: Path, samples: np.ndarray) -> None:
    """A 16-bit RGB PNG (Pillow cannot write one)."""
    height, width, _ = samples.shape
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in samples)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.mark.parametrize("mode, colour", [("CMYK", (0, 255, 255, 0)), ("L", 200)], ids=["CMYK", "grey"])
def test_cmyk_and_grey_jpegs_are_explained(cli, tmp_path, mode, colour):
    image = Image.new(mode, (48, 40), colour)
    image.paste(Image.new(mode, (16, 16), 0 if mode == "L" else (255, 0, 0, 0)), (8, 8))
    outputs_of(cli, save(image, tmp_path / "photo.jpg"), tmp_path / "out")


# --------------------------------------------------------------------------------------------------
# Files that cannot be read: one line, exit code 2, nothing written


def half_a_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def png_bomb(path: Path) -> Path:
    """A PNG whose header claims 100000 x 100000 pixels (10 Gpx; 30 GB as RGB)."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + _chunk(b"IEND", b""))
    return path


def text_file(path: Path) -> Path:
    path.write_text("this is not a picture\n")
    return path


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def empty_folder(path: Path) -> Path:
    path.mkdir()
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def failing_read(path: Path) -> Path:
    """A file that can be opened but not read: /proc/self/mem fails with EIO at offset 0."""
    path.symlink_to("/proc/self/mem")
    return path


@pytest.mark.parametrize("make, message", [
    (half_a_jpeg, r"cannot decode image '.*x\.jpg': image file is truncated"),
    # past Pillow's own limit (179 Mpx) too, our message: refused from the header
    (png_bomb, r"cannot load image '.*x\.jpg': 100000x100000 exceeds the limit of 67108864 pixels$"),
    (text_file, r"cannot load image '.*x\.jpg': not a JPEG or PNG image"),
    (empty_file, r"cannot load image '.*x\.jpg': an empty file"),
    (empty_folder, r"x\.jpg"),
    (fifo, r"-input_image_path: .*x\.jpg is not a regular file \(a device, pipe or socket\)"),
    (failing_read, r"cannot read image '.*x\.jpg': Input/output error"),
], ids=["truncated JPEG", "decompression bomb", "text file", "zero bytes", "folder", "FIFO", "read error"])
def test_an_unreadable_image_is_one_line_and_exit_2(cli, tmp_path, make, message):
    out = tmp_path / "out"
    assert_refused(classify(cli, make(tmp_path / "x.jpg"), out), out, message)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permission bits")
def test_an_image_without_read_permission_is_one_line_and_exit_2(cli, tmp_path):
    image = save(Image.fromarray(RGB), tmp_path / "x.jpg")
    image.chmod(0)
    out = tmp_path / "out"
    assert_refused(classify(cli, image, out), out, r"-input_image_path: .*x\.jpg is not readable")
