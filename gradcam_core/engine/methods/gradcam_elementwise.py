"""Element-wise Grad-CAM: pytorch-grad-cam's variant of HiResCAM (``GradCAMElementWise``; no paper of
its own), each position's product rectified before the channels are summed.

    L_k(i, j) = ReLU(sum_c ReLU(G^c_k(i, j) A^c(i, j)))

The outer ReLU changes nothing (a sum of non-negative terms); only positions where some channel's
gradient and activation agree in sign light up.
"""
from __future__ import annotations

import torch

from .base import CamMethod, LayerContext, register


@register
class GradCAMElementWise(CamMethod):
    name = "gradcam-elementwise"
    summary = "Element-wise Grad-CAM: rectified gradient x activation at each position (pytorch-grad-cam's)"

    def weighted_activations(self, ctx: LayerContext) -> torch.Tensor:
        """(N, K, C, h, w) ``ReLU(G^c_k A^c)`` from ``ctx.gradients`` (N, K, C, h, w) and ``ctx.activations``."""
        assert ctx.gradients is not None
        return (ctx.gradients * ctx.activations[:, None]).clamp_min(0)
