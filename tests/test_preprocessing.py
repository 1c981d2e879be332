"""A model's preprocessing (gradcam_core.image.preprocessing.Preprocessing): the default is the original's
``utils.preprocess`` bit for bit; Caffe's and torchvision's orders of operations against independent
computations written here from their formulas."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam_core.errors import GradCamError
from gradcam_core.image.preprocessing import (
    MEAN_BGR,
    Preprocessing,
    fit_mean_image,
    load_input,
    preprocess,
)

ROOT = Path(__file__).resolve().parent.parent
IMAGES = sorted((ROOT / "images").glob("*.jpg"))
SQUEEZENET = ROOT / "models" / "squeezenet1_1"


def pil_rgb01(path: Path) -> np.ndarray:
    """(3, H, W) float64 RGB in [0, 1], decoded by Pillow alone (alpha dropped)."""
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGBA" if "A" in im.mode else "RGB"), dtype=np.float64)[..., :3]
    return pixels.transpose(2, 0, 1) / 255.0


@pytest.fixture
def small_photo(tmp_path: Path) -> Path:
    """A 40 x 30 crop of cat_dog.jpg as PNG (lossless, small enough for float64 comparisons)."""
    with Image.open(ROOT / "images" / "cat_dog.jpg") as im:
        im.crop((200, 100, 240, 130)).save(tmp_path / "small.png")
    return tmp_path / "small.png"


@pytest.fixture
def rgba_png(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "alpha.png")
    return tmp_path / "alpha.png"


# ------------------------------------------------------------------------------ the default, bit for bit

@pytest.mark.parametrize("image", IMAGES, ids=lambda p: p.name)
@pytest.mark.parametrize("size, dtype", [((224, 224), torch.float32), ((227, 200), torch.float64),
                                         ((1000, 700), torch.float32)])
def test_caffe_vgg_is_the_originals_preprocess_bit_for_bit(image: Path, size: tuple[int, int],
                                                           dtype: torch.dtype) -> None:
    expected = preprocess(image, *size, dtype)
    got = load_input(image, *size, Preprocessing.caffe_vgg(), dtype)
    assert got.dtype == dtype and torch.equal(got, expected)
    assert torch.equal(load_input(image, *size, dtype=dtype), expected)  # the default preprocessing


def test_caffe_vgg_on_a_png_with_alpha_is_the_originals_preprocess(rgba_png: Path) -> None:
    for size in ((224, 224), (20, 60)):
        assert torch.equal(load_input(rgba_png, *size, Preprocessing.caffe_vgg()), preprocess(rgba_png, *size))


def test_caffe_vgg_numbers_and_formula(small_photo: Path) -> None:
    """At the image's own size (no resampling): BGR x 255 minus (103.939, 116.779, 123.68)."""
    assert Preprocessing.caffe_vgg() == Preprocessing() and MEAN_BGR == (103.939, 116.779, 123.68)
    bgr = pil_rgb01(small_photo)[::-1]
    expected = bgr * 255.0 - np.array([103.939, 116.779, 123.68])[:, None, None]
    got = load_input(small_photo, 40, 30, Preprocessing.caffe_vgg(), torch.float64).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ the orders of operations

def test_caffe_subtracts_the_mean_then_scales(small_photo: Path) -> None:
    """Caffe's DataTransformer: (pixel - mean) * scale, the pixel being 0..255 BGR."""
    prep = Preprocessing("bgr", 255.0, (104.0, 117.0, 123.0), input_scale=0.017)
    bgr255 = pil_rgb01(small_photo)[::-1] * 255.0
    expected = (bgr255 - np.array([104.0, 117.0, 123.0])[:, None, None]) * 0.017
    got = load_input(small_photo, 40, 30, prep, torch.float64).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    got32 = load_input(small_photo, 40, 30, prep, torch.float32)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_torchvision_is_x_minus_mean_over_std_in_rgb(small_photo: Path) -> None:
    prep = Preprocessing.torchvision_imagenet()
    assert (prep.channel_order, prep.value_scale) == ("rgb", 1.0)
    rgb = pil_rgb01(small_photo)
    mean = np.array([0.485, 0.456, 0.406])[:, None, None]
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    got = load_input(small_photo, 40, 30, prep, torch.float64).numpy()
    np.testing.assert_allclose(got, (rgb - mean) / std, rtol=0, atol=1e-12)


def test_torchvision_matches_torchvisions_own_normalize(small_photo: Path) -> None:
    functional = pytest.importorskip("torchvision.transforms.functional")
    with Image.open(small_photo) as im:
        expected = functional.normalize(functional.to_tensor(im), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    got = load_input(small_photo, 40, 30, Preprocessing.torchvision_imagenet())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)  # float32 rounding only


def test_all_steps_in_order_mean_scale_std() -> None:
    rgb = torch.rand(3, 5, 4, dtype=torch.float64)
    prep = Preprocessing("rgb", 2.0, (0.5,), input_scale=3.0, std=(2.0, 4.0, 8.0))
    expected = (rgb * 2.0 - 0.5) * 3.0 / torch.tensor([2.0, 4.0, 8.0], dtype=torch.float64).view(3, 1, 1)
    torch.testing.assert_close(prep.apply(rgb), expected, rtol=1e-15, atol=1e-15)
    assert prep.apply(rgb.float()).dtype == torch.float32


# ------------------------------------------------------------------------------ mean images

