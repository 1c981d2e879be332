"""XGrad-CAM against pytorch-grad-cam's ``XGradCAM`` (with and without ``eigen_smooth``), and the
channel whose activations sum to -eps (a zero denominator)."""
from __future__ import annotations

import torch

from gradcam_core import explain
from gradcam_core.engine.methods import LayerContext, lookup
from gradcam_core.engine.methods.xgradcam import EPS

from .conftest import assert_maps_close, pgc_map, pgc_projection


def test_equals_pytorch_grad_cam(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="xgradcam", guided=False)
    assert_maps_close(ours.cam_raw, pgc_map(case, "xgradcam"), what=case.name)


def test_eigen_smooth_equals_pytorch_grad_cam(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="xgradcam", guided=False,
                   eigen_smooth=True)
    assert_maps_close(ours.cam_raw, pgc_projection(case, "xgradcam", eigen_smooth=True), what=case.name)


def test_a_zero_denominator_gives_weight_zero():
    """Channel 0 sums to exactly -eps (pytorch-grad-cam divides by 0 there: inf or NaN); channel 1 is
    all zero (0 / eps); channel 2 is ordinary: sum(G A) / (sum A + eps)."""
    a = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    a[0, 0, 0, 0] = -EPS
    a[0, 2] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    g = torch.ones(1, 1, 3, 2, 2, dtype=torch.float64)
    ctx = LayerContext(model=torch.nn.Identity(), image=torch.zeros(1, 3, 2, 2), output=torch.zeros(1, 1),
                       targets=[], target_scores=torch.zeros(1, 1), activations=a, gradients=g,
                       layer_module=torch.nn.Identity())
    weights = lookup("xgradcam").channel_weights(ctx)
    assert weights[0, 0, 0] == 0 and weights[0, 0, 1] == 0
    assert abs(float(weights[0, 0, 2]) - 10 / (10 + EPS)) < 1e-15
