"""LayerCAM (Jiang, Zhang, Hou, Cheng and Wei, "LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization", IEEE Transactions on Image Processing 30, 2021).

    L_k(i, j) = ReLU(sum_c ReLU(G^c_k(i, j)) A^c(i, j))

each activation weighted by its own positive gradient, so shallow layers (whose gradients vary over
the map) give fine-grained maps.
"""
from __future__ import annotations

import torch

from .base import CamMethod, LayerContext, register


@register
class LayerCAM(CamMethod):
    name = "layercam"
    summary = "LayerCAM: each activation weighted by its positive gradient (Jiang et al. 2021)"

    def weighted_activations(self, ctx: LayerContext) -> torch.Tensor:
        """(N, K, C, h, w) ``ReLU(G^c_k) A^c`` from ``ctx.gradients`` (N, K, C, h, w) and ``ctx.activations``."""
        assert ctx.gradients is not None
        return ctx.gradients.clamp_min(0) * ctx.activations[:, None]
