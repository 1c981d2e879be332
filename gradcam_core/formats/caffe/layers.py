"""Caffe layer type -> torch modules. :data:`LAYERS` is the ONE table; each builder reads a
:class:`~.schema.LayerSpec` and the shapes of its bottoms and returns a :class:`Plan`.

Shapes exclude the batch axis: (C, H, W) for images, (K,) after an InnerProduct; None marks a size not
known before the first forward. Modules with weights are created on the meta device (no random init:
the real fc6 holds 102 M weights) and receive the loaded tensors as their parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ...errors import GradCamError
from ...nets.modules import CaffePool2d, WithinChannelLRN, pooled_size
from .schema import NORM_REGION, POOL_METHOD, ROUND_MODE, LayerSpec, Msg, Shape

Modules = list[tuple[str, nn.Module]]


@dataclass
class Plan:
    """What one layer becomes.

    ``blob_shapes``: the shapes Caffe requires of the layer's parameter blobs, in blob order (None =
    any size, taken from the file). ``build(tensors)`` receives the loaded blobs (checked against
    ``blob_shapes``) and returns the (name, module) pairs to run in order - none for layers that only
    declare inputs (no bottoms) or pass their bottom through (Split). ``out_shapes``: one per top.
    """

    out_shapes: list[Shape]
    blob_shapes: list[tuple[int | None, ...]] = field(default_factory=list)
    build: Callable[[list[torch.Tensor]], Modules] = lambda tensors: []


def plan_layer(spec: LayerSpec, in_shapes: list[Shape]) -> Plan:
    """The :class:`Plan` for ``spec`` given its bottoms' shapes; unsupported types raise."""
    builder = LAYERS.get(spec.type)
    if builder is None:
        raise GradCamError(
            f"layer '{spec.name}' has type '{spec.type}', which is not supported "
            f"(supported: {', '.join(sorted(LAYERS))})"
        )
    return builder(spec, in_shapes)


# --------------------------------------------------------------------------------------------------
# Helpers


def _fail(spec: LayerSpec, what: str) -> GradCamError:
    return GradCamError(f"layer '{spec.name}' ({spec.type}): {what}")


def _single(spec: LayerSpec, in_shapes: list[Shape]) -> Shape:
    if len(in_shapes) != 1 or len(spec.tops) != 1:
        raise _fail(spec, f"needs one bottom and one top, has {len(in_shapes)} and {len(spec.tops)}")
    return in_shapes[0]


def _image(spec: LayerSpec, in_shapes: list[Shape]) -> Shape:
    shape = _single(spec, in_shapes)
    if len(shape) != 3:
        raise _fail(spec, f"needs a (N, C, H, W) input, gets {len(shape) + 1} axes")
    return shape


def _pair(spec: LayerSpec, p: Msg, repeated: str, default: int | None, hw: str | None = None) -> tuple[int, int]:
    """(h, w) of a ConvolutionParameter geometry field (base_conv_layer.cpp): ``{hw}_h``/``{hw}_w`` if
    either is set, else ``repeated`` given once (both) or twice (h, w), else ``default``."""
    if hw and (p.has(f"{hw}_h") or p.has(f"{hw}_w")):
        return p.get(f"{hw}_h"), p.get(f"{hw}_w")
    values = p.all(repeated)
    if len(values) == 0 and default is not None:
        return default, default
    if len(values) in (1, 2):
        return values[0], values[-1]
    raise _fail(spec, f"'{repeated}' must be given once or twice for a 2-D convolution, not {len(values)} times")


def _positive(spec: LayerSpec, **values: tuple[int, int] | int) -> None:
    for name, value in values.items():
        if min(value if isinstance(value, tuple) else (value,)) <= 0:
            raise _fail(spec, f"{name} must be positive, is {value}")


