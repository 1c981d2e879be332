"""ONE registry of layer builders for every file format, and of the shape rules of the modules they make.

Builders. ``@register("caffe", "Convolution")`` or ``@register("torch7", "nn.ReLU", "cudnn.ReLU")``
files a function under (format, layer type). Every builder has the same signature::

    builder(layer, in_shapes) -> Plan

``layer`` is the format's accessor for one layer of the file: every accessor has ``.name`` (the layer's
name, which the built modules take) and ``.type``; the rest is the format's own field access
(:class:`~gradcam_core.formats.caffe.build.CaffeLayer`: ``param(...)``, ``enum(...)``, ``tops``,
...; :class:`~gradcam_core.formats.torch7.modules.T7Layer`: ``int(...)``, ``number(...)``, ``array(...)``,
...). ``in_shapes`` holds the shape of each bottom (see :data:`Shape`). A builder that finds the
layer unusable raises :class:`LayerError` saying what is wrong; the format adds where the layer is
(file, name, module number) and its type: ``"<where> (<type>): <what>"``.

:func:`lookup` finds a builder, or raises :class:`GradCamError` naming the layer, its type and the
types the format supports. Importing :mod:`gradcam_core.nets.layers` (one file per layer family)
registers every builder; :func:`lookup` and :func:`types` import it themselves.

Shape rules. ``@shape_rule(nn.Conv2d)`` files ``rule(module, in_shapes) -> out_shapes`` for modules of
exactly that class: pure arithmetic on the module's attributes, no tensors, used by
:meth:`GraphNet.check_input_size <gradcam_core.nets.graph.GraphNet.check_input_size>`. A rule raises
:class:`LayerError` with the requirement the input breaks (``"needs 25088 inputs"``) only where the
module's forward would certainly fail; where it cannot tell, it returns None (shape unknown) and the
check stops following that blob.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import GradCamError

#: A blob's shape without the batch axis: (C, H, W) for images, (K,) after a fully connected layer.
#: None marks a size not known before the first forward (a Caffe input from a Data layer).
Shape = tuple[int | None, ...]
#: The (name, module) pairs a layer becomes, run one after the other.
Modules = list[tuple[str, nn.Module]]


class LayerError(GradCamError):
    """What is wrong with one layer (a field, its input), without where the layer is: the format
    wraps it as ``"<where> (<type>): <what>"``."""


@dataclass
class Plan:
    """What one layer becomes.

    ``out_shapes``: one per top (None entries where not known). ``blob_shapes``: the shapes of the
    parameter blobs the format must supply, in order (None = any size); Caffe checks the caffemodel's
    blobs against them, Torch7 modules carry their weights and declare none. ``build(tensors)``
    receives those blobs and returns the (name, module) pairs to run in order - none for layers
    that only declare inputs (no bottoms) or pass their bottom through (Split). Normally the first
    module reads the bottoms and the last one writes the tops; with ``per_top`` there is one module
    per top, each reading the bottoms and writing its top (Caffe's Slice).
    """

    out_shapes: list[Shape | None]
    blob_shapes: list[tuple[int | None, ...]] = field(default_factory=list)
    build: Callable[[list[torch.Tensor]], Modules] = lambda tensors: []
    per_top: bool = False


Builder = Callable[[Any, list[Shape | None]], Plan]
ShapeRule = Callable[[Any, list[Shape]], list[Shape] | None]

_BUILDERS: dict[str, dict[str, Builder]] = {}
_SHAPE_RULES: dict[type, ShapeRule] = {}


def register(fmt: str, *layer_types: str) -> Callable[[Builder], Builder]:
    """Decorator: file the builder under each of ``layer_types`` of format ``fmt``."""

    def add(builder: Builder) -> Builder:
        table = _BUILDERS.setdefault(fmt, {})
        for layer_type in layer_types:
            if layer_type in table:
                raise ValueError(f"{fmt} layer type {layer_type!r} is registered twice")
            table[layer_type] = builder
        return builder

    return add


def lookup(fmt: str, layer_type: str, what: str) -> Builder:
    """The builder for ``layer_type`` of format ``fmt``. Unknown types raise
    ``GradCamError("<what>, which is not supported (supported: <the format's types>)")``, where
    ``what`` names the layer and its type as the format's users know them (e.g. ``"layer 'fc'
    has type 'Concat'"``, ``"protos.cnn module 3 is a nn.SpatialBatchNormalization"``)."""
    builder = _table(fmt).get(layer_type)
    if builder is None:
        raise GradCamError(f"{what}, which is not supported (supported: {', '.join(types(fmt))})")
    return builder


def types(fmt: str) -> list[str]:
    """The layer types format ``fmt`` supports, sorted."""
    return sorted(_table(fmt))


def _table(fmt: str) -> dict[str, Builder]:
    # The builders register themselves when gradcam_core.nets is imported (nets/__init__.py imports
    # nets.layers): the registry itself imports no builder, so the two never import each other.
    return _BUILDERS.get(fmt, {})


# --------------------------------------------------------------------------------------------------
# Shape rules


def shape_rule(*classes: type) -> Callable[[ShapeRule], ShapeRule]:
    """Decorator: file ``rule(module, in_shapes) -> out_shapes | None`` for modules of exactly these classes."""

    def add(rule: ShapeRule) -> ShapeRule:
        for cls in classes:
            _SHAPE_RULES[cls] = rule
        return rule

    return add


def same_shape(module: nn.Module, in_shapes: list[Shape]) -> list[Shape] | None:
    """The rule of elementwise modules: one input, an output of its shape."""
    return list(in_shapes) if len(in_shapes) == 1 else None


def output_shapes(module: nn.Module, in_shapes: list[Shape]) -> list[Shape] | None:
    """``module``'s output shapes for inputs of ``in_shapes`` (concrete sizes, batch axis excluded), or
    None if no rule knows them. Raises :class:`LayerError` if the module cannot take those inputs.
    (The rules are registered by importing :mod:`gradcam_core.nets.layers`, which :mod:`.graph` does.)"""
    rule = _SHAPE_RULES.get(type(module))
    return None if rule is None else rule(module, in_shapes)


def show_shape(shape: Sequence[int | None]) -> str:
    """(512, 7, 7) -> "512x7x7"; (4096,) -> "4096"; unknown sizes as "?"."""
    return "x".join("?" if n is None else str(n) for n in shape) or "a scalar"


def count(shape: Sequence[int | None]) -> int | None:
    """Number of values of a shape, None if a size is unknown."""
    return None if None in shape else math.prod(shape)  # type: ignore[arg-type]
