"""Element-wise Grad-CAM against pytorch-grad-cam's ``GradCAMElementWise`` (with and without
``eigen_smooth``); never below HiResCAM (sum of ReLUs >= ReLU of the sum)."""
from __future__ import annotations

from gradcam_core import explain

from .conftest import assert_maps_close, pgc_map, pgc_projection


def test_equals_pytorch_grad_cam(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="gradcam-elementwise",
                   guided=False)
    assert_maps_close(ours.cam_raw, pgc_map(case, "gradcam-elementwise"), what=case.name)


def test_eigen_smooth_equals_pytorch_grad_cam(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="gradcam-elementwise",
                   guided=False, eigen_smooth=True)
    ref = pgc_projection(case, "gradcam-elementwise", eigen_smooth=True)
    assert_maps_close(ours.cam_raw, ref, what=case.name)


def test_never_below_hirescam(resnet):
    both = explain(resnet.model, resnet.images, resnet.layer, list(resnet.classes),
                   method=["gradcam-elementwise", "hirescam"], guided=False)
    assert (both["gradcam-elementwise"].cam_raw >= both["hirescam"].cam_raw).all()
