"""Softmax: Caffe's Softmax (over its axis), Torch7's SoftMax and LogSoftMax."""
from __future__ import annotations

from torch import nn

from ..registry import Shape, register, same_shape, shape_rule
from .common import caffe_same, torch7_fixed

# Kept for V2 nets too (loadcaffe's V2 converter stopped at Softmax and dropped it and all later
# layers, so `cnn:remove()` then removed fc8 instead of the Softmax).
register("caffe", "Softmax")(caffe_same(lambda layer: nn.Softmax(dim=layer.param("softmax_param").get("axis"))))

# SoftMax/LogSoftMax act over dim 1: the classes of (N, K) or the channels of (N, C, H, W), as
# Torch's did over the unbatched (K,) or (C, H, W).
register("torch7", "nn.SoftMax", "cudnn.SoftMax")(torch7_fixed(lambda: nn.Softmax(dim=1)))
register("torch7", "nn.LogSoftMax", "cudnn.LogSoftMax")(torch7_fixed(lambda: nn.LogSoftmax(dim=1)))


@shape_rule(nn.Softmax, nn.LogSoftmax)
def softmax_shape(softmax: nn.Module, in_shapes: list[Shape]) -> list[Shape] | None:
    rank = len(in_shapes[0]) + 1 if len(in_shapes) == 1 else 0
    dim = softmax.dim
    return same_shape(softmax, in_shapes) if isinstance(dim, int) and -rank <= dim < rank else None
