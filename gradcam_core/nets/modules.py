"""Modules that PyTorch lacks, shared by the formats: Caffe's pooling and within-channel LRN, Torch7's
``nn.View``, ``nn.Normalize`` and old-style Dropout. Shapes are (N, ...) with the batch axis first."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class View(nn.Module):
    """``nn.View(size...)``, with ``setNumInputDims(k)``: (N, ...) -> (N, *size) for one batch axis.

    The last ``k`` input dimensions are viewed as ``size`` (one entry may be -1); the others stay batch
    dimensions. Without ``k`` the Lua input was unbatched, so only our batch axis stays in front.
    """

    def __init__(self, size: tuple[int, ...], num_input_dims: Optional[int]) -> None:
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

    def __init__(self, size: int, alpha: float, beta: float) -> None:
        super().__init__()
        self.size, self.alpha, self.beta = size, alpha, beta

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = F.avg_pool2d(x * x, self.size, 1, (self.size - 1) // 2, count_include_pad=True)
        return x * (1 + self.alpha * mean) ** -self.beta
