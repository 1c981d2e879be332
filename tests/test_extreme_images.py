"""Images of extreme shape and lying or cut JPEGs, through ``image.scale``, ``load_image`` and
classification.py: bounded time and memory, the original's bits where it could compute them, ONE
line and exit code 2 where it cannot. Images are made in tmp_path (tiny on disk)."""
from __future__ import annotations

import io
import os
import struct
import time
from pathlib import Path

import cli_runner
import numpy as np
import pytest
import torch
from conftest import FIXTURE_ARGS, ROOT, assert_refused
from PIL import Image

from gradcam_core.errors import GradCamError
from gradcam_core.image import resize
from gradcam_core.image.decode import load_image

CLASSIFY = FIXTURE_ARGS["classification.py"]
TRIPLET = ["classify_gb_3.png", "classify_gb_gcam_3.png", "classify_gcam_hm_3.png"]
CAT_DOG = ROOT / "images" / "cat_dog.jpg"


@pytest.fixture(scope="module")
def cli() -> cli_runner.PrewarmedCLI:
    return cli_runner.shared()


def classify(cli, image: Path, out: Path, mem_limit_mb: int | None = 2048, timeout: float = 120):
    return cli.run("classification.py", *CLASSIFY, "-input_image_path", str(image), "-label", "3",
                   "-out_path", str(out), mem_limit_mb=mem_limit_mb, timeout=timeout)


# ------------------------------------------------------------------------- image.scale, the C loop

def c_line(src: list, m: int) -> list:
    """``image_(Main_scaleLinear_rowcol)`` of Torch7's image.c, literally, on one line of numpy scalars
    (float32 or float64 "real"; its weights and accumulator are C floats)."""
    f32, n = np.float32, len(src)
    if m > n:
        if n == 1:
            out = [src[0]] * (m - 1)
        else:
            step, out = f32(n - 1) / f32(m - 1), []
            for di in range(m - 1):
                si_f = f32(di) * step
                si_i = int(si_f)
                si_f = f32(si_f - f32(si_i))
                out.append((f32(1) - si_f) * src[si_i] + si_f * src[si_i + 1])
        return out + [src[n - 1]]
    if m == n:
        return list(src)
    step, out = f32(n) / f32(m), []
    si0_i, si0_f = 0, f32(0)
    for di in range(m):
        si1_f = f32(di + 1) * step
        si1_i = int(si1_f)
        si1_f = f32(si1_f - f32(si1_i))
        acc = f32((f32(1) - si0_f) * src[si0_i])
        count = f32(1) - si0_f
        for si in range(si0_i + 1, si1_i):
            acc = f32(acc + src[si])
            count = f32(count + f32(1))
        if si1_i < n:
            acc = f32(acc + si1_f * src[si1_i])
            count = f32(count + si1_f)
        out.append(f32(acc / count))
        si0_i, si0_f = si1_i, si1_f
    return out


def c_scale(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """image.scale of (C, h, w) in C's order: every row to ``width``, then every column to ``height``."""
    real = x.dtype.type
    out = np.empty((x.shape[0], height, width), dtype=x.dtype)
    for c, plane in enumerate(x):
        rows = np.array([[real(v) for v in c_line(list(r), width)] for r in plane], dtype=x.dtype)
        for j in range(width):
            out[c, :, j] = [real(v) for v in c_line(list(rows[:, j]), height)]
    return out


@pytest.mark.parametrize("shape, size", [
    ((2, 61, 1), (7, 5)),      # one pixel wide: the row pass is skipped
    ((2, 1, 83), (6, 4)),      # one pixel tall, long footprints (running sums)
    ((1, 50, 3), (9, 4)),      # narrow and tall: the row pass in strips
    ((3, 17, 23), (11, 13)),   # a photo's case: both shrunk
    ((1, 9, 7), (20, 15)),     # both enlarged
    ((1, 12, 40), (50, 5)),    # one enlarged, one shrunk
    ((1, 300, 2), (3, 2)),     # long footprints in the column pass of a strip
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_is_the_c_loop_bit_for_bit(monkeypatch, shape, size, dtype):
    monkeypatch.setattr(resize, "_STRIP_BYTES", 64)  # several strips even for these small images
    x = np.random.default_rng(sum(shape)).random(shape).astype(dtype)
    got = resize.scale(torch.from_numpy(x), *size).numpy()
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, c_scale(x, *size))


@pytest.mark.parametrize("h, w", [(2_000_000, 1), (1, 4_000_000), (250_000, 3)])
def test_scaling_an_extreme_aspect_ratio_is_fast(h, w):
    """Cost bounded by the input and the output (before: a (h x 224) row pass, 5 GB for 2,000,000 x 1)."""
    x = torch.rand(3, h, w)
    start = time.perf_counter()
    got = resize.scale(x, 224, 224)
    assert time.perf_counter() - start < 10
    if w == 1:  # each output row is the mean of its footprint, the same across the row
        assert torch.equal(got, got[:, :, :1].expand_as(got))
    torch.testing.assert_close(got.mean(), x.mean(), atol=2e-3, rtol=0)


# ------------------------------------------------------------------------------- classification.py

def png(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A width x height RGB PNG of smooth random colours (a few KB even for millions of pixels)."""
    rng = np.random.default_rng(seed)
    line = rng.integers(0, 256, (max(width, height) // 1000 + 2, 3)).astype(np.uint8)
    ramp = np.repeat(line, 1000, axis=0)[: max(width, height)]  # along the long side, the same across
    pixels = np.broadcast_to(ramp[:, None] if height >= width else ramp[None], (height, width, 3))
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, optimize=True)
    return path


@pytest.mark.slow
def test_a_folder_with_extreme_aspect_ratios_completes_in_bounded_memory(cli, tmp_path):
    """1 x 200,000, 40,000,000 x 1 and 1 x 2,000,000 pixels are explained under a 2 GB address-space cap
    (before: +2 GB, 7.2 GB, 10.75 GB); 3 x 400,000 is skipped with one line, and the rest completes."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / "good.png")
    sizes = {"tall.png": (1, 200_000), "wide.png": (40_000_000, 1), "taller.png": (1, 2_000_000),
             "narrow.png": (3, 400_000)}
    for name, (width, height) in sizes.items():
        png(folder / name, width, height)
    assert max(os.path.getsize(folder / n) for n in sizes) < 400_000
    out = tmp_path / "out"
    start = time.perf_counter()
    result = classify(cli, folder, out)
    assert time.perf_counter() - start < 90
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("skipping ") and "narrow.png: cannot scale image" in lines[0], lines
    assert "3x400000 is too tall for its width" in lines[0] and len(lines) == 2, lines
    assert "skipped 1 of 5 images" in lines[1], lines
    for name in ("good", "tall", "wide", "taller"):
        assert sorted(os.listdir(out / f"{name}.png")) == TRIPLET, (name, result.stderr)
    assert not (out / "narrow.png").exists()


def test_an_image_too_narrow_for_its_height_is_one_line(cli, tmp_path):
    out = tmp_path / "out"
    image = png(tmp_path / "narrow.png", 2, 3_000_000)
    assert_refused(classify(cli, image, out), out,
                   r"cannot scale image '.*narrow\.png': 2x3000000 is too tall for its width to scale to 224x224")


# ------------------------------------------------------------------------------------ lying JPEGs

def cut_jpeg(path: Path, fraction: float) -> Path:
    data = CAT_DOG.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)] + b"\xff\xd9")
    return path


