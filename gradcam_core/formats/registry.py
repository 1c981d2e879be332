"""The classifier model formats in one table: each format's name, how its file is recognised, whether
it needs a prototxt, the extra it needs, its default preprocessing and its loader.

Used by :func:`gradcam_core.tasks.classify.load_model` and by the options of classification.py and of
the web demo, which decide from it whether ``-proto_file`` is read.

* ``torchvision``: chosen by ``-arch`` (``-model_file`` is the architecture's state_dict)
* ``onnx``: a ``.onnx`` name (so that a corrupt one is reported as an ONNX problem) or ONNX content,
  whatever the name (a ``ModelProto``'s first fields; only a few bytes are read)
* ``caffe``: anything else (a caffemodel, with its deploy prototxt)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import GradCamError
from ..extras import require

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class ModelFormat:
    """One classifier format.

    Attributes:
        name: "caffe", "onnx" or "torchvision" (``Classifier.fmt``).
        needs_prototxt: whether ``-proto_file`` is read (the caffemodel holds no structure).
        extra: the optional extra its loader needs ("" = the core install).
        preprocessing: its default preprocessing ("caffe" or "torchvision": see ``Preprocessing``).
        loader: ``(model_file, proto_file, arch, device, dtype, strip_softmax) -> nn.Module``, imported
            when called.
    """

    name: str
    needs_prototxt: bool
    extra: str
    preprocessing: str
    loader: Callable[..., nn.Module]

    def check(self, model_file: Path, proto_file: Path | None) -> None:
        """Refuse, before any work, a format whose extra is missing or a caffemodel without its prototxt."""
        if self.extra:
            require(self.extra)
        if self.needs_prototxt and proto_file is None:
            raise GradCamError(f"{model_file} is a caffemodel: it needs its deploy prototxt (-proto_file)")

    def load(self, model_file: Path, *, proto_file: Path | None = None, arch: str = "",
             device: Any = "cpu", dtype: torch.dtype | None = None, strip_softmax: bool = False) -> nn.Module:
        """The net in eval mode on ``device``; ``strip_softmax``: a final Softmax dropped, so that the
        net outputs (N, K) logits (Grad-CAM explains a pre-softmax score)."""
        self.check(model_file, proto_file)
        return self.loader(model_file, proto_file, arch, device, dtype, strip_softmax)


def _load_caffe(model_file: Path, proto_file: Path, arch: str, device: Any, dtype: Any,
                strip_softmax: bool) -> nn.Module:
    # The Lua script removed the last module whatever it was; with loadcaffe that was the SoftMax of
    # V1 files, but fc8 for V2 files (whose SoftMax loadcaffe had already dropped by a bug). Only a
    # final Softmax is removed here, so V1 and V2 files give the same logits.
    import torch
    from torch import nn

    from .caffe import load_caffe

    net = load_caffe(str(proto_file), str(model_file), device=device, dtype=dtype or torch.float32)
    if strip_softmax and len(net) and isinstance(net.module_at(len(net)), nn.Softmax):
        net.remove_last()
    return net


def _load_onnx(model_file: Path, proto_file: Path | None, arch: str, device: Any, dtype: Any,
               strip_softmax: bool) -> nn.Module:
    import torch

    from .onnx import load_onnx

    return load_onnx(model_file, device, strip_softmax=strip_softmax, dtype=dtype or torch.float32)


def _load_torchvision(model_file: Path, proto_file: Path | None, arch: str, device: Any, dtype: Any,
                      strip_softmax: bool) -> nn.Module:
    from .torchvision import load_torchvision

    net = load_torchvision(arch, model_file, device)  # torchvision classifiers end in logits
    return net if dtype is None else net.to(dtype=dtype)


CAFFE = ModelFormat("caffe", needs_prototxt=True, extra="", preprocessing="caffe", loader=_load_caffe)
ONNX = ModelFormat("onnx", needs_prototxt=False, extra="onnx", preprocessing="torchvision", loader=_load_onnx)
TORCHVISION = ModelFormat("torchvision", needs_prototxt=False, extra="", preprocessing="torchvision",
                          loader=_load_torchvision)
FORMATS = {f.name: f for f in (CAFFE, ONNX, TORCHVISION)}


def is_onnx_model(path: Path) -> bool:
    """Whether ``path`` is read as an ONNX model: a ``.onnx`` name or ONNX content (whatever its name);
    raises GradCamError when the file cannot be read."""
    from .caffe.wire import WireFile

    if Path(path).suffix.lower() == ".onnx":
        return True
    with WireFile(path) as f:
        return f.size > 0 and f.is_onnx()


def format_of(model_file: Path, arch: str = "") -> ModelFormat:
    """The format of a classifier's files: torchvision when ``arch`` names an architecture, ONNX for an
    ONNX file, else Caffe."""
    if arch:
        return TORCHVISION
    return ONNX if is_onnx_model(model_file) else CAFFE
