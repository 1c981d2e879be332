"""Activations: ReLU, Sigmoid and TanH of Caffe and Torch7 (all elementwise)."""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

from ..registry import LayerError, Plan, Shape, register, same_shape, shape_rule
from .common import caffe_same, torch7_fixed, torch7_plan


def _caffe_relu(layer: Any) -> nn.Module:
    slope = layer.param("relu_param").get("negative_slope")
    # An nn.ReLU is what the Grad-CAM engine switches to guided backprop; the Caffe loader makes it
    # in place where that is safe (formats.caffe.build._rectify_in_place).
    return nn.LeakyReLU(slope) if slope else nn.ReLU(inplace=False)


register("caffe", "ReLU")(caffe_same(_caffe_relu))
register("caffe", "Sigmoid")(caffe_same(lambda layer: nn.Sigmoid()))
register("caffe", "TanH")(caffe_same(lambda layer: nn.Tanh()))


@register("torch7", "nn.ReLU", "cudnn.ReLU")
def torch7_relu(layer: Any, in_shapes: list[Optional[Shape]]) -> Plan:
    # Never in place here: the engine hooks plain nn.ReLU modules; the in-place effect on the layer
    # before it is reproduced by the chain's lookup (see formats.torch7.modules.sequential_to_net).
    if layer.number("threshold", 0) != 0 or layer.number("val", 0) != 0:
        raise LayerError("only a ReLU with threshold 0 and value 0 is supported")
    return torch7_plan(layer, nn.ReLU())


register("torch7", "nn.Tanh", "cudnn.Tanh")(torch7_fixed(nn.Tanh))
register("torch7", "nn.Sigmoid", "cudnn.Sigmoid")(torch7_fixed(nn.Sigmoid))

shape_rule(nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh)(same_shape)
