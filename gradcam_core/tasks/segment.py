"""Semantic segmentation: a model mapping an image to per-pixel class scores, and what to explain of
it, a class's logits summed over a region (:class:`~gradcam_core.engine.targets.SegmentationTarget`).

The models: torchvision's segmentation architectures (``fcn_resnet50``, ``deeplabv3_resnet50``,
``lraspp_mobilenet_v3_large``, ...) from a state_dict, whose forward returns ``{"out": (N, classes,
H, W), "aux": ...}``: :class:`OutputOf` explains ``"out"``, the main head (the auxiliary head only
helps training); or an ONNX model whose one output is (N, classes, H, W). Everything here is
0-based (class 15 is VOC's "person"); the front ends convert.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from ..engine.targets import SegmentationTarget
from ..errors import GradCamError
from ..formats.synset import ClassNames, parse_synset, read_synset
from ..image.preprocessing import Preprocessing
from .classify import InputOptions, preprocessing_for

if TYPE_CHECKING:
    from ..formats.onnx import OnnxNet

OUTPUT_KEY = "out"
"""The entry of a torchvision segmentation model's output dict that is explained."""


class OutputOf(nn.Module):
    """A model whose forward returns a dict, as one returning its ``key`` entry (N, classes, H, W).

    The model's children are this module's children under the same names, so layers are named as in
    the model itself (``backbone.layer4``, not ``model.backbone.layer4``); the model runs its own forward
    over them."""

    _model: nn.Module

    def __init__(self, model: nn.Module, key: str = OUTPUT_KEY) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        self.__dict__["_model"] = model  # not a submodule: its children are ours already
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._model(x)
        if not isinstance(out, dict) or self.key not in out:
            raise GradCamError(f"the segmentation model's output has no {self.key!r} entry")
        return cast(torch.Tensor, out[self.key])

    def train(self, mode: bool = True) -> OutputOf:
        super().train(mode)
        self._model.training = mode  # (its children follow through ours)
        return self


@dataclass
class Segmenter:
    """A loaded segmentation model.

    Attributes:
        net: maps (N, 3, S, S) preprocessed images to (N, classes, H, W) per-pixel scores (logits).
        fmt: "torchvision" or "onnx".
        preprocessing: how an image becomes its input.
        names: its class names, or None where they are unknown.
        source: the model file (or the architecture), as messages name it.
        backbone_layer: the layer explained when none is named, or "" (see :func:`default_segment_layer`).
        input_size, fixed_size: as :class:`~gradcam_core.tasks.classify.Classifier`'s.
    """

    net: nn.Module
    fmt: str
    preprocessing: Preprocessing
    names: ClassNames | None
    source: str = ""
    backbone_layer: str = ""
    input_size: tuple[int, int] | None = None
    fixed_size: tuple[int, int] | None = None


def load_segmenter(model_file: Path | None, *, arch: str = "", device: torch.device = torch.device("cpu"),
                   synset_file: Path | None = None, inputs: InputOptions | None = None) -> Segmenter:
    """A segmentation model: torchvision's ``arch`` with the state_dict ``model_file`` (None: random
    weights), or else the ONNX model ``model_file``. Class names: ``synset_file``, else an ONNX file's
    own, else torchvision's 21 VOC names for an ``arch`` with 21 classes. Preprocessing: as a
    classifier's (:func:`~gradcam_core.tasks.classify.preprocessing_for`): torchvision's ImageNet
    normalisation for ``arch``, an ONNX file's metadata or torchvision's for ONNX, each option given
    replacing its part."""
    from ..formats.registry import FORMATS

    names = read_synset(synset_file) if synset_file is not None else None
    own, input_size, fixed_size, backbone = None, None, None, ""
    if arch:
        from ..formats import torchvision as tv

        model = tv.load_segmentation(arch, model_file, device)
        net: nn.Module = OutputOf(model)
        fmt, source = "torchvision", str(model_file) if model_file is not None else f"{arch} (random weights)"
        body = getattr(model, "backbone", None)
        last = [name for name, _ in body.named_children()] if isinstance(body, nn.Module) else []
        backbone = f"backbone.{last[-1]}" if last else ""
        classes = _classes(model)
        if names is None and classes == 21:
            names = parse_synset("\n".join(tv.segmentation_categories()), "torchvision's VOC class names")
    else:
        assert model_file is not None
        from ..tasks.classify import _own_preprocessing

        net = FORMATS["onnx"].load(model_file, device=device)
        onnx_net = cast("OnnxNet", net)
        fmt, source = "onnx", str(model_file)
        own_names, own_size = onnx_net.metadata.get("class_names"), onnx_net.metadata.get("input_size")
        own = _own_preprocessing(net, source)
        names = names or (own_names if isinstance(own_names, ClassNames) else None)
        input_size = own_size if isinstance(own_size, tuple) else None
        _, height, width = onnx_net.input_shape
        fixed_size = (height, width) if height is not None and width is not None else None
    return Segmenter(net.eval(), fmt, preprocessing_for(fmt, inputs or InputOptions(), own), names, source, backbone, input_size,
                     fixed_size)


