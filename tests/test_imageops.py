"""imageops against the original's own outputs (tests/data/cases) and against independent formulas."""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gradcam_core import image as imageops
from gradcam_core.errors import GradCamError

TESTS = Path(__file__).resolve().parent
CASES = TESTS / "data" / "cases"
IMAGES = TESTS.parent / "images"

# The cases with a full tensor dump: the default tensor type the script ran with (VQA: double) and the
# file names of its three PNGs ({} = gcam_hm, gb, gb_gcam). All four ran on images/cat_dog.jpg.
FULL_DUMPS = {
    "cls_v1_catdog_pred_hm": (torch.float32, "classify_{}_5.png"),
    "cls_alex_v1_catdog_pred_hm": (torch.float32, "classify_{}_1.png"),
    "vqa_catdog_animal_dog": (torch.float64, "vqa_{}_dog.png"),
    "cap_catdog_default": (torch.float32, "caption_{}_a dog and a cat posing for a picture.png"),
}


def oracle(case: str, name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(CASES / case / "tensors" / f"{name}.npy"))


def decoded_png(data: bytes | Path) -> np.ndarray:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        return np.asarray(im)


# ------------------------------------------------------------------------------ the original's outputs

@pytest.mark.parametrize("case", FULL_DUMPS)
def test_preprocess_matches_the_original_input_tensor(case: str) -> None:
    dtype, _ = FULL_DUMPS[case]
    expected = oracle(case, "preprocessed_input")  # float64, as utils.preprocess returned it
    size = expected.shape[-1]
    got = imageops.preprocess(IMAGES / "cat_dog.jpg", size, size, dtype)
    assert got.dtype == dtype and got.shape == (3, size, size)
    # Bit-exact: same JPEG decode, same float32 scale arithmetic; the float32 scripts only differ by
    # the final rounding of the float64 result to float32 (<= 7.6e-6 on the 0..255 scale).
    assert torch.equal(got, expected.to(dtype)), (got.double() - expected).abs().max()


@pytest.mark.parametrize("case", FULL_DUMPS)
def test_scale_reproduces_the_original_upscaled_gradcam(case: str) -> None:
    raw, expected = oracle(case, "gcam_raw"), oracle(case, "gcam_scaled")
    size = expected.shape[-1]
    # The scripts scale gcam:float(), also in the double VQA run.
    assert torch.equal(imageops.scale(raw.float(), size, size), expected)


@pytest.mark.parametrize("case", FULL_DUMPS)
def test_heatmap_colours_match_the_original(case: str) -> None:
    dtype, _ = FULL_DUMPS[case]
    heatmap = imageops.to_heatmap(oracle(case, "gcam_scaled").to(dtype))
    assert torch.equal(heatmap, oracle(case, "heatmap_colormap").to(dtype))


@pytest.mark.parametrize("case", FULL_DUMPS)
@pytest.mark.parametrize("kind", ["gcam_hm", "gb", "gb_gcam"])
def test_saved_pngs_match_the_original_pixels(case: str, kind: str) -> None:
    dtype, pattern = FULL_DUMPS[case]
    if kind == "gcam_hm":
        image = imageops.to_heatmap(oracle(case, "gcam_scaled").to(dtype))
    else:
        image = oracle(case, "gb_rgb_raw" if kind == "gb" else "gb_gcam_raw").to(dtype)
    got = decoded_png(imageops.png_bytes(imageops.to_display(image)))
    expected = decoded_png(CASES / case / pattern.format(kind))
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)  # every pixel, exactly


# ------------------------------------------------------------------------------------------------ scale

@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), dh=st.integers(0, 30), dw=st.integers(0, 30),
       double=st.booleans(), seed=st.integers(0, 2**16))
def test_enlarging_is_align_corners_bilinear(h: int, w: int, dh: int, dw: int, double: bool, seed: int) -> None:
    dtype = torch.float64 if double else torch.float32
    x = torch.rand(2, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    expected = F.interpolate(x[None], size=(h + dh, w + dw), mode="bilinear", align_corners=True)[0]
    torch.testing.assert_close(imageops.scale(x, w + dw, h + dh), expected, rtol=0, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), fh=st.integers(1, 5), fw=st.integers(1, 5),
       double=st.booleans(), seed=st.integers(0, 2**16))
