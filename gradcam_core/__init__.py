"""gradcam_core: Grad-CAM, Guided Backprop and Guided Grad-CAM as the Lua originals computed them.

Library use::

    from gradcam_core import load_caffe, explain
    from gradcam_core.image import preprocess
    net = load_caffe("deploy.prototxt", "weights.caffemodel")
    x = preprocess("images/cat_dog.jpg", 224, 224)          # (3, 224, 224) BGR, mean-subtracted
    maps = explain(net, x[None], layer="relu5_3", targets=[242])        # 0-based class index
    maps.cam[0, 0]       # (224, 224) Grad-CAM, scaled to the input
    maps.guided[0, 0]    # (3, 224, 224) guided backprop, in the input's channel order

Heavy modules (torch) are imported lazily, so ``import gradcam_core`` is cheap.
"""
from __future__ import annotations

from typing import Any

from .errors import GradCamError

__all__ = ["GradCamError", "explain", "load_caffe", "Explanation", "ClassTarget"]

_LAZY = {
    "explain": ("gradcam_core.engine", "explain"),
    "Explanation": ("gradcam_core.engine", "Explanation"),
    "ClassTarget": ("gradcam_core.engine", "ClassTarget"),
    "load_caffe": ("gradcam_core.caffe", "load_caffe"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'gradcam_core' has no attribute {name!r}")
