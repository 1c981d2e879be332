"""LayerCAM against pytorch-grad-cam's ``LayerCAM`` (with and without ``eigen_smooth``), at the
nets' layers and at an early one, where its maps are meant to be used."""
from __future__ import annotations

import dataclasses

from gradcam_core import explain

from .conftest import assert_maps_close, pgc_map, pgc_projection


def test_equals_pytorch_grad_cam(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="layercam", guided=False)
    assert_maps_close(ours.cam_raw, pgc_map(case, "layercam"), what=case.name)


def test_eigen_smooth_equals_pytorch_grad_cam(case):
    ours = explain(case.model, case.images, case.layer, list(case.classes), method="layercam", guided=False,
                   eigen_smooth=True)
    assert_maps_close(ours.cam_raw, pgc_projection(case, "layercam", eigen_smooth=True), what=case.name)


def test_equals_pytorch_grad_cam_at_a_shallow_layer(resnet):
    early = dataclasses.replace(resnet, layer="layer1")
    ours = explain(early.model, early.images, early.layer, list(early.classes), method="layercam", guided=False)
    assert ours.cam_raw.shape[-1] == 24
    assert_maps_close(ours.cam_raw, pgc_map(early, "layercam"), what="layer1")