def test_shrinking_by_an_integer_factor_is_the_block_mean(h: int, w: int, fh: int, fw: int, double: bool,
                                                          seed: int) -> None:
    dtype = torch.float64 if double else torch.float32
    x = torch.rand(3, h * fh, w * fw, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    expected = x.view(3, h, fh, w, fw).mean(dim=(2, 4))
    got = imageops.scale(x, w, h)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)  # float32 accumulator, also for double


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), height=st.integers(1, 40), width=st.integers(1, 40),
       value=st.floats(-1e3, 1e3, allow_subnormal=False))
def test_a_constant_image_stays_constant(h: int, w: int, height: int, width: int, value: float) -> None:
    got = imageops.scale(torch.full((1, h, w), value), width, height)
    assert got.shape == (1, height, width)
    torch.testing.assert_close(got, torch.full_like(got, value), rtol=1e-6, atol=1e-30)


def test_shrinking_averages_partial_pixels_by_area() -> None:
    # 3 -> 2 samples: output 0 covers [0, 1.5) = x0 + x1/2, output 1 covers [1.5, 3) = x1/2 + x2.
    x = torch.tensor([[[0.0, 3.0, 6.0]]])
    torch.testing.assert_close(imageops.scale(x, 2, 1), torch.tensor([[[1.0, 5.0]]]))


def test_scale_treats_leading_dims_as_a_batch_and_returns_a_new_tensor() -> None:
    x = torch.rand(2, 3, 10, 7)
    got = imageops.scale(x, 4, 15)
    assert got.shape == (2, 3, 15, 4)
    assert torch.equal(got[1, 2], imageops.scale(x[1, 2], 4, 15))
    same = imageops.scale(x, 7, 10)
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()


# ---------------------------------------------------------------------------------------------- loading

def write_png(path: Path, samples: np.ndarray, color_type: int, bit_depth: int, *, sub_filter: bool = False,
              idat: bool = True, size: tuple[int, int] | None = None) -> Path:
    """A PNG written by hand: any bit depth, optionally with the Sub filter on every row (so decoding
    depends on the bytes-per-pixel), optionally with a lying size and no image data at all."""
    height, width = size or samples.shape[:2]
    rows = samples.astype(">u2" if bit_depth == 16 else "u1").reshape(samples.shape[0], -1)
    bpp = rows.shape[1] * rows.itemsize // samples.shape[1]  # bytes per pixel
    raw = b""
    for row in rows.view(np.uint8).reshape(rows.shape[0], -1):
        if sub_filter:
            row = (row - np.concatenate([np.zeros(bpp, np.uint8), row[:-bpp]])).astype(np.uint8)
        raw += bytes([1 if sub_filter else 0]) + row.tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = chunk(b"IDAT", zlib.compress(raw)) if idat else b""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + body + chunk(b"IEND", b""))
    return path


