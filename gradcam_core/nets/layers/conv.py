"""Convolutions: Caffe's Convolution (grouped and depthwise too) and Deconvolution, Torch7's
SpatialConvolution (nn, MM, cudnn); the nn.Conv2d and nn.ConvTranspose2d shape rules."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..registry import LayerError, Modules, Plan, Shape, register, shape_rule
from .common import attach, image, one_image, positive, smallest, torch7_plan


def conv_size(n: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Output extent of a convolution (Caffe's and PyTorch's formula)."""
    return (n + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _pair(p: Any, repeated: str, default: int | None, hw: str | None = None) -> tuple[int, int]:
    """(h, w) of a ConvolutionParameter geometry field (base_conv_layer.cpp): ``{hw}_h``/``{hw}_w`` if
    either is set, else ``repeated`` given once (both) or twice (h, w), else ``default``."""
    if hw and (p.has(f"{hw}_h") or p.has(f"{hw}_w")):
        return p.get(f"{hw}_h"), p.get(f"{hw}_w")
    values = p.all(repeated)
    if len(values) == 0 and default is not None:
        return default, default
    if len(values) in (1, 2):
        return values[0], values[-1]
    raise LayerError(f"'{repeated}' must be given once or twice for a 2-D convolution, not {len(values)} times")


def _geometry(layer: Any, channels: int | None) -> tuple[Any, ...]:
    """(param, num_output, group, bias_term, kernel, stride, pad, dilation) of a ConvolutionParameter."""
    p = layer.param("convolution_param")
    n_out, group, bias = p.get("num_output"), p.get("group"), p.get("bias_term")
    kernel = _pair(p, "kernel_size", None, hw="kernel")
    stride = _pair(p, "stride", 1, hw="stride")
    pad = _pair(p, "pad", 0, hw="pad")
    dilation = _pair(p, "dilation", 1)
    positive(num_output=n_out, group=group, kernel=kernel, stride=stride, dilation=dilation)
    if p.get("axis") != 1:
        raise LayerError("only axis 1 (N, C, H, W convolution) is supported")
    if n_out % group or (channels is not None and channels % group):
        raise LayerError(f"group {group} does not divide the {channels} input and {n_out} output channels")
    return p, n_out, group, bias, kernel, stride, pad, dilation


@register("caffe", "Convolution")
def caffe_convolution(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    channels, height, width = image(layer, in_shapes)
    p, n_out, group, bias, kernel, stride, pad, dilation = _geometry(layer, channels)

    def size(n: int | None, i: int) -> int | None:
        return None if n is None else conv_size(n, kernel[i], stride[i], pad[i], dilation[i])

    def build(tensors: list[torch.Tensor]) -> Modules:
        weight = tensors[0]
        # Grouped convolutions are supported (loadcaffe's nn backend cut the net at the first one).
        conv = nn.Conv2d(weight.shape[1] * group, n_out, kernel, stride, pad, dilation, group, bias, device="meta")
        return [(layer.name, attach(conv, weight, tensors[1] if bias else None))]

    per_group = None if channels is None else channels // group
    blob_shapes = [(n_out, per_group, *kernel)] + ([(n_out,)] if bias else [])
    return Plan([(n_out, size(height, 0), size(width, 1))], blob_shapes, build)


def deconv_size(n: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Output extent of a deconvolution (deconv_layer.cpp; PyTorch's ConvTranspose2d without output_padding)."""
    return stride * (n - 1) + dilation * (kernel - 1) + 1 - 2 * pad


@register("caffe", "Deconvolution")
def caffe_deconvolution(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    # Caffe's Deconvolution is the backward pass of a Convolution, its weight (C_in, C_out / group,
    # kh, kw): exactly torch's ConvTranspose2d (same layout, same output size).
    channels, height, width = image(layer, in_shapes)
    p, n_out, group, bias, kernel, stride, pad, dilation = _geometry(layer, channels)

    def size(n: int | None, i: int) -> int | None:
        return None if n is None else deconv_size(n, kernel[i], stride[i], pad[i], dilation[i])

    sizes = (size(height, 0), size(width, 1))
    if any(n is not None and n < 1 for n in sizes):
        raise LayerError(f"pad {pad} leaves no output for a {height}x{width} input")

    def build(tensors: list[torch.Tensor]) -> Modules:
        weight = tensors[0]
        deconv = nn.ConvTranspose2d(weight.shape[0], n_out, kernel, stride, pad, 0, group, bias, dilation,
                                    device="meta")
        return [(layer.name, attach(deconv, weight, tensors[1] if bias else None))]

    blob_shapes = [(channels, n_out // group, *kernel)] + ([(n_out,)] if bias else [])
    return Plan([(n_out, *sizes)], blob_shapes, build)


@register("torch7", "nn.SpatialConvolution", "nn.SpatialConvolutionMM", "cudnn.SpatialConvolution")
def torch7_convolution(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    # nn stores the weight as (out, in, kH, kW) or, in older files, (out, in*kH*kW); cudnn's has
    # in/groups input planes. Any layout with the right element count is reshaped.
    n_in, n_out = layer.int("nInputPlane"), layer.int("nOutputPlane")
    kernel = (layer.int("kH"), layer.int("kW"))
    stride = (layer.int("dH", 1), layer.int("dW", 1))
    pad = (layer.int("padH", 0), layer.int("padW", 0))
    groups = layer.int("groups", 1)
    if min(n_in, n_out, groups, *kernel, *stride) < 1 or n_in % groups or n_out % groups:
        raise LayerError(
            f"bad geometry: {n_in} -> {n_out} planes, groups {groups}, kernel {kernel}, stride {stride}"
        )
    # The weight is checked first: the file's array bounds the geometry before torch sizes anything.
    weight = layer.parameter(layer.array("weight"), (n_out, n_in // groups, *kernel), "weight")
    bias = layer.array("bias", required=False)
    conv = nn.Conv2d(n_in, n_out, kernel, stride, pad, groups=groups, bias=bias is not None, device="meta")
    conv.weight = weight
    if bias is not None:
        conv.bias = layer.parameter(bias, (n_out,), "bias")
    return torch7_plan(layer, conv)


@shape_rule(nn.Conv2d)
def conv2d_shape(conv: nn.Conv2d, in_shapes: list[Shape]) -> list[Shape] | None:
    shape = one_image(in_shapes)
    if shape is None or isinstance(conv.padding, str):
        return None
    channels, height, width = shape
    if channels != conv.in_channels:
        raise LayerError(f"needs {conv.in_channels} input channels")
    sizes = [conv_size(n, *geometry) for n, *geometry in
             zip((height, width), conv.kernel_size, conv.stride, conv.padding, conv.dilation)]
    if min(sizes) < 1:
        least = [d * (k - 1) + 1 - 2 * p for k, p, d in zip(conv.kernel_size, conv.padding, conv.dilation)]
        raise LayerError(f"needs at least a {least[0]}x{least[1]} input")
    return [(conv.out_channels, *sizes)]


@shape_rule(nn.ConvTranspose2d)
def conv_transpose2d_shape(deconv: nn.ConvTranspose2d, in_shapes: list[Shape]) -> list[Shape] | None:
    shape = one_image(in_shapes)
    if shape is None or isinstance(deconv.padding, str) or any(deconv.output_padding):
        return None
    channels, height, width = shape
    if channels != deconv.in_channels:
        raise LayerError(f"needs {deconv.in_channels} input channels")
    sizes = [deconv_size(n, *geometry) for n, *geometry in
             zip((height, width), deconv.kernel_size, deconv.stride, deconv.padding, deconv.dilation)]
    if min(sizes) < 1:
        # (smallest() calls the lambda at once, within its loop step)
        least = [smallest(lambda n: deconv_size(n, k, s, p, d) >= 1, 2 * p + 1)  # noqa: B023
                 for k, s, p, d in zip(deconv.kernel_size, deconv.stride, deconv.padding, deconv.dilation)]
        raise LayerError(f"needs at least a {least[0]}x{least[1]} input")
    return [(deconv.out_channels, *sizes)]
