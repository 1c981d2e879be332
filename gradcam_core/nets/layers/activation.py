"""Activations (all elementwise): ReLU, Sigmoid and TanH of Caffe and Torch7; Caffe's PReLU, ELU, Power,
AbsVal and BNLL."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..modules import BNLL, AbsVal, Power
from ..registry import LayerError, Modules, Plan, Shape, register, same_shape, shape_rule
from .common import caffe_same, single, torch7_fixed, torch7_plan


def _caffe_relu(layer: Any) -> nn.Module:
    slope = layer.param("relu_param").get("negative_slope")
    # An nn.ReLU is what the Grad-CAM engine switches to guided backprop; the Caffe loader makes it
    # in place where that is safe (formats.caffe.build._rectify_in_place).
    return nn.LeakyReLU(slope) if slope else nn.ReLU(inplace=False)


register("caffe", "ReLU")(caffe_same(_caffe_relu))
register("caffe", "Sigmoid")(caffe_same(lambda layer: nn.Sigmoid()))
register("caffe", "TanH")(caffe_same(lambda layer: nn.Tanh()))
register("caffe", "AbsVal")(caffe_same(lambda layer: AbsVal()))
register("caffe", "BNLL")(caffe_same(lambda layer: BNLL()))
register("caffe", "ELU")(caffe_same(lambda layer: nn.ELU(layer.param("elu_param").get("alpha"))))


def _caffe_power(layer: Any) -> nn.Module:
    p = layer.param("power_param")
    return Power(p.get("power"), p.get("scale"), p.get("shift"))


register("caffe", "Power")(caffe_same(_caffe_power))


@register("caffe", "PReLU")
def caffe_prelu(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    # prelu_layer.cpp: y = max(x, 0) + a * min(x, 0), a per channel (axis 1) or one for all.
    shape = single(layer, in_shapes)
    shared = layer.param("prelu_param").get("channel_shared")
    if not shared and not shape:
        raise LayerError("needs an input with a channel axis (or channel_shared)")
    n = 1 if shared else shape[0]

    def build(tensors: list[torch.Tensor]) -> Modules:
        prelu = nn.PReLU(tensors[0].numel(), device="meta")
        prelu.weight = nn.Parameter(tensors[0].reshape(-1))
        return [(layer.name, prelu)]

    return Plan([shape], [(n,)], build)


@register("torch7", "nn.ReLU", "cudnn.ReLU")
def torch7_relu(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    # Never in place here: the engine hooks plain nn.ReLU modules; the in-place effect on the layer
    # before it is reproduced by the chain's lookup (see formats.torch7.modules.sequential_to_net).
    if layer.number("threshold", 0) != 0 or layer.number("val", 0) != 0:
        raise LayerError("only a ReLU with threshold 0 and value 0 is supported")
    return torch7_plan(layer, nn.ReLU())


register("torch7", "nn.Tanh", "cudnn.Tanh")(torch7_fixed(nn.Tanh))
register("torch7", "nn.Sigmoid", "cudnn.Sigmoid")(torch7_fixed(nn.Sigmoid))

shape_rule(nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.ELU, AbsVal, BNLL, Power)(same_shape)


@shape_rule(nn.PReLU)
def prelu_shape(prelu: nn.PReLU, in_shapes: list[Shape]) -> list[Shape] | None:
    if len(in_shapes) != 1:
        return None
    if prelu.num_parameters != 1 and (not in_shapes[0] or in_shapes[0][0] != prelu.num_parameters):
        raise LayerError(f"needs {prelu.num_parameters} channels")
    return list(in_shapes)
