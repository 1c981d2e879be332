"""Caffe mean files (``mean.binaryproto``, ``imagenet_mean.binaryproto``, ``ResNet_mean.binaryproto``, ...).

A mean file is one serialised BlobProto - the pixel-wise mean of the training images in the net's
channel order (BGR for Caffe nets) on the 0..255 scale, e.g. 1 x 3 x 256 x 256 for CaffeNet/AlexNet,
3 x 224 x 224 for ResNet - decoded here with the caffemodel wire decoder (:mod:`.wire`): bounded, a
corrupt or hostile file is one GradCamError line naming it. :func:`read_mean` gives the (C, H, W)
image; :func:`mean_preprocessing` the net's :class:`~gradcam_core.image.preprocessing.Preprocessing`
with it, which fits the mean to the input size with ``image.scale`` (the geometry of our input: the
whole image warped to the input size; see :func:`~gradcam_core.image.preprocessing.fit_mean_image`).
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from ...errors import GradCamError
from ...image.preprocessing import Preprocessing
from .schema import MESSAGES, Msg
from .wire import WireFile

BLOB_PROTO = MESSAGES["BlobProto"]
MAX_MEAN_CHANNELS: int = 64
"""Most channels a mean may have (images have 1 to 4; a net input with more is not an image)."""
MAX_MEAN_SIDE: int = 8192
"""Largest height or width of a mean image (the image decoder's limit is 8192 x 8192 too)."""


def read_mean(path: str | os.PathLike[str]) -> torch.Tensor:
    """The mean image of a Caffe mean file: (C, H, W), float64 (the stored float32 values exactly).

    The blob's shape is the legacy num/channels/height/width (what compute_image_mean writes) or
    ``shape.dim``, either way 1 x C x H x W or C x H x W; its values are ``data`` (float32) or, when
    present, ``double_data``. Raises GradCamError naming the file when it cannot be read, is
    truncated or corrupt, is not a BlobProto (e.g. a caffemodel: no shape, no values), declares a
    shape that is not an image's or does not match its values, exceeds :data:`MAX_MEAN_CHANNELS` /
    :data:`MAX_MEAN_SIDE`, or holds NaN or infinite values.
    """
    name = os.fspath(path)
    try:
        with WireFile(path) as source:
            blob = source.decode(BLOB_PROTO)
            shape, segments, dtype = _shape_and_data(blob, name)
            values = np.empty(math.prod(shape), dtype)
            source.read(segments, values)
    except GradCamError as err:  # the wire decoder says "caffemodel"; this file is a mean file
        raise GradCamError(str(err).replace(f"caffemodel '{name}'", f"mean file '{name}'")) from None
    if not np.isfinite(values).all():
        raise GradCamError(f"mean file '{name}' holds NaN or infinite values")
    return torch.from_numpy(values.astype(np.float64, copy=False)).reshape(shape)


def _shape_and_data(blob: Msg, name: str) -> tuple[tuple[int, int, int], list, str]:
    """The (C, H, W) shape, the value segments and their dtype, checked against each other."""
    legacy_fields = ("num", "channels", "height", "width")
    if any(blob.has(f) for f in legacy_fields):  # Caffe's Blob::FromProto: legacy dims win over shape
        dims = tuple(blob.get(f) for f in legacy_fields)
    else:
        dims = tuple(blob.get("shape").all("dim"))
    segments, dtype = (blob.all("double_data"), "<f8") if blob.all("double_data") else (blob.all("data"), "<f4")
    count = sum(seg.count for seg in segments)
    if not dims and not count:
        raise GradCamError(f"mean file '{name}' is not a Caffe mean file (a serialised BlobProto): "
                           "it holds no blob shape and no values")
    shown = "x".join(map(str, dims)) or "no shape"
    if len(dims) == 4 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) != 3 or any(d < 1 for d in dims):
        raise GradCamError(f"mean file '{name}' holds a blob of shape {shown}; a mean image is 1xCxHxW or CxHxW")
    channels, height, width = dims
    if channels > MAX_MEAN_CHANNELS or max(height, width) > MAX_MEAN_SIDE:
        raise GradCamError(f"mean file '{name}' declares a {shown} mean: more than {MAX_MEAN_CHANNELS} "
                           f"channels or {MAX_MEAN_SIDE} pixels a side")
    if count != math.prod(dims):
        raise GradCamError(f"mean file '{name}' declares shape {shown} ({math.prod(dims)} values) "
                           f"but holds {count} values")
    return (channels, height, width), segments, dtype


def check_mean_channels(mean: torch.Tensor, channels: int, source: str | os.PathLike[str]) -> None:
    """Raise GradCamError unless the (C, H, W) ``mean`` has the net input's ``channels``."""
    if mean.shape[0] != channels:
        raise GradCamError(f"mean file '{os.fspath(source)}' has {mean.shape[0]} channel(s) but the net's "
                           f"input has {channels}")


def channel_means(mean: torch.Tensor) -> tuple[float, ...]:
    """The per-channel means of a (C, H, W) mean image (what pycaffe's classifier.py subtracts)."""
    return tuple(float(v) for v in mean.mean(dim=(1, 2)))


def mean_preprocessing(path: str | os.PathLike[str], base: Preprocessing | None = None) -> Preprocessing:
    """``base`` (default :meth:`Preprocessing.caffe_vgg`: BGR, 0..255) with the mean image of the mean
    file at ``path`` in place of its per-channel mean. The mean must have 3 channels (our inputs
    are RGB images); it is fitted to the input size when applied."""
    mean = read_mean(path)
    check_mean_channels(mean, 3, path)
    return (base or Preprocessing.caffe_vgg()).with_mean_image(mean)
