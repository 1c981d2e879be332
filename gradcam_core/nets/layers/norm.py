"""Normalisations: Caffe's LRN (across and within channels), BatchNorm, Scale and Bias; Torch7's
SpatialCrossMapLRN and Normalize."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..modules import AxisAffine, CaffeBatchNorm, Normalize, ScaleBy, WithinChannelLRN
from ..registry import LayerError, Modules, Plan, Shape, register, same_shape, shape_rule, show_shape
from .common import canonical_axis, image, known, single, torch7_plan


@register("caffe", "LRN")
def caffe_lrn(layer: Any, in_shapes: list[Shape | None]) -> Plan:
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
def torch7_cross_map_lrn(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    # scale = k + alpha/size * (sum of x^2 over `size` channels); y = x * scale^-beta: PyTorch's LRN.
    size, alpha = layer.int("size"), layer.number("alpha")
    beta, k = layer.number("beta"), layer.number("k", 1)
    return torch7_plan(layer, nn.LocalResponseNorm(size, alpha, beta, k))


@register("torch7", "nn.Normalize")
def torch7_normalize(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    p = layer.number("p")
    if p <= 0:
        raise LayerError(f"norm p must be positive, is {p}")
    return torch7_plan(layer, Normalize(p, layer.number("eps", 1e-10)))


@shape_rule(nn.LocalResponseNorm, WithinChannelLRN)
def lrn_shape(module: nn.Module, in_shapes: list[Shape]) -> list[Shape] | None:
    # both need (N, C, ...) inputs with at least one more axis
    return same_shape(module, in_shapes) if len(in_shapes) == 1 and len(in_shapes[0]) >= 2 else None


shape_rule(Normalize)(same_shape)


# --------------------------------------------------------------------------------------------------
# BatchNorm, Scale, Bias


@register("caffe", "BatchNorm")
def caffe_batch_norm(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    # Stored statistics always: Caffe uses them in the TEST phase unless use_global_stats says
    # false, which asks for the batch's own statistics; deploy files that say so were still trained
    # with stored ones, and explaining one image by its batch makes no sense, so false is read as true.
    shape = single(layer, in_shapes)
    if not shape:
        raise LayerError("needs an input with a channel axis")
    channels = shape[0]
    eps = layer.param("batch_norm_param").get("eps")
    if not eps >= 0:
        raise LayerError(f"eps must not be negative, is {eps}")

    def build(tensors: list[torch.Tensor]) -> Modules:
        mean, var, factor = tensors
        # batch_norm_layer.cpp: the stored sums are divided by the scale factor; a factor 0 means 0.
        f = float(factor.reshape(-1)[0])
        scale = 0.0 if f == 0 else 1.0 / f
        return [(layer.name, CaffeBatchNorm(mean.reshape(-1) * scale, var.reshape(-1) * scale, eps))]

    return Plan([shape], [(channels,), (channels,), (1,)], build)


def _param_axes(layer: Any, p: Any, shape: Shape) -> tuple[int, tuple[int | None, ...]]:
    """(axis, parameter shape) of a one-bottom Scale or Bias: x's axes axis..axis+num_axes (-1: to the end)."""
    rank = len(shape) + 1
    axis = canonical_axis(p.get("axis"), rank, "axis")
    num_axes = p.get("num_axes")
    if num_axes < -1 or axis + max(num_axes, 0) > rank:
        raise LayerError(f"num_axes {num_axes} from axis {axis} does not fit a {rank}-axis input")
    end = rank if num_axes == -1 else axis + num_axes
    return axis, tuple(shape[axis - 1 : end - 1])


def _second_bottom(layer: Any, p: Any, in_shapes: list[Shape | None]) -> Shape:
    if len(in_shapes) != 2 or len(layer.tops) != 1:
        raise LayerError(f"needs one or two bottoms and one top, has {len(in_shapes)} and {len(layer.tops)}")
    shape, factor = known(in_shapes)
    # Every blob here has the batch axis: a second bottom lines up from axis 0 on.
    if p.get("axis") != 0:
        raise LayerError("with a second bottom only axis 0 is supported (the factor has the batch axis)")
    if len(factor) > len(shape) or any(a is not None and b is not None and a != b for a, b in zip(factor, shape)):
        raise LayerError(f"the second bottom ({show_shape(factor)}) does not match the first one's "
                         f"leading axes ({show_shape(shape)})")
    return shape


@register("caffe", "Scale")
def caffe_scale(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    p = layer.param("scale_param")
    bias = p.get("bias_term")
    if len(in_shapes) != 1:
        shape = _second_bottom(layer, p, in_shapes)
        if bias:
            raise LayerError("bias_term with a second bottom is not supported")
        return Plan([shape], build=lambda tensors: [(layer.name, ScaleBy(True))])
    shape = single(layer, in_shapes)
    axis, blob = _param_axes(layer, p, shape)

    def build(tensors: list[torch.Tensor]) -> Modules:
        return [(layer.name, AxisAffine(tensors[0], tensors[1] if bias else None, axis))]

    return Plan([shape], [blob, blob] if bias else [blob], build)


@register("caffe", "Bias")
def caffe_bias(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    p = layer.param("bias_param")
    if len(in_shapes) != 1:
        shape = _second_bottom(layer, p, in_shapes)
        return Plan([shape], build=lambda tensors: [(layer.name, ScaleBy(False))])
    shape = single(layer, in_shapes)
    axis, blob = _param_axes(layer, p, shape)
    return Plan([shape], [blob], lambda tensors: [(layer.name, AxisAffine(None, tensors[0], axis))])


shape_rule(CaffeBatchNorm, AxisAffine)(same_shape)


@shape_rule(ScaleBy)
def scale_by_shape(module: ScaleBy, in_shapes: list[Shape]) -> list[Shape] | None:
    if len(in_shapes) != 2 or len(in_shapes[1]) > len(in_shapes[0]):
        return None
    if any(a != b for a, b in zip(in_shapes[1], in_shapes[0])):
        raise LayerError(f"needs a second input matching {show_shape(in_shapes[0][: len(in_shapes[1])])}")
    return [in_shapes[0]]
