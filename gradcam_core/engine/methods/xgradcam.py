"""XGrad-CAM (Fu, Hu, Dong, Wang, Feng and Li, "Axiom-based Grad-CAM: Towards Accurate Visualization and
Explanation of CNNs", BMVC 2020, arXiv:2008.02312).

    w^c_k = sum_ij G^c_k(i, j) A^c(i, j) / (S^c + eps)
    L_k   = ReLU(sum_c w^c_k A^c)

with ``S^c = sum_ab A^c(a, b)`` the sum of channel ``c``'s activations and ``eps = 1e-7``
(pytorch-grad-cam's): each gradient is weighted by its activation's share of the channel. A channel
whose activations sum to ``-eps`` (the denominator exactly 0) gets weight 0 instead of a NaN or an
infinity; an all-zero channel gets 0 / eps = 0.
"""
from __future__ import annotations

import torch

from .base import CamMethod, LayerContext, register

EPS = 1e-7
"""Added to each channel's activation sum (pytorch-grad-cam's value)."""


@register
class XGradCAM(CamMethod):
    name = "xgradcam"
    summary = "XGrad-CAM: gradients weighted by the activations' share of their channel (Fu et al. 2020)"

    def channel_weights(self, ctx: LayerContext) -> torch.Tensor:
        """(N, K, C) ``w^c_k`` from ``ctx.gradients`` (N, K, C, h, w) and ``ctx.activations`` (N, C, h, w)."""
        assert ctx.gradients is not None
        a = ctx.activations
        numerator = (ctx.gradients * a[:, None]).sum(dim=(-2, -1))  # (N, K, C)
        denominator = a.sum(dim=(-2, -1))[:, None] + EPS  # (N, 1, C)
        return torch.where(denominator != 0, numerator / denominator, 0.0)
