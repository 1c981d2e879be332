"""Layers that join or split blobs: Caffe's Concat, Eltwise and Slice (Split, which only aliases its
bottom, is in :mod:`.structure`)."""
from __future__ import annotations

from typing import Any

from ..modules import Concat, Eltwise, Narrow
from ..registry import LayerError, Plan, Shape, register, shape_rule
from .common import canonical_axis, known


@register("caffe", "Concat")
def caffe_concat(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    p = layer.param("concat_param")
    if p.has("axis") and p.has("concat_dim"):
        raise LayerError("give either axis or concat_dim, not both")  # as Caffe's ConcatLayer checks
    if not in_shapes or len(layer.tops) != 1:
        raise LayerError(f"needs at least one bottom and one top, has {len(in_shapes)} and {len(layer.tops)}")
    axis = p.get("concat_dim") if p.has("concat_dim") else p.get("axis")
    shapes = known(in_shapes)
    axis = canonical_axis(axis, len(shapes[0]) + 1, "axis")
    out = _concat_shape(axis, shapes)
    return Plan([out], build=lambda tensors: [(layer.name, Concat(axis))])


def _concat_shape(axis: int, in_shapes: list[Shape]) -> Shape:
    first = in_shapes[0]
    for shape in in_shapes[1:]:
        if len(shape) != len(first) or any(
                a is not None and b is not None and a != b for i, (a, b) in enumerate(zip(shape, first)) if i != axis - 1):
            raise LayerError(f"bottoms of shapes {', '.join(_show(s) for s in in_shapes)} "
                             f"differ outside the concatenation axis {axis}")
    sizes = [s[axis - 1] for s in in_shapes]
    total = sum(n for n in sizes if n is not None) if None not in sizes else None
    return (*first[: axis - 1], total, *first[axis:])


def _show(shape: Shape) -> str:
    return "x".join("?" if n is None else str(n) for n in shape)


@register("caffe", "Eltwise")
def caffe_eltwise(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    p = layer.param("eltwise_param")
    operation = layer.enum("eltwise_param", "operation")
    if operation is None:
        raise LayerError(f"unknown operation {p.get('operation')}")
    if len(in_shapes) < 2 or len(layer.tops) != 1:
        raise LayerError(f"needs at least two bottoms and one top, has {len(in_shapes)} and {len(layer.tops)}")
    coeff = tuple(p.all("coeff"))
    if coeff and (operation != "SUM" or len(coeff) != len(in_shapes)):
        raise LayerError(f"coeff needs the SUM operation and one value per bottom ({len(in_shapes)}), "
                         f"has {len(coeff)} for {operation}")
    shapes = known(in_shapes)
    _same_shapes(shapes)
    module = Eltwise(operation, coeff or (1.0,) * len(in_shapes))
    return Plan([shapes[0]], build=lambda tensors: [(layer.name, module)])


def _same_shapes(in_shapes: list[Shape]) -> None:
    first = in_shapes[0]
    for shape in in_shapes[1:]:
        if len(shape) != len(first) or any(a is not None and b is not None and a != b for a, b in zip(shape, first)):
            raise LayerError(f"bottoms have different shapes: {', '.join(_show(s) for s in in_shapes)}")


@register("caffe", "Slice")
def caffe_slice(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    p = layer.param("slice_param")
    if p.has("axis") and p.has("slice_dim"):
        raise LayerError("give either axis or slice_dim, not both")
    if len(in_shapes) != 1 or not layer.tops:
        raise LayerError(f"needs one bottom and at least one top, has {len(in_shapes)} and {len(layer.tops)}")
    shape = known(in_shapes)[0]
    axis = canonical_axis(p.get("slice_dim") if p.has("slice_dim") else p.get("axis"), len(shape) + 1, "axis")
    extent, n = shape[axis - 1], len(layer.tops)
    if extent is None:
        raise LayerError(f"the size of axis {axis} must be known")
    points = list(p.all("slice_point"))
    if points:
        if len(points) != n - 1 or points != sorted(set(points)) or points[0] <= 0 or points[-1] >= extent:
            raise LayerError(f"slice_point {points} must be {n - 1} increasing points inside 1..{extent - 1}")
    else:
        if extent % n:
            raise LayerError(f"axis {axis} of size {extent} does not split into {n} equal parts")
        points = [extent // n * i for i in range(1, n)]
    bounds = [0, *points, extent]
    sizes = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    outs: list[Shape | None] = [(*shape[: axis - 1], size, *shape[axis:]) for size in sizes]
    # one module per top, each reading the bottom
    return Plan(outs, build=lambda tensors: [(layer.name, Narrow(axis, a, b - a)) for a, b in zip(bounds, bounds[1:])],
                per_top=True)


@shape_rule(Concat)
def concat_shape(module: Concat, in_shapes: list[Shape]) -> list[Shape] | None:
    if not in_shapes or not 1 <= module.axis <= len(in_shapes[0]):
        return None
    return [_concat_shape(module.axis, in_shapes)]


@shape_rule(Eltwise)
def eltwise_shape(module: Eltwise, in_shapes: list[Shape]) -> list[Shape] | None:
    if not in_shapes:
        return None
    _same_shapes(in_shapes)
    return [in_shapes[0]]


@shape_rule(Narrow)
def narrow_shape(module: Narrow, in_shapes: list[Shape]) -> list[Shape] | None:
    if len(in_shapes) != 1 or not 1 <= module.axis <= len(in_shapes[0]):
        return None
    shape = in_shapes[0]
    extent = shape[module.axis - 1]
    if extent is None:
        return None
    if extent < module.start + module.length:
        raise LayerError(f"needs at least {module.start + module.length} along axis {module.axis}")
    return [(*shape[: module.axis - 1], module.length, *shape[module.axis:])]