def lying_jpeg(path: Path, width: int = 6000, height: int = 6000) -> Path:
    """A small JPEG whose frame header claims width x height."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_a_jpeg_cut_short_with_an_end_marker_is_truncated(cli, tmp_path, fraction):
    """(before: libjpeg's grey padding explained, exit 0)"""
    out = tmp_path / "out"
    assert_refused(classify(cli, cut_jpeg(tmp_path / "cut.jpg", fraction), out), out,
                   r"cannot decode image '.*cut\.jpg': truncated JPEG")


@pytest.mark.parametrize("options", [{"progressive": True}, {"progressive": True, "optimize": True}])
def test_a_progressive_jpeg_cut_between_scans_is_truncated(tmp_path, options):
    """libjpeg decodes a progressive file whose last scans are missing without a warning (before: a
    blurred image, exit 0); every scan boundary of the file is tried."""
    buf = io.BytesIO()
    with Image.open(CAT_DOG) as im:
        im.save(buf, "JPEG", **options)
    data = buf.getvalue()
    (tmp_path / "whole.jpg").write_bytes(data)
    assert load_image(tmp_path / "whole.jpg").shape == (3, 480, 640)
    scans = [i for i in range(len(data) - 1) if data[i: i + 2] == b"\xff\xda"]
    assert len(scans) > 5
    for cut in scans[1:]:
        (tmp_path / "cut.jpg").write_bytes(data[:cut] + b"\xff\xd9")
        with pytest.raises(GradCamError, match=r"truncated JPEG \(its scans end before coefficient \d+ of "
                                               r"component \d is complete\)"):
            load_image(tmp_path / "cut.jpg")


def test_the_intact_jpeg_and_its_pixels_are_unchanged(cli, tmp_path):
    out = tmp_path / "out"
    result = classify(cli, CAT_DOG, out)
    assert result.returncode == 0 and sorted(os.listdir(out)) == TRIPLET, result.stderr
    with Image.open(CAT_DOG) as im:  # Pillow's pixels, as before
        expected = np.asarray(im.convert("RGB")).transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_array_equal(load_image(CAT_DOG).numpy(), expected)


def test_a_jpeg_whose_header_lies_about_its_size_is_refused_fast(cli, tmp_path):
    image = lying_jpeg(tmp_path / "lie.jpg")
    assert image.stat().st_size < 2000
    start = time.perf_counter()
    with pytest.raises(GradCamError, match=r"truncated JPEG"):
        load_image(image)
    assert time.perf_counter() - start < 1
    out = tmp_path / "out"
    assert_refused(classify(cli, image, out, mem_limit_mb=1024, timeout=30), out,
                   r"cannot decode image '.*lie\.jpg': truncated JPEG")


# ------------------------------------------------------------------------------------ EXIF orientation

@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_the_image_as_pillow_and_browsers_do(tmp_path, orientation):
    from PIL import ImageOps

    from gradcam_core.image.decode import image_size

    exif = Image.Exif()
    exif[0x0112] = orientation
    pixels = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "tagged.png"
    Image.fromarray(pixels).save(path, exif=exif)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im)).transpose(2, 0, 1)
    got = load_image(path, exif_orientation=True)
    np.testing.assert_array_equal(got.numpy(), expected.astype(np.float32) * np.float32(1 / 255))
    assert image_size(path, exif_orientation=True) == (got.shape[2], got.shape[1])
    assert load_image(path).shape == (3, 5, 7) and image_size(path) == (7, 5)  # the scripts: as stored