def level(raw: np.ndarray, max_value: int = 255, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """What image.load gives for raw (C, H, W) samples: raw * (1/max) in the tensor's precision."""
    return torch.from_numpy(raw).to(dtype) * torch.tensor(1 / max_value, dtype=dtype)


@pytest.mark.parametrize("mode, channels", [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
def test_png_keeps_its_native_channels_and_levels(tmp_path: Path, mode: str, channels: int) -> None:
    pixels = np.random.default_rng(channels).integers(0, 256, (5, 6, channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(tmp_path / "a.png")
    got = imageops.load_image(tmp_path / "a.png")
    assert got.dtype == torch.float32
    assert torch.equal(got, level(pixels.transpose(2, 0, 1)))


def test_low_bit_depth_grey_png_is_expanded_to_8_bits(tmp_path: Path) -> None:
    packed = np.array([[0b00_01_10_11]], dtype=np.uint8)  # four 2-bit samples 0, 1, 2, 3
    got = imageops.load_image(write_png(tmp_path / "g2.png", packed, 0, 2, size=(1, 4)))
    assert torch.equal(got, level(np.array([[[0, 85, 170, 255]]])))


def test_16_bit_grey_png_keeps_full_precision(tmp_path: Path) -> None:
    samples = np.array([[0, 1, 256, 257, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(samples).save(tmp_path / "g16.png")
    got = imageops.load_image(tmp_path / "g16.png", torch.float64)
    assert torch.equal(got, level(samples[None].astype(np.int32), 65535, torch.float64))


@pytest.mark.parametrize("color_type, channels", [(2, 3), (6, 4), (4, 2)])
def test_16_bit_colour_png_keeps_full_precision(tmp_path: Path, color_type: int, channels: int) -> None:
    samples = np.random.default_rng(channels).integers(0, 65536, (4, 5, channels), dtype=np.uint16)
    path = write_png(tmp_path / "c16.png", samples, color_type, 16, sub_filter=True)
    got = imageops.load_image(path, torch.float64)
    assert torch.equal(got, level(samples.transpose(2, 0, 1).astype(np.int32), 65535, torch.float64))


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_png_becomes_rgb_or_rgba(tmp_path: Path, transparent: bool) -> None:
    im = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), "P")
    im.putpalette([255, 0, 0, 0, 0, 255])
    im.save(tmp_path / "p.png", **({"transparency": bytes([255, 0])} if transparent else {}))
    got = imageops.load_image(tmp_path / "p.png")
    red, blue = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]
    if transparent:
        red, blue = red + [1.0], blue + [0.0]
    assert torch.equal(got[:, 0, 0], torch.tensor(red)) and torch.equal(got[:, 0, 1], torch.tensor(blue))


def test_grey_and_cmyk_jpegs(tmp_path: Path) -> None:
    Image.new("L", (8, 8), 200).save(tmp_path / "grey.jpg")
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "cyan.jpg")  # pure cyan
    assert imageops.load_image(tmp_path / "grey.jpg").shape == (1, 8, 8)
    cyan = imageops.load_image(tmp_path / "cyan.jpg")
    assert cyan.shape == (3, 8, 8)  # converted to RGB, not four channels
    torch.testing.assert_close(cyan.mean(dim=(1, 2)), torch.tensor([0.0, 1.0, 1.0]), rtol=0, atol=0.02)


def test_format_comes_from_the_content_and_exif_rotation_is_ignored(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to display"
    Image.new("RGB", (16, 8), (10, 20, 30)).save(tmp_path / "photo.png", format="JPEG", exif=exif)
    assert imageops.load_image(tmp_path / "photo.png").shape == (3, 8, 16)  # as stored, width 16


def half_a_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize("content, problem", [
    (None, "No such file"),
    (b"", "empty file"),
    (b"<html>not a picture</html>\n", "not a JPEG or PNG"),
    (b"\xff\xd8\xff\xe0 garbage", "cannot decode"),
    (half_a_jpeg(), "truncated"),  # refused: libjpeg would have padded the missing part with grey
])
def test_files_that_are_not_decodable_images_raise_one_line_naming_the_file(
        tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "input image.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GradCamError) as err:
        imageops.load_image(path)
    message = str(err.value)
    assert "\n" not in message and "input image.jpg" in message and problem in message


@pytest.mark.parametrize("width, height", [(8193, 8192), (100_000, 100_000)])
def test_oversized_images_are_refused_from_the_header(tmp_path: Path, width: int, height: int) -> None:
    # The file has no pixel data at all: had the loader tried to decode it, it would report that.
    path = write_png(tmp_path / "bomb.png", np.zeros((1, 1), np.uint8), 0, 8, idat=False, size=(height, width))
    with pytest.raises(GradCamError, match="bomb.png.*(exceeds the limit|decompression bomb)"):
        imageops.load_image(path)


# ---------------------------------------------------------------------------------- channels, display

def test_to_rgb_replicates_grey_and_drops_alpha() -> None:
    grey = torch.rand(1, 4, 5)
    grey_alpha = torch.cat([grey, torch.rand(1, 4, 5)])
    rgba = torch.rand(4, 4, 5)
    assert torch.equal(imageops.to_rgb(grey), grey.expand(3, 4, 5))
    assert torch.equal(imageops.to_rgb(grey_alpha), grey.expand(3, 4, 5))
    assert torch.equal(imageops.to_rgb(rgba), rgba[:3])


def test_to_display_is_one_min_max_over_all_channels() -> None:
    t = torch.tensor([[[-1.0, 0.0]], [[1.0, 3.0]]])
    assert torch.equal(imageops.to_display(t), torch.tensor([[[0.0, 0.25]], [[0.5, 1.0]]]))
    assert torch.equal(imageops.to_display(torch.full((3, 2, 2), 7.0)), torch.zeros(3, 2, 2))


def table_colour(v: float) -> tuple[float, float, float]:
    """utils.to_heatmap's table, inclusive upper bounds, written the way the Lua code reads."""
    if v <= 0.25:
        return 0.0, 4 * v, 1.0
    if v <= 0.5:
        return 0.0, 1.0, 2 - 4 * v
    if v <= 0.75:
        return 4 * v - 2, 1.0, 0.0
    return 1.0, 4 - 4 * v, 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_heatmap_follows_the_colour_table_at_and_between_its_bounds(dtype: torch.dtype) -> None:
    v = torch.cat([torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]), torch.rand(200, dtype=torch.float64)]).to(dtype)
    got = imageops.to_heatmap(v[None, None])  # v already spans [0, 1], so to_display leaves it alone
    expected = torch.tensor([table_colour(x) for x in v.tolist()], dtype=dtype).T[:, None]
    assert got.dtype == dtype and torch.equal(got, expected)


# ------------------------------------------------------------------------------------------------- PNG

def test_png_bytes_truncate_like_a_c_cast() -> None:
    just_below_one = float(np.nextafter(np.float32(1), np.float32(0)))  # 255 * x = 254.99998 in float32
    t = torch.tensor([[0.999, 1.5, -1.0, just_below_one, 0.5, float("nan")]])
    np.testing.assert_array_equal(decoded_png(imageops.png_bytes(t)), [[254, 255, 0, 254, 127, 0]])


def test_png_bytes_compute_in_the_tensor_precision() -> None:
    x = 254.99999999 / 255  # rounds to 1.0 in float32, stays below 1 in float64
    assert decoded_png(imageops.png_bytes(torch.tensor([[x]], dtype=torch.float64)))[0, 0] == 254
    assert decoded_png(imageops.png_bytes(torch.tensor([[x]], dtype=torch.float32)))[0, 0] == 255


def test_png_modes_follow_the_channel_count() -> None:
    grey = torch.rand(4, 6)
    for t, mode in [(grey, "L"), (grey[None], "L"), (torch.rand(3, 4, 6), "RGB")]:
        with Image.open(io.BytesIO(imageops.png_bytes(t))) as im:
            assert (im.mode, im.size) == (mode, (6, 4))


SPECIAL_VALUES = [0.0, 0.999, 1.0, 1.5, -0.25, -0.0, float("nan"), float("inf"), float("-inf"), 0.5,
                  1 / 255, 254.5 / 255, float(np.nextafter(np.float32(1), np.float32(0)))]


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), channels=st.sampled_from([0, 1, 3]),
       double=st.booleans(), seed=st.integers(0, 2**31))
def test_png_bytes_decode_to_the_truncated_levels(h: int, w: int, channels: int, double: bool, seed: int) -> None:
    """What png_bytes writes, decoded by PIL (CRCs verified), is exactly trunc(255 * clamp(x, 0, 1)) in the
    tensor's dtype (NaN -> 0), grey for (H, W) and (1, H, W), RGB for (3, H, W); computed here in numpy."""
    dtype = np.float64 if double else np.float32
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 0 else (channels, h, w)
    x = rng.uniform(-0.2, 1.2, shape).astype(dtype)
    flat = x.reshape(-1)
    picks = rng.integers(0, flat.size, min(flat.size, 2 * len(SPECIAL_VALUES)))
    flat[picks] = np.array(SPECIAL_VALUES * 2, dtype=dtype)[: len(picks)]
    with np.errstate(invalid="ignore"):
        expected = np.floor(np.clip(np.nan_to_num(x, nan=0.0), 0, 1) * dtype(255)).astype(np.uint8)
    data = imageops.png_bytes(torch.from_numpy(x))
    with Image.open(io.BytesIO(data)) as im:
        im.verify()  # chunk CRCs and structure
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == ("RGB" if channels == 3 else "L") and im.size == (w, h)
        got = np.asarray(im)
    np.testing.assert_array_equal(got, expected.transpose(1, 2, 0) if channels == 3 else expected.reshape(h, w))


def test_save_png_replaces_atomically_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "caption_gb_A zebra, and a dog!.png"
    target.write_bytes(b"old")
    image = torch.rand(3, 5, 7)
    imageops.save_png(target, image)
    assert os.listdir(tmp_path) == [target.name]
    np.testing.assert_array_equal(decoded_png(target), decoded_png(imageops.png_bytes(image)))
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # ordinary permissions, not mkstemp's 0600


@pytest.mark.parametrize("folder", ["missing/", "a_file/"])
def test_save_png_into_an_unwritable_folder_raises_naming_the_path(tmp_path: Path, folder: str) -> None:
    (tmp_path / "a_file").write_text("x")
    path = tmp_path / folder / "out.png"
    with pytest.raises(GradCamError, match="out.png"):
        imageops.save_png(path, torch.rand(1, 2, 2))
    assert sorted(os.listdir(tmp_path)) == ["a_file"]
