"""Eigen-Grad-CAM: pytorch-grad-cam's variant of Eigen-CAM (``EigenGradCAM``; no paper of its own), the
principal component of the gradient-weighted activations instead of the activations.

    L_k(i, j) = ReLU(P[G_k A](i, j))

where ``(G_k A)^c = G^c_k A^c`` position by position (HiResCAM's terms) and ``P[M]`` is the first
principal component of the C maps ``M^c`` (:func:`.base.first_component`, as in Eigen-CAM), oriented
to correlate positively with ``sum_c M^c`` (HiResCAM's map before its ReLU). ``eigen_smooth``
changes nothing (it is already a projection).
"""
from __future__ import annotations

import torch

from .base import CamMethod, LayerContext, first_component, register


@register
class EigenGradCAM(CamMethod):
    name = "eigengradcam"
    summary = "Eigen-Grad-CAM: first principal component of gradient x activation (pytorch-grad-cam's)"

    def compute(self, ctx: LayerContext, *, eigen_smooth: bool = False) -> tuple[torch.Tensor, None]:
        """(cam_raw (N, K, h, w) from ``ctx.gradients`` (N, K, C, h, w) and ``ctx.activations``; no weights)."""
        assert ctx.gradients is not None
        return first_component(ctx.gradients * ctx.activations[:, None]).clamp_min(0), None
