"""Dropout: the identity at evaluation (Caffe's, Torch7's "v2"), or a scaling (Torch7's older kind)."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..modules import Scale
from ..registry import LayerError, Plan, Shape, register, same_shape, shape_rule
from .common import caffe_same, torch7_plan


def _caffe_dropout(layer: Any) -> nn.Module:
    ratio = layer.param("dropout_param").get("dropout_ratio")
    if not 0 <= ratio <= 1:  # NaN included; Caffe refuses these too (dropout_layer.cpp)
        raise LayerError(f"dropout_ratio must be between 0 and 1, is {ratio}")
    # The identity in eval mode (PyTorch scales at training time, as Torch's default did).
    return nn.Dropout(ratio)


register("caffe", "Dropout")(caffe_same(_caffe_dropout))


@register("torch7", "nn.Dropout")
def torch7_dropout(layer: Any, in_shapes: list[Shape | None]) -> Plan:
    p = layer.number("p", 0.5)
    if not 0 <= p <= 1:  # NaN included
        raise LayerError(f"dropout probability p must be between 0 and 1, is {p}")
    # "v2" dropout (Torch's default since 2015) scales while training: identity at evaluation.
    return torch7_plan(layer, nn.Dropout(p) if layer.flag("v2", False) else Scale(1 - p))


shape_rule(nn.Dropout, Scale)(same_shape)
