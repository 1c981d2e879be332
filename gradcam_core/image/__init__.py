"""Images as Torch7's ``image`` package and grad-cam's utils handled them, so our PNGs match the original's.

* :mod:`.decode`     ``load_image`` = ``image.load(path)``; ``to_rgb`` = the channel handling of ``utils.preprocess``
* :mod:`.resize`     ``scale`` = ``image.scale(t, width, height)`` (box average when shrinking, align-corners
  linear when enlarging)
* :mod:`.preprocessing` ``preprocess`` = ``utils.preprocess``: BGR, x255, minus the Caffe VGG means
* :mod:`.render`     ``to_display`` = ``image.toDisplayTensor``; ``to_heatmap`` = ``utils.to_heatmap``;
  ``overlay`` the heatmap blended over the image (ours)
* :mod:`.png`        ``png_bytes`` = ``image.save`` of an 8-bit PNG (bytes truncated); ``write_atomic``

Tensors are (C, H, W) unless a function says otherwise; float32 or float64 (the original's default
tensor type: float32 for classification and captioning, float64 for VQA). The names below are loaded
when first used, so ``from gradcam_core.image import scale`` does not import Pillow.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "MAX_PIXELS": "decode", "load_image": "decode", "to_rgb": "decode",
    "scale": "resize",
    "MEAN_BGR": "preprocessing", "preprocess": "preprocessing",
    "to_display": "render", "to_heatmap": "render", "overlay": "render",
    "png_bytes": "png", "save_png": "png", "write_atomic": "png",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