def test_a_mean_image_of_the_input_size_is_subtracted_pixel_by_pixel(small_photo: Path) -> None:
    mean = torch.rand(3, 30, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 255
    prep = Preprocessing.caffe_vgg().with_mean_image(mean)
    assert prep.mean is None
    bgr255 = pil_rgb01(small_photo)[::-1] * 255.0
    got = load_input(small_photo, 40, 30, prep, torch.float64).numpy()
    np.testing.assert_allclose(got, bgr255 - mean.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [(224, 224), (256, 256), (300, 227)])
def test_a_constant_mean_image_of_any_size_acts_as_its_per_channel_mean(size: tuple[int, int]) -> None:
    mean = torch.tensor(MEAN_BGR, dtype=torch.float64).view(3, 1, 1).expand(3, 256, 256).clone()
    image = ROOT / "images" / "cat_dog.jpg"
    got = load_input(image, *size, Preprocessing.caffe_vgg().with_mean_image(mean), torch.float64)
    torch.testing.assert_close(got, preprocess(image, *size, torch.float64), rtol=0, atol=2e-5)


def test_a_mean_image_is_warped_onto_the_whole_input_not_cropped() -> None:
    """A 256-wide left-to-right ramp (column k holds k) fitted to 224 columns: output column j is the area
    average of the input over [j * 256/224, (j + 1) * 256/224) - the whole width, where a centre crop
    would start at column 16."""
    ramp = torch.arange(256, dtype=torch.float64).expand(3, 256, 256)
    fitted = fit_mean_image(ramp, 224, 224)
    assert fitted.shape == (3, 224, 224) and fitted.dtype == torch.float64
    step = 256 / 224
    expected = []
    for j in range(224):
        a, b = j * step, (j + 1) * step
        overlap = [max(0.0, min(b, k + 1) - max(a, k)) for k in range(256)]
        expected.append(sum(k * w for k, w in enumerate(overlap)) / (b - a))
    torch.testing.assert_close(fitted[1, 100], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-3)
    assert float(fitted[0, 0, 0]) < 1 and float(fitted[0, 0, -1]) > 254  # a centre crop: 16 and 239
    enlarged = fit_mean_image(ramp[:, :10, :10], 19, 10)  # align-corners linear when enlarging
    torch.testing.assert_close(enlarged[0, 0], torch.arange(19, dtype=torch.float64) * 9 / 18, rtol=0, atol=1e-5)
    assert fit_mean_image(ramp, 256, 256) is not None and torch.equal(fit_mean_image(ramp, 256, 256), ramp)


# ------------------------------------------------------------------------------ validation, equality

@pytest.mark.parametrize("kwargs, words", [
    ({"channel_order": "grb"}, "channel order"),
    ({"value_scale": 0}, "value_scale"),
    ({"value_scale": float("nan")}, "value_scale"),
    ({"input_scale": -1.0}, "input_scale"),
    ({"mean": (1.0, 2.0)}, "mean must be 1 or 3"),
    ({"mean": (1.0, float("inf"), 2.0)}, "mean must be 1 or 3"),
    ({"std": (1.0, 0.0, 1.0)}, "positive"),
    ({"mean_image": torch.zeros(3, 4, 4)}, "not both"),
    ({"mean": None, "mean_image": torch.zeros(4, 4, 4)}, "(3, H, W)"),
    ({"mean": None, "mean_image": torch.zeros(3, 4, 4, dtype=torch.int64)}, "(3, H, W)"),
    ({"mean": None, "mean_image": torch.full((3, 2, 2), float("nan"))}, "NaN"),
])
def test_invalid_preprocessing_is_one_gradcam_error_line(kwargs: dict, words: str) -> None:
    with pytest.raises(GradCamError, match=None) as err:
        Preprocessing(**kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_equality_compares_the_mean_image_by_value_and_the_image_is_a_private_copy() -> None:
    mean = torch.ones(3, 2, 2, dtype=torch.float32)
    a = Preprocessing.caffe_vgg().with_mean_image(mean)
    b = Preprocessing.caffe_vgg().with_mean_image(mean.clone().double())
    assert a == b and a != Preprocessing.caffe_vgg() and a != Preprocessing.caffe_vgg().with_mean_image(mean * 2)
    mean.zero_()
    assert float(a.mean_image.sum()) == 12.0
    assert Preprocessing.torchvision_imagenet() == Preprocessing.torchvision_imagenet()
    assert Preprocessing.torchvision_imagenet() != Preprocessing.caffe_vgg()
    with pytest.raises(TypeError):
        hash(a)


def test_a_file_that_is_not_an_image_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(GradCamError, match="notes.jpg"):
        load_input(tmp_path / "notes.jpg", 224, 224, Preprocessing.torchvision_imagenet())


# ------------------------------------------------------------------------------ a real model

def test_torchvision_squeezenet_sees_a_tiger_cat_with_torchvision_preprocessing() -> None:
    weights = SQUEEZENET / "squeezenet1_1.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent (the bundled SqueezeNet is copied into models/ before the merge)")
    models = pytest.importorskip("torchvision.models")
    net = models.squeezenet1_1()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    with torch.no_grad():
        right = net(load_input(ROOT / "images" / "cat_dog.jpg", 224, 224, Preprocessing.torchvision_imagenet())[None])
        wrong = net(load_input(ROOT / "images" / "cat_dog.jpg", 224, 224, Preprocessing.caffe_vgg())[None])
    assert int(right.argmax()) == 282  # "tiger cat" (label 283), as PROVENANCE.md lists
    assert int(wrong.argmax()) != 282  # the Caffe preprocessing misleads this net: the choice matters
