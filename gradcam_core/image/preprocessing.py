"""The network input of an image file: ``utils.preprocess`` of the grad-cam scripts (``preprocess``), and
a model's own preprocessing (:class:`Preprocessing`, applied to a file by :func:`load_input`)."""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import GradCamError
from .decode import MAX_PIXELS, image_size, load_image, to_rgb
from .resize import check_scalable, scale

MEAN_BGR: tuple[float, float, float] = (103.939, 116.779, 123.68)
"""Per-channel means (B, G, R) that ``utils.preprocess`` subtracts on the 0..255 scale."""


def preprocess(path: str | os.PathLike[str], width: int, height: int,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``utils.preprocess(path, width, height)``: the network input, (3, height, width), no batch dim.

    load (in ``dtype``) -> RGB -> scale -> then, in float64 as the original's ``:double()``: channels
    reversed to BGR, x255, minus MEAN_BGR. Returned as ``dtype`` (the original's float32 scripts
    converted back; VQA stayed float64). The same steps as :func:`load_input` with
    :meth:`Preprocessing.caffe_vgg`, which computes it.
    """
    return load_input(path, width, height, None, dtype)


# --------------------------------------------------------------------------------------------------
# A model's own preprocessing

_CHANNEL_ORDERS = ("bgr", "rgb")
TORCHVISION_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""torchvision's ImageNet means (R, G, B) on the 0..1 scale."""
TORCHVISION_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""torchvision's ImageNet standard deviations (R, G, B) on the 0..1 scale."""


@dataclass(frozen=True, eq=False)
class Preprocessing:
    """How a model wants its input made from an image, named after Caffe's ``transform_param``.

    From the image as the original read it - RGB in [0, 1], (3, H, W), already ``image.scale``-d to
    the net's input size - each channel of the input is, in float64, in this order::

        x = rgb[channel_order] * value_scale   # "bgr": channels reversed; 255 (Caffe) or 1 (torchvision)
        x = x - mean                           # mean_value / mean_file, on the value_scale
        x = x * input_scale                    # Caffe's transform_param.scale: AFTER the mean
        x = x / std                            # torchvision's Normalize: (x - mean) / std

    which is Caffe's DataTransformer (``(pixel - mean) * scale``, the pixel being 0..255 BGR) and
    torchvision's ``Normalize`` (``(x - mean) / std`` of ``ToTensor``'s 0..1 RGB); pycaffe's
    Transformer names the same steps ``channel_swap``, ``raw_scale``, ``mean``, ``input_scale``. A step
    at its identity (no mean, ``input_scale`` 1, no std) is skipped; the result is then rounded to
    the caller's dtype.

    Fields:
        channel_order: "bgr" (Caffe nets, trained on OpenCV's BGR) or "rgb" (torchvision).
        value_scale: what a full-intensity pixel is worth: 255.0 (0..255) or 1.0 (0..1); any
            positive finite number is accepted.
        mean: per-channel means (1 value for every channel, or 3), in the NET's channel order
            (B, G, R for "bgr"), on the ``value_scale``; or None.
        mean_image: a (3, H, W) mean (a Caffe mean file), in the net's channel order, on the
            ``value_scale``; exclusive with ``mean`` (Caffe refuses both too). Fitted to the input
            by :func:`fit_mean_image`. Stored as a float64 copy.
        input_scale: Caffe's ``scale`` (e.g. 0.017 for some MobileNets), applied after the mean.
        std: per-channel divisors (1 or 3, positive), in the net's channel order; or None.

    Invalid values raise GradCamError. Equality compares every field (the mean image by value).
    """

    channel_order: str = "bgr"
    value_scale: float = 255.0
    mean: tuple[float, ...] | None = MEAN_BGR
    mean_image: torch.Tensor | None = field(default=None, repr=False)
    input_scale: float = 1.0
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.channel_order not in _CHANNEL_ORDERS:
            raise GradCamError(f"preprocessing: channel order {self.channel_order!r} is not 'bgr' or 'rgb'")
        for name in ("value_scale", "input_scale"):
            value = getattr(self, name)
            if not _finite_number(value) or value <= 0:
                raise GradCamError(f"preprocessing: {name} must be a positive finite number, not {value!r}")
            object.__setattr__(self, name, float(value))
        if self.mean is not None and self.mean_image is not None:
            raise GradCamError("preprocessing: give a per-channel mean or a mean image, not both")
        object.__setattr__(self, "mean", _per_channel("mean", self.mean, positive=False))
        object.__setattr__(self, "std", _per_channel("std", self.std, positive=True))
        if self.mean_image is not None:
            object.__setattr__(self, "mean_image", _checked_mean_image(self.mean_image))

    # ------------------------------------------------------------------------------- constructors

    @classmethod
    def caffe_vgg(cls) -> Preprocessing:
        """The grad-cam scripts' ``utils.preprocess`` (the default): BGR, 0..255, minus
        :data:`MEAN_BGR`. :meth:`apply` gives exactly :func:`preprocess`'s tensor."""
        return cls("bgr", 255.0, MEAN_BGR)

    @classmethod
    def torchvision_imagenet(cls) -> Preprocessing:
        """torchvision's ImageNet models: RGB, 0..1, ``(x - TORCHVISION_MEAN) / TORCHVISION_STD``.
        The values only: the geometry stays ours (the whole image scaled to the input size), not
        torchvision's Resize(256) + CenterCrop(224), so the maps cover the whole image."""
        return cls("rgb", 1.0, TORCHVISION_MEAN, std=TORCHVISION_STD)

    def with_mean_image(self, mean_image: torch.Tensor) -> Preprocessing:
        """This preprocessing with ``mean_image`` (3, H, W) in place of the per-channel mean (e.g.
        ``Preprocessing.caffe_vgg().with_mean_image(read_mean(path))``)."""
        return dataclasses.replace(self, mean=None, mean_image=mean_image)

    # ------------------------------------------------------------------------------- applying

    def apply(self, rgb: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(3, H, W) RGB in [0, 1] -> (3, H, W) net input, computed in float64, returned as ``dtype``
        (default: ``rgb``'s). A mean image of another size is fitted to (H, W) first."""
        if rgb.dim() != 3 or rgb.shape[0] != 3:
            raise ValueError(f"Preprocessing.apply: expected (3, H, W), got shape {tuple(rgb.shape)}")
        x = rgb.double()
        if self.channel_order == "bgr":
            x = x.flip(0)
        x = x * self.value_scale
        if self.mean is not None:
            x = x - torch.tensor(self.mean, dtype=torch.float64).view(-1, 1, 1)
        elif self.mean_image is not None:
            x = x - fit_mean_image(self.mean_image, x.shape[2], x.shape[1])
        if self.input_scale != 1.0:
            x = x * self.input_scale
        if self.std is not None:
            x = x / torch.tensor(self.std, dtype=torch.float64).view(-1, 1, 1)
        return x.to(dtype or rgb.dtype)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Preprocessing):
            return NotImplemented
        same_image = (self.mean_image is None and other.mean_image is None) or (
            self.mean_image is not None and other.mean_image is not None
            and torch.equal(self.mean_image, other.mean_image))
        return same_image and all(getattr(self, f) == getattr(other, f)
                                  for f in ("channel_order", "value_scale", "mean", "input_scale", "std"))

    __hash__ = None  # type: ignore[assignment]  # (the mean image is a tensor)


def fit_mean_image(mean_image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """A (C, h, w) mean image fitted to the input: (C, height, width), float64.

    It is ``image.scale``-d (box average when shrinking, linear when enlarging), as the image itself is.
    Our input is the WHOLE image warped to the input size (no crop: the maps cover the whole image), and
    a Caffe mean file is the pixel-wise mean of the training images warped to its size (256 x 256 for
    ImageNet), so the same warp maps the mean's pixels onto the input's. Caffe's DataTransformer
    instead crops the mean with the data (a crop we do not make), and pycaffe's classifier.py
    collapses it to its per-channel means (use ``mean=`` with those for that behaviour). A mean of
    the input's size is used as it is.
    """
    mean_image = mean_image.double()
    if tuple(mean_image.shape[1:]) == (height, width):
        return mean_image
    return scale(mean_image, width, height)


def load_input(path: str | os.PathLike[str], width: int, height: int,
               preprocessing: Preprocessing | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The net input of an image file under a model's ``preprocessing`` (default
    :meth:`Preprocessing.caffe_vgg`): (3, height, width), no batch dim, ``dtype``.

    Geometry as :func:`preprocess` for every format: decoded in ``dtype``, made RGB (grey replicated,
    alpha dropped), ``image.scale``-d to width x height, no crop. With the default it returns
    :func:`preprocess`'s tensor bit for bit. Raises GradCamError for a file that is not an image."""
    return net_input(load_rgb(path, width, height, dtype), preprocessing, dtype)


def net_input(rgb: torch.Tensor, preprocessing: Preprocessing | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The net input (3, H, W) of an image as :func:`load_rgb` gives it, under a model's
    ``preprocessing`` (default :meth:`Preprocessing.caffe_vgg`), in ``dtype``."""
    return (preprocessing or Preprocessing.caffe_vgg()).apply(rgb, dtype)


def load_rgb(path: str | os.PathLike[str], width: int, height: int,
             dtype: torch.dtype = torch.float32, *, exif_orientation: bool = False) -> torch.Tensor:
    """An image file as the net sees it before preprocessing: (3, height, width) RGB in [0, 1], decoded
    in ``dtype``, grey replicated, alpha dropped, ``image.scale``-d (what :func:`load_input` preprocesses;
    the overlay is drawn on it); turned as its EXIF orientation says with ``exif_orientation`` (the
    web demo; the scripts ignore it, as the original did). Raises GradCamError for a file that is not
    an image, and for one too narrow for its height to scale in bounded time
    (:func:`~.resize.check_scalable`), before decoding it."""
    w, h = image_size(path, exif_orientation=exif_orientation)
    if w * h <= MAX_PIXELS and (why := check_scalable(w, h, width, height)):  # (larger: load_image says so)
        raise GradCamError(f"cannot scale image {os.fspath(path)!r}: {why}")
    img = load_image(path, dtype, exif_orientation=exif_orientation)
    # The planes to_rgb keeps, scaled before they are replicated: the same bits (each plane is scaled on
    # its own), a third of the work and memory for a grey image, none spent on alpha.
    planes = img[:1] if img.shape[0] in (1, 2) else img[:3]
    return to_rgb(scale(planes, width, height))


def _finite_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _per_channel(name: str, values: Sequence[float] | None, positive: bool) -> tuple[float, ...] | None:
    if values is None:
        return None
    values = tuple(values)
    if len(values) not in (1, 3) or not all(_finite_number(v) for v in values):
        raise GradCamError(f"preprocessing: {name} must be 1 or 3 finite numbers, not {values!r}")
    if positive and any(v <= 0 for v in values):
        raise GradCamError(f"preprocessing: {name} values must be positive, not {values!r}")
    return tuple(float(v) for v in values)


def _checked_mean_image(mean_image: torch.Tensor) -> torch.Tensor:
    if not isinstance(mean_image, torch.Tensor) or mean_image.dim() != 3 or mean_image.shape[0] != 3 \
            or mean_image.shape[1] < 1 or mean_image.shape[2] < 1 or not mean_image.is_floating_point():
        shape = tuple(mean_image.shape) if isinstance(mean_image, torch.Tensor) else type(mean_image).__name__
        raise GradCamError(f"preprocessing: the mean image must be a (3, H, W) float tensor, not {shape}")
    if not bool(torch.isfinite(mean_image).all()):
        raise GradCamError("preprocessing: the mean image holds NaN or infinite values")
    return mean_image.detach().to("cpu", torch.float64, copy=True)
