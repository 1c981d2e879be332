"""Helpers shared by the builders: Caffe's bottom/top checks, giving meta-device modules their weights,
and the single-image checks of the shape rules."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..registry import LayerError, Plan, Shape


def known(in_shapes: list[Shape | None]) -> list[Shape]:
    """The bottoms' shapes, every one known (Caffe always knows them; only Torch7 modules, which have
    no bottoms, get None)."""
    shapes = [s for s in in_shapes if s is not None]
    if len(shapes) != len(in_shapes):
        raise LayerError("needs the shapes of its bottoms")
    return shapes


def single(layer: Any, in_shapes: list[Shape | None]) -> Shape:
    """The one bottom's shape of a Caffe layer with one bottom and one top."""
    if len(in_shapes) != 1 or len(layer.tops) != 1:
        raise LayerError(f"needs one bottom and one top, has {len(in_shapes)} and {len(layer.tops)}")
    return known(in_shapes)[0]


def image(layer: Any, in_shapes: list[Shape | None]) -> Shape:
    """The (C, H, W) shape of a Caffe layer's one image bottom."""
    shape = single(layer, in_shapes)
    if len(shape) != 3:
        raise LayerError(f"needs a (N, C, H, W) input, gets {len(shape) + 1} axes")
    return shape


def positive(**values: tuple[int, ...] | int) -> None:
    for name, value in values.items():
        if min(value if isinstance(value, tuple) else (value,)) <= 0:
            raise LayerError(f"{name} must be positive, is {value}")


def attach(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """Give a meta-device module its loaded parameters (no copy)."""
    module.weight = nn.Parameter(weight)
    if bias is not None:
        module.bias = nn.Parameter(bias)
    return module


def caffe_same(make: Callable[[Any], nn.Module]) -> Callable[[Any, list[Shape | None]], Plan]:
    """A Caffe builder for a weightless layer whose output has its input's shape."""

    def build(layer: Any, in_shapes: list[Shape | None]) -> Plan:
        shape = single(layer, in_shapes)
        return Plan([shape], build=lambda tensors: [(layer.name, make(layer))])

    return build


def torch7_fixed(make: Callable[[], nn.Module]) -> Callable[[Any, list[Shape | None]], Plan]:
    """A Torch7 builder for a module without fields."""
    return lambda layer, in_shapes: Plan([None], build=lambda tensors: [(layer.name, make())])


def torch7_plan(layer: Any, module: nn.Module) -> Plan:
    """The plan of a Torch7 module: one module, named after the layer; shapes are left to the rules."""
    return Plan([None], build=lambda tensors: [(layer.name, module)])


def one_image(in_shapes: list[Shape]) -> tuple[int, int, int] | None:
    """The (C, H, W) of a shape rule's single image input, None if it is not one (shape unknown)."""
    if len(in_shapes) != 1 or len(in_shapes[0]) != 3:
        return None
    c, h, w = in_shapes[0]
    if c is None or h is None or w is None:
        return None
    return c, h, w


def smallest(fits: Callable[[int], bool], upto: int) -> int:
    """The smallest extent n in 1..upto for which ``fits(n)`` (``upto`` if none smaller does)."""
    return next((n for n in range(1, upto) if fits(n)), upto)


def canonical_axis(axis: int, rank: int, what: str) -> int:
    """Caffe's CanonicalAxisIndex for a ``rank``-axis blob (batch axis included), which must not be
    the batch axis (0): the nets here run any batch size."""
    if not -rank <= axis < rank:
        raise LayerError(f"{what} {axis} is out of range for a {rank}-axis input")
    axis %= rank
    if axis == 0:
        raise LayerError(f"{what} 0 (the batch axis) is not supported")
    return axis
