"""Caffe mean files (gradcam_core.formats.caffe.meanfile): BlobProtos written here with the project's
writer, read back exactly; every bad file is one GradCamError line naming it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_writer import write_binary, write_caffemodel

from gradcam_core.errors import GradCamError
from gradcam_core.formats.caffe import meanfile
from gradcam_core.image.preprocessing import Preprocessing, load_input, preprocess

ROOT = Path(__file__).resolve().parent.parent
CAT_DOG = ROOT / "images" / "cat_dog.jpg"
BLOB = meanfile.BLOB_PROTO


def mean_array(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def legacy_file(path: Path, array: np.ndarray, **kw) -> Path:
    """As Caffe's compute_image_mean writes it: num=1, channels, height, width, float data."""
    c, h, w = array.shape
    return write_binary(path, {"num": 1, "channels": c, "height": h, "width": w, "data": array.reshape(-1)}, BLOB,
                        **kw)


def shape_file(path: Path, array: np.ndarray, *, dims: tuple[int, ...] | None = None, double: bool = False) -> Path:
    """As Blob::ToProto writes it: shape { dim ... }, data or double_data."""
    key = "double_data" if double else "data"
    return write_binary(path, {key: array.reshape(-1), "shape": {"dim": list(dims or array.shape)}}, BLOB)


# ------------------------------------------------------------------------------ reading

@pytest.mark.parametrize("packed", [True, False])
def test_a_legacy_mean_file_reads_back_exactly(tmp_path: Path, packed: bool) -> None:
    array = mean_array((3, 6, 5))
    got = meanfile.read_mean(legacy_file(tmp_path / "mean.binaryproto", array, packed=packed))
    assert got.dtype == torch.float64 and got.shape == (3, 6, 5)
    assert torch.equal(got, torch.from_numpy(array).double())


@pytest.mark.parametrize("dims", [(3, 4, 7), (1, 3, 4, 7)])
@pytest.mark.parametrize("double", [False, True])
def test_a_shape_mean_file_reads_back_exactly(tmp_path: Path, dims: tuple[int, ...], double: bool) -> None:
    array = mean_array((3, 4, 7), seed=1).astype(np.float64 if double else np.float32)
    if double:
        array += 1e-9  # a value only float64 holds
    got = meanfile.read_mean(shape_file(tmp_path / "m.binaryproto", array, dims=dims, double=double))
    assert torch.equal(got, torch.from_numpy(array.astype(np.float64)))


def test_channel_means_are_the_per_channel_averages(tmp_path: Path) -> None:
    array = mean_array((3, 4, 4), seed=2)
    mean = meanfile.read_mean(legacy_file(tmp_path / "m.binaryproto", array))
    assert meanfile.channel_means(mean) == pytest.approx(array.astype(np.float64).mean(axis=(1, 2)).tolist())


# ------------------------------------------------------------------------------ use as preprocessing

def test_a_resnet_sized_mean_is_subtracted_as_is_at_its_size_and_warped_at_another(tmp_path: Path) -> None:
    array = mean_array((3, 224, 224), seed=3)
    path = legacy_file(tmp_path / "ResNet_mean.binaryproto", array)
    prep = meanfile.mean_preprocessing(path)
    assert prep.channel_order == "bgr" and prep.value_scale == 255.0 and prep.mean is None
    # At 224 the mean is subtracted pixel for pixel from what utils.preprocess makes before its mean.
    vgg = torch.tensor((103.939, 116.779, 123.68), dtype=torch.float64).view(3, 1, 1)
    bgr255 = preprocess(CAT_DOG, 224, 224, torch.float64) + vgg
    got = load_input(CAT_DOG, 224, 224, prep, torch.float64)
    torch.testing.assert_close(got, bgr255 - torch.from_numpy(array).double(), rtol=0, atol=1e-9)
    # At 112 (an exact 2x2 box) it is the mean of each 2x2 block of the mean image.
    blocks = torch.from_numpy(array).double().reshape(3, 112, 2, 112, 2).mean(dim=(2, 4))
    bgr255 = preprocess(CAT_DOG, 112, 112, torch.float64) + vgg
    got = load_input(CAT_DOG, 112, 112, prep, torch.float64)
    torch.testing.assert_close(got, bgr255 - blocks, rtol=0, atol=1e-4)


def test_mean_preprocessing_keeps_the_base_preprocessing(tmp_path: Path) -> None:
    path = legacy_file(tmp_path / "m.binaryproto", mean_array((3, 4, 4)))
    prep = meanfile.mean_preprocessing(path, Preprocessing("bgr", 255.0, None, input_scale=0.017))
    assert prep.input_scale == 0.017 and prep.mean_image.shape == (3, 4, 4)


