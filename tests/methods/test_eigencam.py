"""Eigen-CAM against pytorch-grad-cam's ``EigenCAM`` (its sign oriented as ours is), one map for every
target, no gradient computed, and the orientation rule of the principal component."""
from __future__ import annotations

import torch

from gradcam_core import explain
from gradcam_core.engine.methods import first_component

from .conftest import assert_maps_close, pgc_projection


def _channel_sum(_cam, a, _g):
    return a.sum(axis=1)


def test_equals_pytorch_grad_cam(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="eigencam", guided=False)
    ref = pgc_projection(case, "eigencam", eigen_smooth=False, orient_by=_channel_sum)
    assert_maps_close(ours.cam_raw, ref, what=case.name)
    assert ours.weights is None


def test_eigen_smooth_changes_nothing(caffe_case):
    c = caffe_case
    plain = explain(c.model, c.images, c.layer, list(c.classes), method="eigencam", guided=False)
    smooth = explain(c.model, c.images, c.layer, list(c.classes), method="eigencam", guided=False, eigen_smooth=True)
    assert torch.equal(plain.cam_raw, smooth.cam_raw)


def test_one_map_for_every_target_and_no_gradient(resnet):
    """The forward runs without autograd (nothing recorded, no backward) when guided backprop is off;
    with it on, the map is the same and guided backprop is Grad-CAM's."""
    grad_modes = []
    handle = resnet.model.layer1.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    try:
        expl = explain(resnet.model, resnet.images, resnet.layer, list(resnet.classes), method="eigencam", guided=False)
    finally:
        handle.remove()
    assert grad_modes == [False] and not expl.target_scores.requires_grad
    assert all(torch.equal(expl.cam_raw[:, 0], expl.cam_raw[:, k]) for k in range(len(resnet.classes)))
    both = explain(resnet.model, resnet.images, resnet.layer, list(resnet.classes), method=["eigencam", "gradcam"])
    torch.testing.assert_close(both["eigencam"].cam_raw, expl.cam_raw, rtol=1e-5, atol=1e-6)
    alone = explain(resnet.model, resnet.images, resnet.layer, list(resnet.classes), method="gradcam")
    assert torch.equal(both["eigencam"].guided, alone.guided)


def test_first_component_sign_is_fixed_by_the_channel_sum():
    """The projection correlates positively with the channel sum, so negating the terms negates the
    map (LAPACK alone would return either sign)."""
    g = torch.Generator().manual_seed(0)
    terms = torch.randn(50, 7, 5, 6, generator=g, dtype=torch.float64) + torch.linspace(-1, 1, 30).reshape(5, 6)
    p = first_component(terms)
    s = terms.sum(dim=1)
    cov = ((p - p.mean((1, 2), keepdim=True)) * (s - s.mean((1, 2), keepdim=True))).sum((1, 2))
    assert (cov > 0).all()
    torch.testing.assert_close(first_component(-terms), -p, rtol=1e-10, atol=1e-10)
