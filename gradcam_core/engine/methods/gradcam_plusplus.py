"""Grad-CAM++ (Chattopadhay, Sarkar, Howlader and Balasubramanian, "Grad-CAM++: Generalized Gradient-based
Visual Explanations for Deep Convolutional Networks", WACV 2018, arXiv:1710.11063), its equation 19.

    alpha^c_k(i, j) = G^c_k(i, j)^2 / (2 G^c_k(i, j)^2 + S^c G^c_k(i, j)^3 + eps)
    w^c_k           = sum_ij alpha^c_k(i, j) ReLU(G^c_k(i, j))
    L_k             = ReLU(sum_c w^c_k A^c)

with ``S^c = sum_ab A^c(a, b)`` the sum of channel ``c``'s activations and ``eps = 1e-6``. The powers of
the first derivative stand for the second and third ones, as the paper derives for an exponential of
the score. ``alpha`` is 0 where the gradient is 0 (as pytorch-grad-cam sets it) and also where the
denominator is exactly 0 (where it would divide by zero), so a zero gradient or a channel whose terms
cancel gives a zero weight, never a NaN or an infinity. ``eps`` is pytorch-grad-cam's value: an
absolute term, it damps the weights of small gradients, so maps agree only with the same value.
"""
from __future__ import annotations

import torch

from .base import CamMethod, LayerContext, register

EPS = 1e-6
"""Added to the denominator of ``alpha`` (pytorch-grad-cam's value)."""


@register
class GradCAMPlusPlus(CamMethod):
    name = "gradcam++"
    summary = "Grad-CAM++: positive gradients weighted by higher-order terms (Chattopadhay et al. 2018)"

    def channel_weights(self, ctx: LayerContext) -> torch.Tensor:
        """(N, K, C) ``w^c_k`` from ``ctx.gradients`` (N, K, C, h, w) and ``ctx.activations`` (N, C, h, w)."""
        assert ctx.gradients is not None
        g = ctx.gradients
        s = ctx.activations.sum(dim=(-2, -1))[:, None, :, None, None]  # (N, 1, C, 1, 1)
        g2 = g * g
        denominator = 2 * g2 + s * g2 * g + EPS
        alpha = torch.where((g != 0) & (denominator != 0), g2 / denominator, 0.0)
        return (alpha * g.clamp_min(0)).sum(dim=(-2, -1))
