"""Grad-CAM against pytorch-grad-cam's ``GradCAM``: ours sums the gradients where it averages them, so
ours is its map times Z = h * w (with and without ``eigen_smooth``)."""
from __future__ import annotations

from gradcam_core import explain

from .conftest import assert_maps_close, pgc_map, pgc_projection


def _z(cam_raw) -> int:
    return cam_raw.shape[-1] * cam_raw.shape[-2]


def test_equals_pytorch_grad_cam_times_the_map_size(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="gradcam", guided=False)
    assert_maps_close(ours.cam_raw, pgc_map(case, "gradcam"), factor=_z(ours.cam_raw), what=case.name)


def test_eigen_smooth_equals_pytorch_grad_cam_times_the_map_size(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="gradcam", guided=False,
                   eigen_smooth=True)
    ref = pgc_projection(case, "gradcam", eigen_smooth=True)
    assert_maps_close(ours.cam_raw, ref, factor=_z(ours.cam_raw), what=case.name)