def test_a_mean_with_other_channels_than_the_net_is_refused(tmp_path: Path) -> None:
    path = legacy_file(tmp_path / "grey_mean.binaryproto", mean_array((1, 4, 4)))
    mean = meanfile.read_mean(path)
    meanfile.check_mean_channels(mean, 1, path)
    with pytest.raises(GradCamError, match=r"^mean file '.*grey_mean.binaryproto' has 1 channel\(s\) but the "
                                           r"net's input has 3$"):
        meanfile.check_mean_channels(mean, 3, path)
    with pytest.raises(GradCamError, match="has 1 channel"):
        meanfile.mean_preprocessing(path)


# ------------------------------------------------------------------------------ bad files

def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words its error must hold)."""
    good = legacy_file(tmp / "good.binaryproto", mean_array((3, 8, 8))).read_bytes()
    files = {}

    def add(name: str, content: bytes | None, words: str) -> None:
        path = tmp / f"{name}.binaryproto"
        if content is not None:
            path.write_bytes(content)
        files[name] = (path, words)

    add("missing", None, "No such file")
    add("empty", b"", "the file is empty")
    add("truncated", good[: len(good) // 2], "runs past the end of the file")
    add("cut-in-header", good[:3], "runs past")
    add("jpeg", CAT_DOG.read_bytes()[:4096], "mean file")
    add("text", b"mean_value: 104\nmean_value: 117\n", "mean file")
    caffemodel = tmp / "net.caffemodel"
    write_caffemodel(caffemodel, [{"name": "ip", "type": "InnerProduct", "bottom": ["data"], "top": ["ip"],
                                   "inner_product_param": {"num_output": 2}, "blobs": [np.ones((2, 3), np.float32)]}])
    add("caffemodel", caffemodel.read_bytes(), "not a Caffe mean file (a serialised BlobProto)")
    two = np.zeros((2, 3, 4, 4), np.float32)
    add("batch-of-two", (shape_file(tmp / "x", two)).read_bytes(), "shape 2x3x4x4; a mean image is")
    add("flat", (shape_file(tmp / "x", np.zeros(12, np.float32))).read_bytes(), "shape 12;")
    add("zero-height", (shape_file(tmp / "x", np.zeros(0, np.float32), dims=(3, 0, 4))).read_bytes(), "shape 3x0x4;")
    write_binary(tmp / "x", {"num": 1, "channels": -3, "height": 4, "width": 4}, BLOB)
    add("negative", (tmp / "x").read_bytes(), "shape 1x-3x4x4;")
    add("short-data", (shape_file(tmp / "x", np.zeros(47, np.float32), dims=(3, 4, 4))).read_bytes(),
        "declares shape 3x4x4 (48 values) but holds 47 values")
    add("no-data", (shape_file(tmp / "x", np.zeros(0, np.float32), dims=(3, 4, 4))).read_bytes(), "holds 0 values")
    add("huge", (shape_file(tmp / "x", np.zeros(3, np.float32), dims=(3, 1 << 40, 1 << 40))).read_bytes(),
        "more than 64 channels or 8192 pixels a side")
    add("many-channels", (shape_file(tmp / "x", np.zeros(1, np.float32), dims=(1000, 1, 1))).read_bytes(),
        "more than 64 channels")
    nan = mean_array((3, 2, 2))
    nan[1, 1, 0] = np.nan
    add("nan", legacy_file(tmp / "x", nan).read_bytes(), "holds NaN or infinite values")
    add("inf", (shape_file(tmp / "x", np.full((3, 2, 2), np.inf), double=True)).read_bytes(), "NaN or infinite")
    (tmp / "folder.binaryproto").mkdir()
    files["folder"] = (tmp / "folder.binaryproto", "it is a directory")
    return files


BAD = ["missing", "empty", "truncated", "cut-in-header", "jpeg", "text", "caffemodel", "batch-of-two", "flat",
       "zero-height", "negative", "short-data", "no-data", "huge", "many-channels", "nan", "inf", "folder"]


@pytest.mark.parametrize("name", BAD)
def test_a_bad_mean_file_is_one_line_naming_it(tmp_path: Path, name: str) -> None:
    path, words = _bad_files(tmp_path)[name]
    with pytest.raises(GradCamError) as err:
        meanfile.read_mean(path)
    message = str(err.value)
    assert f"'{path}'" in message and words in message and "\n" not in message, message
    assert "caffemodel" not in message.replace(str(path), ""), message  # it is a mean file


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.binaryproto")
    with pytest.raises(GradCamError, match="not a regular file"):
        meanfile.read_mean(tmp_path / "pipe.binaryproto")
