"""``utils.preprocess`` of the grad-cam scripts: the network input of an image file."""
from __future__ import annotations

import os

import torch

from .decode import load_image, to_rgb
from .resize import scale

MEAN_BGR: tuple[float, float, float] = (103.939, 116.779, 123.68)
"""Per-channel means (B, G, R) that ``utils.preprocess`` subtracts on the 0..255 scale."""


def preprocess(path: str | os.PathLike[str], width: int, height: int,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``utils.preprocess(path, width, height)``: the network input, (3, height, width), no batch dim.

    load (in ``dtype``) -> RGB -> scale -> then, in float64 as the original's ``:double()``: channels
    reversed to BGR, x255, minus MEAN_BGR. Returned as ``dtype`` (the original's float32 scripts
    converted back; VQA stayed float64).
    """
    img = scale(to_rgb(load_image(path, dtype)), width, height).double()
    mean = torch.tensor(MEAN_BGR, dtype=torch.float64).view(3, 1, 1)
    return (img.flip(0) * 255.0 - mean).to(dtype)
