"""Modules that PyTorch lacks, shared by the formats: Caffe's pooling and within-channel LRN, Torch7's
``nn.View``, ``nn.Normalize`` and old-style Dropout. Shapes are (N, ...) with the batch axis first.

Each says ``calls_activation_functions = False``: its forward calls no activation function (``F.relu``,
...), so guided backprop need not watch the torch calls of a net built from them (:mod:`gradcam_core
.engine.guided`). A module whose forward calls one must not say so.
"""
from __future__ import annotations

import math
from typing import overload

import torch
import torch.nn.functional as F
from torch import nn


class View(nn.Module):
    """``nn.View(size...)``, with ``setNumInputDims(k)``: (N, ...) -> (N, *size) for one batch axis.

    The last ``k`` input dimensions are viewed as ``size`` (one entry may be -1); the others stay batch
    dimensions. Without ``k`` the Lua input was unbatched, so only our batch axis stays in front.
    """

    calls_activation_functions = False

    def __init__(self, size: tuple[int, ...], num_input_dims: int | None) -> None:
        super().__init__()
        self.size, self.num_input_dims = size, num_input_dims

    def extra_repr(self) -> str:
        return f"size={self.size}, num_input_dims={self.num_input_dims}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = 1 if self.num_input_dims is None else max(x.dim() - self.num_input_dims, 1)
        return x.reshape(*x.shape[:lead], *self.size)


class Normalize(nn.Module):
    """``nn.Normalize(p, eps)``: each sample divided by ``(sum |x|^p + eps)^(1/p)`` (eps inside the root,
    as Torch computes it), or by ``max |x| + eps`` for p = inf. (N, ...) -> same shape."""

    calls_activation_functions = False

    def __init__(self, p: float, eps: float) -> None:
        super().__init__()
        self.p, self.eps = p, eps

    def extra_repr(self) -> str:
        return f"p={self.p}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        if self.p == float("inf"):
            norm = flat.abs().amax(dim=1, keepdim=True) + self.eps
        else:
            total = flat.abs().pow(self.p).sum(dim=1, keepdim=True) + self.eps
            # p = 2: sqrt (same forward as pow(1/2); its gradient differs in the last bits, and the
            # VQA oracle maps were matched with it)
            norm = total.sqrt() if self.p == 2 else total.pow(1 / self.p)
        return (flat / norm).reshape(x.shape)


