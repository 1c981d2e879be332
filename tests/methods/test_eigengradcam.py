"""Eigen-Grad-CAM against pytorch-grad-cam's ``EigenGradCAM`` (its sign oriented as ours is, by
HiResCAM's map before its ReLU, the channel sum of the projected terms)."""
from __future__ import annotations

import torch

from gradcam_core import explain

from .conftest import assert_maps_close, pgc_projection


def _hirescam(_cam, a, g):
    return (g * a).sum(axis=1)


def test_equals_pytorch_grad_cam(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="eigengradcam", guided=False)
    ref = pgc_projection(case, "eigengradcam", eigen_smooth=False, orient_by=_hirescam)
    assert_maps_close(ours.cam_raw, ref, what=case.name)


def test_eigen_smooth_changes_nothing(caffe_case):
    c = caffe_case
    plain = explain(c.model, c.images, c.layer, list(c.classes), method="eigengradcam", guided=False)
    smooth = explain(c.model, c.images, c.layer, list(c.classes), method="eigengradcam", guided=False,
                     eigen_smooth=True)
    assert torch.equal(plain.cam_raw, smooth.cam_raw)
