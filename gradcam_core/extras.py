"""The optional extras (``pip install 'gradcam-core[onnx]'``): which modules each one brings, and the one
line that names the extra when a feature needs it and it is not installed.

The core install (torch, torchvision, numpy, pillow, simplejpeg, fire, tqdm) explains Caffe, Torch7
and torchvision models; ONNX files and the converter need ``onnx``, the web demo ``web``, VQA questions
``vqa``, the evaluation (plots, ROAD's sparse solve, connected regions) ``evaluate``.
"""
from __future__ import annotations

import importlib.util
import sys

from .errors import GradCamError

#: extra -> (what needs it, as the message says it; the modules it installs: each a tuple of
#: alternative import names)
EXTRAS: dict[str, tuple[str, tuple[tuple[str, ...], ...]]] = {
    "onnx": ("ONNX models need", (("onnx",), ("onnx2torch",))),
    "web": ("the web demo needs", (("starlette",), ("uvicorn",), ("python_multipart", "multipart"))),
    "vqa": ("VQA questions (tokenized by nltk) need", (("nltk",),)),
    "evaluate": ("gradcam-evaluate needs", (("matplotlib",), ("scipy",))),
}


def installed(module: str) -> bool:
    """Whether ``module`` (a top-level name) can be imported, without importing it."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: its import is blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str, what: str = "") -> None:
    """Raise the one-line :class:`GradCamError` naming ``extra`` unless all its modules are installed;
    ``what`` replaces the default "... need(s)" part (e.g. "the converter needs")."""
    needs, modules = EXTRAS[extra]
    if not all(any(installed(name) for name in names) for names in modules):
        raise GradCamError(f"{what or needs} the '{extra}' extra: pip install 'gradcam-core[{extra}]'")
