"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017), as the authors' code computed it.

    w^c_k = sum_ij G^c_k(i, j)                 (the SUM of the gradients over the map)
    L_k   = ReLU(sum_c w^c_k A^c)

The paper writes the weights as the mean, (1 / Z) sum_ij; the original scripts summed, and so does this
method, so raw maps keep the Lua values. The factor 1 / Z (Z = h * w) cancels after min-max
normalisation: pytorch-grad-cam's ``GradCAM`` map times Z is this map.
"""
from __future__ import annotations

import torch

from .base import CamMethod, LayerContext, register


@register
class GradCAM(CamMethod):
    name = "gradcam"
    summary = "Grad-CAM: channels weighted by their summed gradient (the original's; the default)"

    def channel_weights(self, ctx: LayerContext) -> torch.Tensor:
        """(N, K, C) = sum over (i, j) of ``ctx.gradients`` (N, K, C, h, w)."""
        assert ctx.gradients is not None
        return ctx.gradients.sum(dim=(-2, -1))
