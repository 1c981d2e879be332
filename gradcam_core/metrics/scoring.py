"""What the metrics share: the score a metric follows, and perturbed images through the model in
batches.

A metric follows one score per image: by default the softmax probability of a class
(:class:`ClassProbability`, what RISE and the Grad-CAM++ paper measure); any callable mapping the
model output (B, ...) of B versions of one image to (B,) scores works (an engine target, e.g.
:class:`~gradcam_core.engine.targets.ClassTarget` for the logit).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..engine.params import model_input

Score = Callable[[torch.Tensor], torch.Tensor]
"""Maps the model output (B, ...) to (B,) scores."""

TargetSpec = int | Score
"""A 0-based class index (its softmax probability) or a :data:`Score`."""

MakeBatch = Callable[[int, int], torch.Tensor]
"""``make(start, stop) -> (stop - start, C, H, W)``: versions ``start`` to ``stop - 1`` of an image."""


@dataclass(frozen=True)
class ClassProbability:
    """The softmax probability of 0-based class ``index``: output (B, K...) -> (B,), the softmax taken
    over each image's flattened output."""

    index: int

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        flat = output.reshape(output.shape[0], -1)
        return torch.softmax(flat.double(), dim=1)[:, self.index].to(output.dtype)


def as_score(target: TargetSpec) -> Score:
    """An int as :class:`ClassProbability`, a callable as it is."""
    return ClassProbability(int(target)) if isinstance(target, int) else target


def images_scores(model: nn.Module, make: MakeBatch, count: int, score: Score, batch_size: int) -> torch.Tensor:
    """The scores of ``count`` versions of one image (``make``), at most ``batch_size`` per forward,
    without gradients: (count,) on the CPU."""
    batch_size = max(1, int(batch_size))
    out = []
    with torch.no_grad():
        for start in range(0, count, batch_size):
            stop = min(count, start + batch_size)
            x = model_input(model, make(start, stop))
            s = score(model(x))
            if s.shape != (stop - start,):
                raise ValueError(f"a metric's score must give one value per image, shape ({stop - start},); "
                                 f"got {tuple(s.shape)}")
            out.append(s.detach().cpu())
    return torch.cat(out)


def unit_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) maps divided by their maximum (an all-zero map stays 0), negative values clipped:
    each map in [0, 1]."""
    maps = maps.detach().clamp_min(0)
    peak = maps.reshape(maps.shape[0], -1).amax(dim=1).reshape(-1, 1, 1)
    return torch.where(peak > 0, maps / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(maps))
