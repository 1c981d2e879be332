"""Fully connected layers and reshapes: Caffe's InnerProduct and Flatten, Torch7's Linear, View, Reshape."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..modules import View
from ..registry import LayerError, Modules, Plan, Shape, count, register, shape_rule
from .common import attach, positive, single, torch7_plan


@register("caffe", "InnerProduct")
def caffe_inner_product(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    shape = single(layer, in_shapes)
    p = layer.param("inner_product_param")
    n_out, bias, transpose = p.get("num_output"), p.get("bias_term"), p.get("transpose")
    positive(num_output=n_out)
    rank = len(shape) + 1
    axis = p.get("axis") + (rank if p.get("axis") < 0 else 0)
    if not 1 <= axis < rank:
        raise LayerError(f"axis {p.get('axis')} is out of range for a {rank}-axis input")
    fan_in = count(shape[axis - 1 :])

    def build(tensors: list[torch.Tensor]) -> Modules:
        # transpose: Caffe stores the weight as (in, out) instead of (out, in).
        weight = tensors[0].t().contiguous() if transpose else tensors[0]
        linear = nn.Linear(weight.shape[1], n_out, bias, device="meta")
        modules: Modules = [(layer.name, attach(linear, weight, tensors[1] if bias else None))]
        if rank > axis + 1:
            # Caffe's InnerProduct flattens every axis from `axis` on; loadcaffe did that with a
            # separate nn.View module named "torch_view" before the Linear, which shifts the module
            # numbering the Lua scripts (and their users) rely on - so it is a module here too.
            modules.insert(0, ("torch_view", nn.Flatten(axis)))
        return modules

    weight_shape = (fan_in, n_out) if transpose else (n_out, fan_in)
    blob_shapes: list[tuple[int | None, ...]] = [weight_shape] + ([(n_out,)] if bias else [])
    return Plan([(*shape[: axis - 1], n_out)], blob_shapes, build)


@register("caffe", "Flatten")
def caffe_flatten(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    shape = single(layer, in_shapes)
    p = layer.param("flatten_param")
    rank = len(shape) + 1
    start, end = (a + (rank if a < 0 else 0) for a in (p.get("axis"), p.get("end_axis")))
    if not 1 <= start <= end < rank:
        raise LayerError(f"axes {p.get('axis')}..{p.get('end_axis')} are out of range for a {rank}-axis input")
    out = (*shape[: start - 1], count(shape[start - 1 : end]), *shape[end:])
    return Plan([out], build=lambda tensors: [(layer.name, nn.Flatten(start, end))])


@register("torch7", "nn.Linear")
def torch7_linear(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    weight = layer.array("weight")
    if weight.ndim != 2:
        raise LayerError(f"weight has shape {weight.shape}, expected (outputs, inputs)")
    n_out, n_in = weight.shape
    bias = layer.array("bias", required=False)
    linear = nn.Linear(n_in, n_out, bias=bias is not None, device="meta")
    linear.weight = layer.parameter(weight, (n_out, n_in), "weight")
    if bias is not None:
        linear.bias = layer.parameter(bias, (n_out,), "bias")
    return torch7_plan(layer, linear)


@register("torch7", "nn.View")
def torch7_view(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    size = layer.sizes()
    return torch7_plan(layer, View(size, None if layer.get("numInputDims") is None else layer.int("numInputDims")))


@register("torch7", "nn.Reshape")
def torch7_reshape(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    # nn.Reshape treats a leading dimension beyond `size` as the batch: our batch axis.
    return torch7_plan(layer, View(layer.sizes(), None))


@shape_rule(nn.Linear)
def linear_shape(linear: nn.Linear, in_shapes: list[Shape]) -> list[Shape] | None:
    if len(in_shapes) != 1 or not in_shapes[0] or None in in_shapes[0]:
        return None
    shape = in_shapes[0]
    if shape[-1] != linear.in_features:
        raise LayerError(f"needs {linear.in_features} inputs")
    return [(*shape[:-1], linear.out_features)]


@shape_rule(nn.Flatten)
def flatten_shape(flatten: nn.Flatten, in_shapes: list[Shape]) -> list[Shape] | None:
    if len(in_shapes) != 1 or None in in_shapes[0]:
        return None
    full = (None, *in_shapes[0])  # the batch axis first, as the module sees it
    start, end = (d + (len(full) if d < 0 else 0) for d in (flatten.start_dim, flatten.end_dim))
    if not 1 <= start <= end < len(full):
        return None  # merges the batch axis or is out of range: left to torch
    return [(*full[1:start], count(full[start : end + 1]), *full[end + 1 :])]


@shape_rule(View)
def view_shape(view: View, in_shapes: list[Shape]) -> list[Shape] | None:
    if len(in_shapes) != 1 or None in in_shapes[0]:
        return None
    full = (None, *in_shapes[0])
    lead = 1 if view.num_input_dims is None else max(len(full) - view.num_input_dims, 1)
    kept, viewed = full[1:lead], count(full[lead:])
    if viewed is None:
        return None
    size = list(view.size)
    if size.count(-1) > 1 or any(n < -1 or n == 0 for n in size):
        return None
    known = math.prod(n for n in size if n != -1)
    if -1 in size:
        if viewed % known:
            raise LayerError(f"cannot view {viewed} values as {tuple(size)}")
        size[size.index(-1)] = viewed // known
    elif known != viewed:
        raise LayerError(f"needs {known} values to view as {tuple(size)}")
    return [(*kept, *size)]