def _classes(model: nn.Module) -> int | None:
    """The out_channels of a torchvision segmentation model's last main-head convolution."""
    head = getattr(model, "classifier", None)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)] if isinstance(head, nn.Module) else []
    return convs[-1].out_channels if convs else None


def check_output(output: Any, source: str) -> tuple[int, int, int]:
    """(classes, H, W) of a segmentation model's ``output`` for one image; anything but a (1, classes,
    H, W) tensor (a classifier's (1, K)) is one line naming ``source``."""
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise GradCamError(f"{source} is not a segmentation model: its output is {shape}, not (N, classes, H, W)")
    return int(output.shape[1]), int(output.shape[2]), int(output.shape[3])


def default_segment_layer(segmenter: Segmenter, example: torch.Tensor, classes: int) -> str:
    """The layer explained when none is named: a torchvision model's backbone output (its last stage,
    ``backbone.layer4`` of a ResNet, ``backbone.16`` of a MobileNetV3: the deepest features the heads
    read, as pytorch-grad-cam's tutorial explains DeepLabV3), else the last layer whose output is a
    spatial map smaller than the model's output and is not the class-score map (``classes``
    channels), so that the map is not the scores upsampled."""
    from ..engine.layers import spatial_layers

    if segmenter.backbone_layer:
        return segmenter.backbone_layer
    found = spatial_layers(segmenter.net, example)
    with torch.no_grad():
        out_hw = tuple(segmenter.net(example).shape[-2:])
    inner = [name for name, shape in found if tuple(shape[-2:]) != out_hw and shape[1] != classes]
    if inner:
        return inner[-1]
    if found:
        return found[-1][0]
    raise GradCamError("no layer of the model gives a spatial map: name a layer (-layer_name)")


def segmentation_targets(classes: Sequence[int], mask: torch.Tensor | None,
                         names: Sequence[str] = ()) -> list[SegmentationTarget]:
    """One :class:`SegmentationTarget` per 0-based class, over ``mask`` (H, W) (None: each image's
    pixels predicted as the class), each named ``names[k]`` in its messages."""
    return [SegmentationTarget(c, mask, names[k] if k < len(names) else "") for k, c in enumerate(classes)]


def predicted(scores: torch.Tensor) -> torch.Tensor:
    """Each pixel's predicted class: scores (N, classes, H, W) -> (N, H, W) 0-based classes."""
    return scores.detach().argmax(dim=1)


def load_mask(path: Path) -> torch.Tensor:
    """A mask image (PNG, any image format the tool reads) -> (H, W) bool: its non-zero pixels (any
    channel, alpha included)."""
    from ..image.decode import load_image

    image = load_image(path, torch.float32)
    return (image != 0).any(dim=0)


def fit_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``mask`` (H0, W0) bool -> (height, width) float 0/1: ``image.scale``'d (an area average when
    shrinking), then pixels at least half covered."""
    from ..image.resize import scale

    if tuple(mask.shape) == (height, width):
        return mask.float()
    return (scale(mask.float()[None], width, height)[0] >= 0.5).float()
