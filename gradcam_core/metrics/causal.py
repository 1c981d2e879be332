"""Deletion and insertion (Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of
Black-box Models", BMVC 2018, section 4.1).

Symbols: ``x`` the net input (C, H, W) with ``P = H * W`` pixels; ``m`` the map (H, W); ``y(.)`` the
target's score (the class's softmax probability, as in the paper); ``T`` the number of steps
(``steps``, 224 by default); ``k = ceil(P / T)`` pixels per step; ``r(i)`` the rank of pixel ``i``
in the order of ``m``, highest first (ties in raster order: a stable sort); ``S_t`` the pixels of
rank below ``min(t k, P)``, ``t = 0 .. T``.

* Deletion: ``x_t = x`` outside ``S_t``, the baseline ``b`` inside, ``b = 0`` (the net input's zero:
  the preprocessing's mean colour, as the paper's code zeroes the normalised input). A good map makes
  the score fall fast: lower is better.
* Insertion: ``x_t = x`` inside ``S_t``, a blurred copy of ``x`` outside (the paper's baseline: a
  Gaussian blur, kernel 11 x 11, sigma 5, zero padding, each channel alone). A good map makes the
  score rise fast: higher is better.
* The curve is ``c_t = y(x_t)``, ``t = 0 .. T``, plotted at ``t / T``; its area (the trapezoid rule
  over [0, 1]) is ``AUC = (sum_t c_t - (c_0 + c_T) / 2) / T``.

The ``T + 1`` images of a curve are made a chunk at a time and go through the model ``batch_size``
per forward.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .scoring import TargetSpec, as_score, images_scores, model_input

STEPS = 224
"""The paper's number of steps at 224 x 224 (224 pixels a step)."""

BLUR_SIZE, BLUR_SIGMA = 11, 5.0
"""The insertion baseline's Gaussian blur (the paper's code)."""


@dataclass
class Curves:
    """Deletion or insertion curves of N images.

    Attributes:
        fractions: (T + 1,) the share of pixels removed (deletion) or inserted (insertion), ``t / T``.
        scores: (N, T + 1) float64, the score after each step (``c_t``).
        auc: (N,) float64, the area under each curve.
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor


def auc(scores: torch.Tensor) -> torch.Tensor:
    """(..., T + 1) curves at equal steps over [0, 1] -> (...,) their trapezoid areas."""
    steps = scores.shape[-1] - 1
    if steps < 1:
        return scores[..., 0].double()
    s = scores.double()
    return (s.sum(dim=-1) - (s[..., 0] + s[..., -1]) / 2) / steps


def ranks(cam: torch.Tensor) -> torch.Tensor:
    """(H, W) map -> (H, W) long: each pixel's rank ``r(i)`` in the order of the map, highest first,
    ties in raster order."""
    flat = cam.detach().reshape(-1).cpu()
    order = torch.sort(flat, descending=True, stable=True).indices
    r = torch.empty_like(order)
    r[order] = torch.arange(order.numel())
    return r.reshape(cam.shape)


def gaussian_blur(images: torch.Tensor, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """(N, C, H, W) -> the same, each channel convolved with a normalised ``size`` x ``size`` Gaussian
    of standard deviation ``sigma`` (zero padding)."""
    half = size // 2
    g = torch.exp(-(torch.arange(size, dtype=torch.float64) - half) ** 2 / (2 * sigma ** 2))
    kernel = torch.outer(g, g)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    c = images.shape[1]
    weight = kernel.expand(c, 1, size, size).to(images.device)
    return torch.nn.functional.conv2d(images, weight, padding=half, groups=c)


def _curves(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Sequence[TargetSpec],
            steps: int, batch_size: int, *, insertion: bool) -> Curves:
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    x = model_input(model, images)
    n, _, h, w = x.shape
    pixels = h * w
    per_step = math.ceil(pixels / steps)
    counts = torch.clamp(torch.arange(steps + 1) * per_step, max=pixels).to(x.device)  # |S_t|
    other = gaussian_blur(x) if insertion else torch.zeros_like(x)
    scores = torch.empty((n, steps + 1), dtype=torch.float64)
    for i in range(n):
        r = ranks(maps[i]).to(x.device).reshape(1, 1, h, w)

        def make(start: int, stop: int, i: int = i, r: torch.Tensor = r) -> torch.Tensor:
            inside = r < counts[start:stop].reshape(-1, 1, 1, 1)  # (b, 1, H, W): the pixels of S_t
            kept, replaced = (x[i], other[i]) if insertion else (other[i], x[i])
            return torch.where(inside, kept, replaced)

        scores[i] = images_scores(model, make, steps + 1, as_score(targets[i]), batch_size).double()
    return Curves(torch.arange(steps + 1, dtype=torch.float64) / steps, scores, auc(scores))


def deletion(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Sequence[TargetSpec], *,
             steps: int = STEPS, batch_size: int = 32) -> Curves:
    """RISE's deletion curves (see the module doc); lower AUC is better.

    Args:
        model: the classifier, in eval mode.
        images: (N, C, H, W) net inputs.
        maps: (N, H, W) the maps to evaluate (only their order matters).
        targets: N targets, one per image: an int is that class's softmax probability, a callable maps
            the output (B, ...) of B versions of the image to (B,) scores.
        steps: ``T``.
        batch_size: the most images per forward.
    """
    return _curves(model, images, maps, targets, steps, batch_size, insertion=False)


def insertion(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Sequence[TargetSpec], *,
              steps: int = STEPS, batch_size: int = 32) -> Curves:
    """RISE's insertion curves from a blurred image (see the module doc); higher AUC is better.
    Arguments as :func:`deletion`'s."""
    return _curves(model, images, maps, targets, steps, batch_size, insertion=True)
