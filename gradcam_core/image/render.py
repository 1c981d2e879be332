"""Turning maps into pictures: ``toDisplayTensor`` and the heatmap colours as the Lua scripts made them,
and the heatmap blended over the image (``overlay``, ours: the original wrote no such file)."""
from __future__ import annotations

import torch


def to_display(t: torch.Tensor) -> torch.Tensor:
    """``image.toDisplayTensor(t)``: one min-max over ALL elements (all channels together) -> [0, 1].

    The minimum is subtracted, then the result is divided by its maximum unless that is 0 (a constant
    tensor becomes all zeros). Same shape and dtype; computed in t's precision.
    """
    out = t - t.min()
    high = out.max()
    return out / torch.where(high != 0, high, torch.ones_like(high))


def to_heatmap(m: torch.Tensor) -> torch.Tensor:
    """``utils.to_heatmap``: a map (1, H, W) or (H, W) -> its (3, H, W) RGB colour image, in m's dtype.

    v = to_display(m); then (R, G, B) = (0, 4v, 1) up to v = 0.25, (0, 1, 2 - 4v) up to 0.5,
    (4v - 2, 1, 0) up to 0.75 and (1, 4 - 4v, 0) above. The map is continuous, so it is written as three
    clamped ramps; every ramp value is exact in float32, so this equals the original's table bit for bit.
    """
    if m.dim() == 3 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2:
        raise ValueError(f"to_heatmap: expected a (1, H, W) or (H, W) map, got shape {tuple(m.shape)}")
    v4 = 4 * to_display(m)
    red = (v4 - 2).clamp(0, 1)
    green = torch.minimum(v4, 4 - v4).clamp(0, 1)
    blue = (2 - v4).clamp(0, 1)
    return torch.stack([red, green, blue])


OVERLAY_ALPHA = 0.5
"""The heatmap's weight in :func:`overlay` (the image's is ``1 - OVERLAY_ALPHA``)."""


def overlay(rgb: torch.Tensor, cam: torch.Tensor, alpha: float = OVERLAY_ALPHA) -> torch.Tensor:
    """The Grad-CAM heatmap blended over the image: ``(1 - alpha) * rgb + alpha * to_heatmap(cam)``.

    Args:
        rgb: (3, H, W) the image as the net saw it before preprocessing (RGB in [0, 1], scaled to the
            input size).
        cam: (H, W) or (1, H, W) the scaled Grad-CAM map (unnormalised), the same H, W.
    Returns:
        (3, H, W) RGB in [0, 1], in rgb's dtype; no min-max: the image keeps its own brightness.
    """
    heat = to_heatmap(cam.to(rgb.dtype))
    if rgb.dim() != 3 or rgb.shape[0] != 3 or heat.shape != rgb.shape:
        raise ValueError(f"overlay: expected a (3, H, W) image and an (H, W) map of the same size, "
                         f"got {tuple(rgb.shape)} and {tuple(cam.shape)}")
    return rgb.clamp(0, 1) * (1 - alpha) + heat * alpha
