"""Normalisations: Caffe's LRN (across and within channels), Torch7's SpatialCrossMapLRN and Normalize."""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

from ..modules import Normalize, WithinChannelLRN
from ..registry import LayerError, Plan, Shape, register, same_shape, shape_rule
from .common import image, torch7_plan


@register("caffe", "LRN")
def caffe_lrn(layer: Any, in_shapes: list[Optional[Shape]]) -> Plan:
    shape = image(layer, in_shapes)
    p = layer.param("lrn_param")
    size, alpha, beta, k = p.get("local_size"), p.get("alpha"), p.get("beta"), p.get("k")
    if size % 2 == 0:
        raise LayerError(f"local_size must be odd (as Caffe requires), is {size}")
    if layer.enum("lrn_param", "norm_region") == "ACROSS_CHANNELS":
        # scale = k + alpha/size * sum of x^2 over `size` neighbouring channels, y = x * scale^-beta:
        # PyTorch's LocalResponseNorm is exactly this for odd sizes (alpha divided by size once).
        def make() -> nn.Module:
            return nn.LocalResponseNorm(size, alpha, beta, k)
    else:
        def make() -> nn.Module:
            return WithinChannelLRN(size, alpha, beta)
    return Plan([shape], build=lambda tensors: [(layer.name, make())])


@register("torch7", "nn.SpatialCrossMapLRN", "cudnn.SpatialCrossMapLRN")
def torch7_cross_map_lrn(layer: Any, in_shapes: list[Optional[Shape]]) -> Plan:
    # scale = k + alpha/size * (sum of x^2 over `size` channels); y = x * scale^-beta: PyTorch's LRN.
    size, alpha = layer.int("size"), layer.number("alpha")
    beta, k = layer.number("beta"), layer.number("k", 1)
    return torch7_plan(layer, nn.LocalResponseNorm(size, alpha, beta, k))


@register("torch7", "nn.Normalize")
def torch7_normalize(layer: Any, in_shapes: list[Optional[Shape]]) -> Plan:
    p = layer.number("p")
    if p <= 0:
        raise LayerError(f"norm p must be positive, is {p}")
    return torch7_plan(layer, Normalize(p, layer.number("eps", 1e-10)))


@shape_rule(nn.LocalResponseNorm, WithinChannelLRN)
def lrn_shape(module: nn.Module, in_shapes: list[Shape]) -> Optional[list[Shape]]:
    # both need (N, C, ...) inputs with at least one more axis
    return same_shape(module, in_shapes) if len(in_shapes) == 1 and len(in_shapes[0]) >= 2 else None


shape_rule(Normalize)(same_shape)
