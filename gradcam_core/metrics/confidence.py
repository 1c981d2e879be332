"""Average Drop and Increase in Confidence (Chattopadhay, Sarkar, Howlader, Balasubramanian,
"Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep Convolutional Networks",
WACV 2018, section 6.1).

Symbols: ``x`` the net input (C, H, W); ``m`` the map (H, W) divided by its maximum (in [0, 1]);
``x * m`` the "explanation map", each channel multiplied by ``m`` (as pytorch-grad-cam's
``CamMultImageConfidenceChange``: the net input, after its preprocessing); ``Y = y(x)`` and
``O = y(x * m)`` the target's score (its softmax probability) on the image and on the explanation map.

* Average Drop % over images i: ``100 / N sum_i max(0, Y_i - O_i) / Y_i``; per image
  ``drop = 100 max(0, Y - O) / Y``. Lower is better.
* Increase in Confidence % over images i: ``100 / N sum_i 1[Y_i < O_i]``; per image
  ``increase = 100 1[Y < O]``. Higher is better.

The evaluation run reports the per-image figures; their mean over the images is the paper's.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .scoring import TargetSpec, as_score, images_scores, model_input, unit_maps


@dataclass
class ConfidenceChange:
    """Per image: ``before`` (Y), ``after`` (O), ``average_drop`` and ``increase`` (both in %), all
    (N,) float64."""

    before: torch.Tensor
    after: torch.Tensor
    average_drop: torch.Tensor
    increase: torch.Tensor


def confidence_change(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Sequence[TargetSpec], *,
                      batch_size: int = 32) -> ConfidenceChange:
    """The Grad-CAM++ paper's figures for N images (see the module doc).

    Args:
        model: the classifier, in eval mode.
        images: (N, C, H, W) net inputs.
        maps: (N, H, W) non-negative maps (each is divided by its maximum here).
        targets: N targets, one per image: an int is that class's softmax probability, a callable maps
            the output (B, ...) to (B,) scores.
        batch_size: the most images per forward.
    """
    x = model_input(model, images)
    masked = x * unit_maps(maps).to(x)[:, None]
    n = x.shape[0]
    before = torch.empty(n, dtype=torch.float64)
    after = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        pair = torch.stack([x[i], masked[i]])

        def make(a: int, b: int, pair: torch.Tensor = pair) -> torch.Tensor:
            return pair[a:b]

        s = images_scores(model, make, 2, as_score(targets[i]), batch_size).double()
        before[i], after[i] = s[0], s[1]
    drop = 100 * (before - after).clamp_min(0) / before
    increase = 100 * (after > before).double()
    return ConfidenceChange(before, after, drop, increase)
