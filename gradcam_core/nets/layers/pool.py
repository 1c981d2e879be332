"""Pooling: Caffe's Pooling (MAX, AVE, global), Torch7's SpatialMax/AveragePooling; their shape rules."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..modules import CaffePool2d, pooled_size
from ..registry import LayerError, Plan, Shape, register, shape_rule
from .common import image, one_image, positive, smallest, torch7_plan


@register("caffe", "Pooling")
def caffe_pooling(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    channels, height, width = image(layer, in_shapes)
    p = layer.param("pooling_param")
    method = layer.enum("pooling_param", "pool")
    if method not in ("MAX", "AVE"):
        raise LayerError(f"pooling method {method or p.get('pool')} is not supported (MAX and AVE are)")
    # Caffe's rules (PoolingLayer::LayerSetUp): pad_h/stride_h, when given, replace pad/stride.
    pad = (p.get("pad_h"), p.get("pad_w")) if p.has("pad_h") else (p.get("pad"),) * 2
    stride = (p.get("stride_h"), p.get("stride_w")) if p.has("stride_h") else (p.get("stride"),) * 2
    # BVLC's round_mode FLOOR, or the forks' ceil_mode: false (SENet's, ...): floor rounding
    ceil = layer.enum("pooling_param", "round_mode") == "CEIL" and bool(p.get("ceil_mode"))
    if p.get("global_pooling"):
        if pad != (0, 0) or stride != (1, 1):
            raise LayerError("global pooling allows only pad 0 and stride 1")
        module = CaffePool2d(method, None, stride, pad, ceil)
        return Plan([(channels, 1, 1)], build=lambda tensors: [(layer.name, module)])
    kernel = (p.get("kernel_size"),) * 2 if p.has("kernel_size") else (p.get("kernel_h"), p.get("kernel_w"))
    positive(kernel=kernel, stride=stride)
    if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
        raise LayerError(f"pad {pad} must be smaller than the kernel {kernel}")
    module = CaffePool2d(method, kernel, stride, pad, ceil)
    sizes = [pooled_size(n, k, s, q, ceil) for n, k, s, q in zip((height, width), kernel, stride, pad)]
    return Plan([(channels, *sizes)], build=lambda tensors: [(layer.name, module)])


def _torch7_geometry(layer: Any) -> dict[str, Any]:
    # Torch's ceil mode (an output window may start in the last partial stride, but not in the
    # padding) is PyTorch's ceil_mode rule.
    return dict(
        kernel_size=(layer.int("kH"), layer.int("kW")),
        stride=(layer.int("dH", 1), layer.int("dW", 1)),
        padding=(layer.int("padH", 0), layer.int("padW", 0)),
        ceil_mode=layer.flag("ceil_mode", False),
    )


@register("torch7", "nn.SpatialMaxPooling", "cudnn.SpatialMaxPooling")
def torch7_max_pooling(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    return torch7_plan(layer, nn.MaxPool2d(**_torch7_geometry(layer)))


@register("torch7", "nn.SpatialAveragePooling", "cudnn.SpatialAveragePooling")
def torch7_average_pooling(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    geometry = _torch7_geometry(layer)
    return torch7_plan(layer, nn.AvgPool2d(**geometry, count_include_pad=layer.flag("count_include_pad", True)))


@shape_rule(CaffePool2d)
def caffe_pool_shape(pool: CaffePool2d, in_shapes: list[Shape]) -> list[Shape] | None:
    shape = one_image(in_shapes)
    if shape is None:
        return None
    channels, height, width = shape
    out = pool.output_size(height, width)
    if min(out) < 1:
        # (global pooling, kernel None, never fails; the kernel's extent always fits)
        assert pool.kernel is not None
        # (smallest() calls the lambda at once, within its loop step)
        least = [smallest(lambda n: pooled_size(n, k, s, p, pool.ceil) >= 1, k)  # noqa: B023
                 for k, s, p in zip(pool.kernel, pool.stride, pool.pad)]
        raise LayerError(f"needs at least a {least[0]}x{least[1]} input")
    return [(channels, *out)]


def _two(value: Any) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _torch_pooled(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """PyTorch's pooling_output_shape."""
    out = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


@shape_rule(nn.MaxPool2d, nn.AvgPool2d)
def torch_pool_shape(pool: nn.MaxPool2d | nn.AvgPool2d, in_shapes: list[Shape]) -> list[Shape] | None:
    shape = one_image(in_shapes)
    if shape is None:
        return None
    channels, height, width = shape
    kernel, stride = _two(pool.kernel_size), _two(pool.stride or pool.kernel_size)
    pad, dilation = _two(pool.padding), _two(getattr(pool, "dilation", 1))
    if any(p > (d * (k - 1) + 1) // 2 for k, p, d in zip(kernel, pad, dilation)):
        return None  # torch refuses this geometry whatever the input: not a question of its size
    sizes = [_torch_pooled(n, k, s, p, d, pool.ceil_mode)
             for n, k, s, p, d in zip((height, width), kernel, stride, pad, dilation)]
    if min(sizes) < 1:
        # (the dilated kernel's extent always fits)
        # (smallest() calls the lambda at once, within its loop step)
        least = [smallest(lambda n: _torch_pooled(n, k, s, p, d, pool.ceil_mode) >= 1,  # noqa: B023
                          d * (k - 1) + 1)
                 for k, s, p, d in zip(kernel, stride, pad, dilation)]
        raise LayerError(f"needs at least a {least[0]}x{least[1]} input")
    return [(channels, *sizes)]
