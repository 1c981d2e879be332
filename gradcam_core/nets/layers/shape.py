"""Layers that reshape or cut a blob without computing: Caffe's Reshape and Crop (Flatten is with
InnerProduct in :mod:`.linear`)."""
from __future__ import annotations

import math
from typing import Any

from ..modules import CaffeReshape, Crop
from ..registry import LayerError, Plan, Shape, count, register, shape_rule, show_shape
from .common import canonical_axis, known, single


@register("caffe", "Reshape")
def caffe_reshape(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    # reshape_layer.cpp: axes axis..axis+num_axes (-1: to the end) of the bottom are replaced by
    # `shape.dim`, where 0 copies the bottom's size at that place and one -1 is inferred.
    shape = single(layer, in_shapes)
    p = layer.param("reshape_param")
    dims = list(p.get("shape").all("dim"))
    full = (None, *shape)  # the batch axis first, as Caffe counts axes
    rank = len(full)
    axis, num_axes = p.get("axis"), p.get("num_axes")
    start = axis if axis >= 0 else rank + axis + 1
    if not 0 <= start <= rank:
        raise LayerError(f"axis {axis} is out of range for a {rank}-axis input")
    if num_axes < -1 or (num_axes >= 0 and start + num_axes > rank):
        raise LayerError(f"num_axes {num_axes} from axis {start} does not fit a {rank}-axis input")
    end = rank if num_axes == -1 else start + num_axes
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise LayerError(f"shape {dims} may have one -1 and no other negative size")
    new: list[int | None] = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= end:
                raise LayerError(f"dim {i} is 0 (copy) but the bottom has no axis {start + i} to copy")
            new.append(full[start + i])
        else:
            new.append(d)
    out = [*full[:start], *new, *full[end:]]
    if start == 0:
        # the batch axis must stay the batch axis: copied, or inferred from per-sample sizes that match
        if dims and dims[0] == -1 and None not in out[1:] and count(out[1:]) == count(shape):
            out[0] = None
        elif not dims or dims[0] != 0:
            raise LayerError(f"shape {dims} from axis 0 must keep the batch axis (give dim 0 first)")
    sample = out[1:]
    if -1 in sample:
        known = math.prod(d for d in sample if d is not None and d != -1)
        total = count(shape)
        if total is not None:
            if known == 0 or total % known:
                raise LayerError(f"cannot reshape {show_shape(shape)} to {dims}")
            sample[sample.index(-1)] = total // known
    elif None not in sample and count(shape) is not None and count(sample) != count(shape):
        raise LayerError(f"cannot reshape {show_shape(shape)} ({count(shape)} values) to {show_shape(sample)}")
    target = tuple(-1 if d is None or (d == -1) else d for d in sample)
    if target.count(-1) > 1:
        raise LayerError(f"the sizes of {show_shape(shape)} must be known to reshape it to {dims}")
    module = CaffeReshape(target)
    return Plan([tuple(None if d == -1 else d for d in sample)], build=lambda tensors: [(layer.name, module)])


@shape_rule(CaffeReshape)
def caffe_reshape_shape(module: CaffeReshape, in_shapes: list[Shape]) -> list[Shape] | None:
    if len(in_shapes) != 1 or None in in_shapes[0]:
        return None
    total = count(in_shapes[0])
    if total is None:
        return None
    known = math.prod(d for d in module.shape if d != -1)
    if -1 in module.shape:
        if known == 0 or total % known:
            raise LayerError(f"cannot reshape {total} values to {show_shape(module.shape)}")
        return [tuple(total // known if d == -1 else d for d in module.shape)]
    if known != total:
        raise LayerError(f"needs {known} values")
    return [module.shape]


@register("caffe", "Crop")
def caffe_crop(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    # crop_layer.cpp: every axis from `axis` on takes the second bottom's size, starting at the
    # offset (one for all axes, one per axis, or 0).
    if len(in_shapes) != 2 or len(layer.tops) != 1:
        raise LayerError(f"needs two bottoms and one top, has {len(in_shapes)} and {len(layer.tops)}")
    shape, reference = known(in_shapes)
    if len(shape) != len(reference):
        raise LayerError(f"the bottoms have different numbers of axes ({show_shape(shape)}, {show_shape(reference)})")
    rank = len(shape) + 1
    axis = canonical_axis(layer.param("crop_param").get("axis"), rank, "axis")
    offsets = list(layer.param("crop_param").all("offset"))
    n = rank - axis
    if len(offsets) not in (0, 1, n):
        raise LayerError(f"needs 0, 1 or {n} offsets, has {len(offsets)}")
    offsets = offsets * n if len(offsets) == 1 else (offsets or [0] * n)
    out = list(shape)
    for i, off in enumerate(offsets):
        a = axis + i - 1
        if shape[a] is not None and reference[a] is not None and off + reference[a] > shape[a]:
            raise LayerError(f"offset {off} + size {reference[a]} exceeds axis {axis + i} of size {shape[a]}")
        out[a] = reference[a]
    module = Crop(axis, tuple(offsets))
    return Plan([tuple(out)], build=lambda tensors: [(layer.name, module)])


@shape_rule(Crop)
def crop_shape(module: Crop, in_shapes: list[Shape]) -> list[Shape] | None:
    if len(in_shapes) != 2 or len(in_shapes[0]) != len(in_shapes[1]):
        return None
    shape, reference = in_shapes
    out = list(shape)
    for i, off in enumerate(module.offsets):
        a = module.axis + i - 1
        if a >= len(shape):
            return None
        size, wanted = shape[a], reference[a]
        if size is None or wanted is None:
            return None
        if off + wanted > size:
            raise LayerError(f"needs at least {off + wanted} along axis {module.axis + i}")
        out[a] = reference[a]
    return [tuple(out)]
