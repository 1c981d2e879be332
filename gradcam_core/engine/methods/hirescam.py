"""HiResCAM (Draelos and Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
convolutional neural networks", arXiv:2011.08891, 2020).

    L_k(i, j) = ReLU(sum_c G^c_k(i, j) A^c(i, j))

the gradient multiplied with the activation position by position, with no average over the map (for a
net whose layer is followed by a flatten and one linear layer, the exact contribution of each
position to the score). Same as Grad-CAM wherever the gradient is constant over each channel's map.
With ``eigen_smooth`` that exactness is lost (the map is then a projection, not a sum).
"""
from __future__ import annotations

import torch

from .base import CamMethod, LayerContext, register


@register
class HiResCAM(CamMethod):
    name = "hirescam"
    summary = "HiResCAM: gradient x activation at each position, summed over channels (Draelos & Carin 2020)"

    def weighted_activations(self, ctx: LayerContext) -> torch.Tensor:
        """(N, K, C, h, w) ``G^c_k A^c`` from ``ctx.gradients`` (N, K, C, h, w) and ``ctx.activations``."""
        assert ctx.gradients is not None
        return ctx.gradients * ctx.activations[:, None]
