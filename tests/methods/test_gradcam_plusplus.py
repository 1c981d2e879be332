"""Grad-CAM++ against pytorch-grad-cam's ``GradCAMPlusPlus`` (with and without ``eigen_smooth``), and
its divisions where the gradient or the activations vanish."""
from __future__ import annotations

import torch

from gradcam_core import explain
from gradcam_core.engine.methods import LayerContext, lookup

from .conftest import assert_maps_close, pgc_map, pgc_projection


def test_equals_pytorch_grad_cam(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="gradcam++", guided=False)
    assert_maps_close(ours.cam_raw, pgc_map(case, "gradcam++"), what=case.name)


def test_eigen_smooth_equals_pytorch_grad_cam(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="gradcam++", guided=False,
                   eigen_smooth=True)
    assert_maps_close(ours.cam_raw, pgc_projection(case, "gradcam++", eigen_smooth=True), what=case.name)


def test_weights_follow_equation_19_written_out():
    """One channel by hand: alpha = g^2 / (2 g^2 + S g^3 + 1e-6) where g != 0, w = sum alpha ReLU(g)."""
    g = torch.tensor([[0.5, -1.0], [0.0, 2.0]], dtype=torch.float64)
    a = torch.tensor([[1.0, 0.0], [3.0, -0.5]], dtype=torch.float64)
    s = float(a.sum())
    expected = sum(float(v) ** 2 / (2 * float(v) ** 2 + s * float(v) ** 3 + 1e-6) * max(float(v), 0.0)
                   for v in g.flatten() if v != 0)
    ctx = LayerContext(model=torch.nn.Identity(), image=torch.zeros(1, 3, 2, 2), output=torch.zeros(1, 1),
                       targets=[], target_scores=torch.zeros(1, 1), activations=a[None, None],
                       gradients=g[None, None, None], layer_module=torch.nn.Identity())
    weights = lookup("gradcam++").channel_weights(ctx)
    assert abs(float(weights[0, 0, 0]) - expected) < 1e-12
