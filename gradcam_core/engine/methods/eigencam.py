"""Eigen-CAM (Muhammad and Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN
2020, arXiv:2008.00299).

    L(i, j) = ReLU(P[A](i, j))

where ``P[M]`` is the first principal component of the C maps ``M^c`` (:func:`.base.first_component`):
the h*w positions are samples of C features, centred per feature, and ``P[M](i, j)`` is position
``(i, j)``'s coordinate along the first right-singular vector, oriented so that it correlates
positively with ``sum_c M^c``. No target and no gradient: the map is the same for every target
(broadcast over K), and ``eigen_smooth`` changes nothing (it is already a projection).
"""
from __future__ import annotations

import torch

from .base import CamMethod, LayerContext, first_component, register


@register
class EigenCAM(CamMethod):
    name = "eigencam"
    summary = "Eigen-CAM: the activations' first principal component, the same for every target (Muhammad & Yeasin 2020)"
    uses_gradients = False
    uses_target = False

    def compute(self, ctx: LayerContext, *, eigen_smooth: bool = False) -> tuple[torch.Tensor, None]:
        """(cam_raw (N, K, h, w): one map per image from ``ctx.activations`` (N, C, h, w), repeated for
        the K targets; no channel weights)."""
        n, k = ctx.target_scores.shape
        cam = first_component(ctx.activations).clamp_min(0)  # (N, h, w)
        return cam[:, None].expand(n, k, *cam.shape[1:]).contiguous(), None
