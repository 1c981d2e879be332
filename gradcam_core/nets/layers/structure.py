"""Layers that move blobs rather than compute: Caffe's input declarations and Split; Torch7's Identity."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import LayerError, Plan, Shape, register, same_shape, shape_rule
from .common import torch7_fixed


@register("caffe", "Input", "Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData")
def caffe_input(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    # Input layers (and net-level input fields) declare the input blobs; data layers declare them
    # with unknown sizes. No module, as loadcaffe emitted none.
    if in_shapes:
        raise LayerError("an input layer cannot have bottoms")
    shapes: list[Shape | None] = [tuple(s[1:]) for s in layer.input_shapes]
    if len(shapes) == 1:
        shapes *= len(layer.tops)
    if not shapes:
        shapes = [(None, None, None)] + [()] * (len(layer.tops) - 1)
    if len(shapes) != len(layer.tops):
        raise LayerError(f"{len(layer.tops)} tops but {len(shapes)} shapes")
    return Plan(shapes)


@register("caffe", "Split")
def caffe_split(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    # Every top is the bottom itself; the net aliases the names.
    if len(in_shapes) != 1:
        raise LayerError(f"needs one bottom, has {len(in_shapes)}")
    return Plan([in_shapes[0]] * len(layer.tops))


register("torch7", "nn.Identity")(torch7_fixed(nn.Identity))
shape_rule(nn.Identity)(same_shape)