class Scale(nn.Module):
    """Multiplies by a constant: an old (pre-"v2") ``nn.Dropout`` at evaluation time, which scaled its
    input by 1 - p instead of scaling during training."""

    calls_activation_functions = False

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class CaffePool2d(nn.Module):
    """Caffe's MAX/AVE pooling (pooling_layer.cpp): (N, C, H, W) -> (N, C, H', W').

    Caffe sizes the output so that no input row is left out: H' = ceil((H + 2p - k) / s) + 1 (floor
    with round_mode FLOOR), minus one when padding is used and the last window would start in the
    bottom padding. MAX ignores padding; AVE divides each window's sum by the window's area clipped to
    the padded image [-p, H + p), so padded border cells count but the ceil-mode overhang does not.
    PyTorch's pooling (ceil_mode, count_include_pad) gives the same sizes and values wherever it
    accepts the parameters, but it refuses p > k/2, which Caffe allows (p < k). So Caffe's rule is
    implemented here: pad explicitly until every window lies inside, then pool without padding.
    ``kernel`` None means global pooling (the whole H x W).
    """

    calls_activation_functions = False

    def __init__(self, method: str, kernel: tuple[int, int] | None, stride: tuple[int, int],
                 pad: tuple[int, int], ceil: bool) -> None:
        super().__init__()
        self.method, self.kernel, self.stride, self.pad, self.ceil = method, kernel, stride, pad, ceil

    def extra_repr(self) -> str:
        kernel = self.kernel or "global"
        return f"{self.method}, kernel={kernel}, stride={self.stride}, pad={self.pad}, ceil={self.ceil}"

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') for an H x W input."""
        kernel = self.kernel or (height, width)
        return tuple(  # type: ignore[return-value]
            pooled_size(n, k, s, p, self.ceil) for n, k, s, p in zip((height, width), kernel, self.stride, self.pad)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        exporting = torch.onnx.is_in_onnx_export()
        if exporting:
            # An exported graph has a fixed H x W (only the batch axis is dynamic): make the sizes
            # constants, or the tracer records the ceil arithmetic below as integer ONNX ops (whose
            # division truncates: wrong sizes) and the global kernel as a shape it cannot export.
            height, width = int(height), int(width)
        kernel = self.kernel or (height, width)
        (sh, sw), (ph, pw) = self.stride, self.pad
        out_h, out_w = self.output_size(height, width)
        # Pad bottom/right only as far as the last window reaches.
        extra_h = max(0, (out_h - 1) * sh + kernel[0] - height - ph)
        extra_w = max(0, (out_w - 1) * sw + kernel[1] - width - pw)
        padding = (pw, extra_w, ph, extra_h)
        if self.method == "MAX":
            if any(padding):
                x = F.pad(x, padding, value=-math.inf)
            return F.max_pool2d(x, kernel, self.stride)
        if exporting:
            # ONNX's AveragePool has no divisor_override: rescale its mean by kernel area / divisor.
            rows = self._extent(out_h, sh, ph, kernel[0], height, x.device)
            cols = self._extent(out_w, sw, pw, kernel[1], width, x.device)
            factor = (kernel[0] * kernel[1]) / (rows[:, None] * cols[None, :]).double()
            return F.avg_pool2d(F.pad(x, padding) if any(padding) else x, kernel, self.stride) * factor.to(x.dtype)
        sums = F.avg_pool2d(F.pad(x, padding) if any(padding) else x, kernel, self.stride, divisor_override=1)
        rows = self._extent(out_h, sh, ph, kernel[0], height, x.device)
        cols = self._extent(out_w, sw, pw, kernel[1], width, x.device)
        return sums / (rows[:, None] * cols[None, :]).to(x.dtype)

    @staticmethod
    def _extent(n_out: int, stride: int, pad: int, kernel: int, size: int, device: torch.device) -> torch.Tensor:
        """Per output row: the window's extent clipped to the padded image (Caffe's AVE divisor)."""
        start = torch.arange(n_out, device=device) * stride - pad
        return torch.clamp(start + kernel, max=size + pad) - start


@overload
def pooled_size(n: int, k: int, s: int, p: int, ceil: bool) -> int: ...
@overload
def pooled_size(n: None, k: int, s: int, p: int, ceil: bool) -> None: ...
def pooled_size(n: int | None, k: int, s: int, p: int, ceil: bool) -> int | None:
    """Caffe's pooled extent of n (None: unknown) for kernel k, stride s, pad p."""
    if n is None:
        return None
    out = (-(-(n + 2 * p - k) // s) if ceil else (n + 2 * p - k) // s) + 1
    if p and (out - 1) * s >= n + p:
        out -= 1
    return out


class WithinChannelLRN(nn.Module):
    """Caffe's LRN with norm_region WITHIN_CHANNEL (lrn_layer.cpp): (N, C, H, W) -> same shape,
    y = x * (1 + alpha * mean(x^2 over the size x size window))^-beta, the mean over a zero-padded
    window (Caffe's AVE pooling with pad (size-1)/2, whose divisor is always size^2 here). ``k`` is
    not used by Caffe in this mode."""

    calls_activation_functions = False

    def __init__(self, size: int, alpha: float, beta: float) -> None:
        super().__init__()
        self.size, self.alpha, self.beta = size, alpha, beta

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = F.avg_pool2d(x * x, self.size, 1, (self.size - 1) // 2, count_include_pad=True)
        return x * (1 + self.alpha * mean) ** -self.beta


# --------------------------------------------------------------------------------------------------
# Caffe's DAG and normalisation layers. Axes count the batch axis (Caffe's numbering: 1 = channels).


class Concat(nn.Module):
    """Caffe's Concat (concat_layer.cpp): k tensors (N, ...) joined along ``axis`` (>= 1)."""

    calls_activation_functions = False

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def extra_repr(self) -> str:
        return f"axis={self.axis}"

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)


class Eltwise(nn.Module):
    """Caffe's Eltwise (eltwise_layer.cpp): k tensors of one shape -> their SUM (each times its
    ``coeff``), PROD or MAX. The result is always a new tensor (never one of the inputs)."""

    calls_activation_functions = False

    def __init__(self, operation: str, coeff: tuple[float, ...]) -> None:
        super().__init__()
        self.operation, self.coeff = operation, coeff

    def extra_repr(self) -> str:
        return f"{self.operation}" + (f", coeff={self.coeff}" if self.operation == "SUM" else "")

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "SUM":
            out = xs[0] * self.coeff[0] if self.coeff[0] != 1 else xs[0].clone()
            for c, x in zip(self.coeff[1:], xs[1:]):
                out = out + x if c == 1 else out + c * x
            return out
        if self.operation == "PROD":
            out = xs[0] * xs[1] if len(xs) > 1 else xs[0].clone()
            for x in xs[2:]:
                out = out * x
            return out
        out = torch.maximum(xs[0], xs[1]) if len(xs) > 1 else xs[0].clone()
        for x in xs[2:]:
            out = torch.maximum(out, x)
        return out


class Narrow(nn.Module):
    """One top of Caffe's Slice (slice_layer.cpp): (N, ...) -> the ``length`` entries from ``start`` along
    ``axis`` (>= 1). A Slice of k tops is k of these, so each top is a module of its own (a Grad-CAM layer)."""

    calls_activation_functions = False

    def __init__(self, axis: int, start: int, length: int) -> None:
        super().__init__()
        self.axis, self.start, self.length = axis, start, length

    def extra_repr(self) -> str:
        return f"axis={self.axis}, start={self.start}, length={self.length}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.narrow(self.axis, self.start, self.length)


def _along(v: torch.Tensor, axis: int, rank: int) -> torch.Tensor:
    """``v`` (shape of axes axis..axis+v.dim()) viewed to broadcast against a ``rank``-axis tensor."""
    return v.reshape((1,) * axis + tuple(v.shape) + (1,) * (rank - axis - v.dim()))


class AxisAffine(nn.Module):
    """Caffe's Scale and Bias with their parameters as blobs (scale_layer.cpp, bias_layer.cpp):
    y = x * weight + bias, ``weight``/``bias`` of the shape of x's axes ``axis``..``axis + k`` (k = their
    number of axes), broadcast over the others. Either may be None. (N, ...) -> same shape.

    Caffe's BatchNorm at inference is this too: weight = 1 / sqrt(var + eps), bias = -mean * weight.
    """

    calls_activation_functions = False

    def __init__(self, weight: torch.Tensor | None, bias: torch.Tensor | None, axis: int) -> None:
        super().__init__()
        self.axis = axis
        self.weight = None if weight is None else nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)

    def extra_repr(self) -> str:
        given = self.weight if self.weight is not None else self.bias
        shape = () if given is None else given.shape
        return f"axis={self.axis}, shape={tuple(shape)}, weight={self.weight is not None}, bias={self.bias is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x * _along(self.weight, self.axis, x.dim()) if self.weight is not None else x
        return out + _along(self.bias, self.axis, x.dim()) if self.bias is not None else out


class CaffeBatchNorm(nn.Module):
    """Caffe's BatchNorm with stored statistics (batch_norm_layer.cpp, use_global_stats):
    y = (x - mean) / sqrt(var + eps) per channel (axis 1). (N, C, ...) -> same shape. ``mean``/``var``
    are the blobs already divided by the scale factor."""

    calls_activation_functions = False

    mean: torch.Tensor  # buffers
    var: torch.Tensor

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", mean)
        self.register_buffer("var", var)

    def extra_repr(self) -> str:
        return f"{self.mean.numel()}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank = x.dim()
        return (x - _along(self.mean, 1, rank)) / _along(torch.sqrt(self.var + self.eps), 1, rank)


class ScaleBy(nn.Module):
    """Caffe's Scale (``multiply``) and Bias with the factor as a second bottom of axis 0: y = x * s or
    y = x + s, s (N, d1, ..., dk) matching x's leading axes, broadcast over the others.
    (N, ...), (N, ...) -> (N, ...)."""

    calls_activation_functions = False

    def __init__(self, multiply: bool) -> None:
        super().__init__()
        self.multiply = multiply

    def extra_repr(self) -> str:
        return "multiply" if self.multiply else "add"

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        s = s.reshape(*s.shape, *(1,) * (x.dim() - s.dim()))
        return x * s if self.multiply else x + s


class Power(nn.Module):
    """Caffe's Power (power_layer.cpp): y = (shift + scale * x) ^ power. (N, ...) -> same shape."""

    calls_activation_functions = False

    def __init__(self, power: float, scale: float, shift: float) -> None:
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def extra_repr(self) -> str:
        return f"power={self.power}, scale={self.scale}, shift={self.shift}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.scale + self.shift if self.scale != 1 or self.shift != 0 else x
        return y.pow(self.power) if self.power != 1 else (y if y is not x else x.clone())


class AbsVal(nn.Module):
    """Caffe's AbsVal: y = |x|. (N, ...) -> same shape."""

    calls_activation_functions = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


class BNLL(nn.Module):
    """Caffe's BNLL (bnll_layer.cpp): y = log(1 + exp(x)), computed as Caffe does without overflow:
    x + log(1 + exp(-x)) for x > 0. (N, ...) -> same shape. An activation guided backprop has no
    rule for (``unguided_activation``: it is reported)."""

    calls_activation_functions = False
    unguided_activation = "Caffe BNLL"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(x, 0) + torch.log1p(torch.exp(-x.abs()))


class CaffeReshape(nn.Module):
    """Caffe's Reshape with the batch axis kept: (N, ...) -> (N, *shape)."""

    calls_activation_functions = False

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class Crop(nn.Module):
    """Caffe's Crop (crop_layer.cpp): x cut, from axis ``axis`` on, to the reference's sizes starting at
    ``offsets`` (one per cropped axis). (N, ...), reference (N, ...) -> (N, ...) of x's leading and the
    reference's trailing sizes."""

    calls_activation_functions = False

    def __init__(self, axis: int, offsets: tuple[int, ...]) -> None:
        super().__init__()
        self.axis, self.offsets = axis, offsets

    def extra_repr(self) -> str:
        return f"axis={self.axis}, offsets={self.offsets}"

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        for i, off in enumerate(self.offsets):
            axis = self.axis + i
            x = x.narrow(axis, off, reference.shape[axis])
        return x