def _attach(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """Give a meta-device module its loaded parameters (no copy)."""
    module.weight = nn.Parameter(weight)
    if bias is not None:
        module.bias = nn.Parameter(bias)
    return module


def _same(make: Callable[[LayerSpec], nn.Module]) -> Callable[[LayerSpec, list[Shape]], Plan]:
    """A builder for a weightless layer whose output has its input's shape."""

    def build(spec: LayerSpec, in_shapes: list[Shape]) -> Plan:
        shape = _single(spec, in_shapes)
        return Plan([shape], build=lambda tensors: [(spec.name, make(spec))])

    return build


# --------------------------------------------------------------------------------------------------
# Builders


def _input(spec: LayerSpec, in_shapes: list[Shape]) -> Plan:
    # Input layers (and net-level input fields) declare the input blobs; data layers declare them
    # with unknown sizes. No module, as loadcaffe emitted none.
    if in_shapes:
        raise _fail(spec, "an input layer cannot have bottoms")
    shapes = [tuple(s[1:]) for s in spec.input_shapes]
    if len(shapes) == 1:
        shapes *= len(spec.tops)
    if not shapes:
        shapes = [(None, None, None)] + [()] * (len(spec.tops) - 1)
    if len(shapes) != len(spec.tops):
        raise _fail(spec, f"{len(spec.tops)} tops but {len(shapes)} shapes")
    return Plan(shapes)


def _split(spec: LayerSpec, in_shapes: list[Shape]) -> Plan:
    # Every top is the bottom itself; the net aliases the names.
    if len(in_shapes) != 1:
        raise _fail(spec, f"needs one bottom, has {len(in_shapes)}")
    return Plan([in_shapes[0]] * len(spec.tops))


def _convolution(spec: LayerSpec, in_shapes: list[Shape]) -> Plan:
    channels, height, width = _image(spec, in_shapes)
    p = spec.param("convolution_param")
    n_out, group, bias = p.get("num_output"), p.get("group"), p.get("bias_term")
    kernel = _pair(spec, p, "kernel_size", None, hw="kernel")
    stride = _pair(spec, p, "stride", 1, hw="stride")
    pad = _pair(spec, p, "pad", 0, hw="pad")
    dilation = _pair(spec, p, "dilation", 1)
    _positive(spec, num_output=n_out, group=group, kernel=kernel, stride=stride, dilation=dilation)
    if p.get("axis") != 1:
        raise _fail(spec, "only axis 1 (N, C, H, W convolution) is supported")
    if n_out % group or (channels is not None and channels % group):
        raise _fail(spec, f"group {group} does not divide the {channels} input and {n_out} output channels")

    def size(n: int | None, i: int) -> int | None:
        return None if n is None else (n + 2 * pad[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1

    def build(tensors: list[torch.Tensor]) -> Modules:
        weight = tensors[0]
        # Grouped convolutions are supported (loadcaffe's nn backend cut the net at the first one).
        conv = nn.Conv2d(weight.shape[1] * group, n_out, kernel, stride, pad, dilation, group, bias, device="meta")
        return [(spec.name, _attach(conv, weight, tensors[1] if bias else None))]

    per_group = None if channels is None else channels // group
    blob_shapes = [(n_out, per_group, *kernel)] + ([(n_out,)] if bias else [])
    return Plan([(n_out, size(height, 0), size(width, 1))], blob_shapes, build)


def _pooling(spec: LayerSpec, in_shapes: list[Shape]) -> Plan:
    channels, height, width = _image(spec, in_shapes)
    p = spec.param("pooling_param")
    method = {v: k for k, v in POOL_METHOD.items()}.get(p.get("pool"))
    if method not in ("MAX", "AVE"):
        raise _fail(spec, f"pooling method {method or p.get('pool')} is not supported (MAX and AVE are)")
    # Caffe's rules (PoolingLayer::LayerSetUp): pad_h/stride_h, when given, replace pad/stride.
    pad = (p.get("pad_h"), p.get("pad_w")) if p.has("pad_h") else (p.get("pad"),) * 2
    stride = (p.get("stride_h"), p.get("stride_w")) if p.has("stride_h") else (p.get("stride"),) * 2
    ceil = p.get("round_mode") == ROUND_MODE["CEIL"]
    if p.get("global_pooling"):
        if pad != (0, 0) or stride != (1, 1):
            raise _fail(spec, "global pooling allows only pad 0 and stride 1")
        module = CaffePool2d(method, None, stride, pad, ceil)
        return Plan([(channels, 1, 1)], build=lambda tensors: [(spec.name, module)])
    kernel = (p.get("kernel_size"),) * 2 if p.has("kernel_size") else (p.get("kernel_h"), p.get("kernel_w"))
    _positive(spec, kernel=kernel, stride=stride)
    if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
        raise _fail(spec, f"pad {pad} must be smaller than the kernel {kernel}")
    module = CaffePool2d(method, kernel, stride, pad, ceil)
    sizes = [pooled_size(n, k, s, q, ceil) for n, k, s, q in zip((height, width), kernel, stride, pad)]
    return Plan([(channels, *sizes)], build=lambda tensors: [(spec.name, module)])


def _lrn(spec: LayerSpec, in_shapes: list[Shape]) -> Plan:
    shape = _image(spec, in_shapes)
    p = spec.param("lrn_param")
    size, alpha, beta, k = p.get("local_size"), p.get("alpha"), p.get("beta"), p.get("k")
    if size % 2 == 0:
        raise _fail(spec, f"local_size must be odd (as Caffe requires), is {size}")
    if p.get("norm_region") == NORM_REGION["ACROSS_CHANNELS"]:
        # scale = k + alpha/size * sum of x^2 over `size` neighbouring channels, y = x * scale^-beta:
        # PyTorch's LocalResponseNorm is exactly this for odd sizes (alpha divided by size once).
        def make() -> nn.Module:
            return nn.LocalResponseNorm(size, alpha, beta, k)
    else:
        def make() -> nn.Module:
            return WithinChannelLRN(size, alpha, beta)
    return Plan([shape], build=lambda tensors: [(spec.name, make())])


def _inner_product(spec: LayerSpec, in_shapes: list[Shape]) -> Plan:
    shape = _single(spec, in_shapes)
    p = spec.param("inner_product_param")
    n_out, bias, transpose = p.get("num_output"), p.get("bias_term"), p.get("transpose")
    _positive(spec, num_output=n_out)
    rank = len(shape) + 1
    axis = p.get("axis") + (rank if p.get("axis") < 0 else 0)
    if not 1 <= axis < rank:
        raise _fail(spec, f"axis {p.get('axis')} is out of range for a {rank}-axis input")
    fan_in = None if None in shape[axis - 1 :] else math.prod(shape[axis - 1 :])

    def build(tensors: list[torch.Tensor]) -> Modules:
        # transpose: Caffe stores the weight as (in, out) instead of (out, in).
        weight = tensors[0].t().contiguous() if transpose else tensors[0]
        linear = nn.Linear(weight.shape[1], n_out, bias, device="meta")
        modules: Modules = [(spec.name, _attach(linear, weight, tensors[1] if bias else None))]
        if rank > axis + 1:
            # Caffe's InnerProduct flattens every axis from `axis` on; loadcaffe did that with a
            # separate nn.View module named "torch_view" before the Linear, which shifts the module
            # numbering the Lua scripts (and their users) rely on - so it is a module here too.
            modules.insert(0, ("torch_view", nn.Flatten(axis)))
        return modules

    weight_shape = (fan_in, n_out) if transpose else (n_out, fan_in)
    blob_shapes = [weight_shape] + ([(n_out,)] if bias else [])
    return Plan([(*shape[: axis - 1], n_out)], blob_shapes, build)


def _flatten(spec: LayerSpec, in_shapes: list[Shape]) -> Plan:
    shape = _single(spec, in_shapes)
    p = spec.param("flatten_param")
    rank = len(shape) + 1
    start, end = (a + (rank if a < 0 else 0) for a in (p.get("axis"), p.get("end_axis")))
    if not 1 <= start <= end < rank:
        raise _fail(spec, f"axes {p.get('axis')}..{p.get('end_axis')} are out of range for a {rank}-axis input")
    middle = shape[start - 1 : end]
    merged = None if None in middle else math.prod(middle)
    out = (*shape[: start - 1], merged, *shape[end:])
    return Plan([out], build=lambda tensors: [(spec.name, nn.Flatten(start, end))])


def _dropout(spec: LayerSpec) -> nn.Module:
    ratio = spec.param("dropout_param").get("dropout_ratio")
    if not 0 <= ratio <= 1:  # NaN included; Caffe refuses these too (dropout_layer.cpp)
        raise _fail(spec, f"dropout_ratio must be between 0 and 1, is {ratio}")
    return nn.Dropout(ratio)


def _relu(spec: LayerSpec) -> nn.Module:
    slope = spec.param("relu_param").get("negative_slope")
    # An nn.ReLU is what the Grad-CAM engine switches to guided backprop; the net makes it in place
    # where that is safe (net._rectify_in_place).
    return nn.LeakyReLU(slope) if slope else nn.ReLU(inplace=False)


#: Caffe layer type (V2 string; V1 enums are translated by schema) -> builder.
LAYERS: dict[str, Callable[[LayerSpec, list[Shape]], Plan]] = {
    "Input": _input,
    "Data": _input,
    "ImageData": _input,
    "HDF5Data": _input,
    "MemoryData": _input,
    "WindowData": _input,
    "DummyData": _input,
    "Split": _split,
    "Convolution": _convolution,
    "Pooling": _pooling,
    "LRN": _lrn,
    "InnerProduct": _inner_product,
    "Flatten": _flatten,
    "ReLU": _same(_relu),
    "Sigmoid": _same(lambda spec: nn.Sigmoid()),
    "TanH": _same(lambda spec: nn.Tanh()),
    # Dropout is the identity in eval mode (PyTorch scales at training time, as Torch's default did).
    "Dropout": _same(_dropout),
    # Kept for V2 nets too (loadcaffe's V2 converter stopped at Softmax and dropped it and all later
    # layers, so `cnn:remove()` then removed fc8 instead of the Softmax).
    "Softmax": _same(lambda spec: nn.Softmax(dim=spec.param("softmax_param").get("axis"))),
}
