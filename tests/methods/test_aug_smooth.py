"""``aug_smooth`` against pytorch-grad-cam's ``aug_smooth`` with its scaling step removed (the mean of
the six augmented copies' raw maps, mirrored maps mirrored back), targets fixed to what they chose on
the unaugmented input, guided backprop left unaugmented. The principal-component methods are left out:
pytorch-grad-cam's sign is LAPACK's on each copy, so its mean cannot be oriented afterwards."""
from __future__ import annotations

import pytest
import torch

from gradcam_core import explain
from gradcam_core.engine import ClassTarget

from .conftest import assert_maps_close, pgc_map

METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise", "layercam"]


# every method on the two fastest nets, one on two others (six forwards and backwards each)
# (the torchvision ones but mobilenet's Grad-CAM are slow: 0.3-1.4 s each; the Caffe net keeps every
# method quick)
PAIRS = [pytest.param("mobilenet_v3_small", m, marks=[pytest.mark.slow] if m != "gradcam" else [])
         for m in METHODS] + [("caffe", m) for m in METHODS] + [
    pytest.param("resnet18", "gradcam", marks=pytest.mark.slow),
    pytest.param("densenet121", "layercam", marks=pytest.mark.slow)]


@pytest.mark.parametrize(("net", "method"), PAIRS)
def test_equals_pytorch_grad_cam(build, net, method):
    case = build(net)
    ours = explain(case.model, case.images, case.layer, list(case.classes), method=method, guided=False,
                   aug_smooth=True)
    z = ours.cam_raw.shape[-1] * ours.cam_raw.shape[-2] if method == "gradcam" else 1
    assert_maps_close(ours.cam_raw, pgc_map(case, method, aug_smooth=True), factor=z, what=net)


def test_differs_from_the_plain_map(caffe_case):
    c = caffe_case
    plain = explain(c.model, c.images, c.layer, list(c.classes), guided=False)
    smooth = explain(c.model, c.images, c.layer, list(c.classes), guided=False, aug_smooth=True)
    assert float((smooth.cam_raw - plain.cam_raw).abs().max()) > 1e-2 * float(plain.cam_raw.max())


def test_guided_backprop_and_scores_stay_the_unaugmented_inputs(caffe_case):
    c = caffe_case
    plain = explain(c.model, c.images, c.layer, list(c.classes), method=["gradcam", "layercam"])
    smooth = explain(c.model, c.images, c.layer, list(c.classes), method=["gradcam", "layercam"], aug_smooth=True)
    for name in ("gradcam", "layercam"):
        assert torch.equal(smooth[name].guided, plain[name].guided)
        assert torch.equal(smooth[name].target_scores, plain[name].target_scores)
        torch.testing.assert_close(smooth[name].guided_cam, smooth[name].guided * smooth[name].cam[:, :, None])


def test_predicted_class_is_fixed_on_the_unaugmented_image(caffe_case):
    """A "predicted class" target explains on every copy the class predicted on the original image
    (these images' augmented copies predict other classes)."""
    c = caffe_case
    images = torch.cat([c.images, c.images.flip(-1) * 1.1, c.images * 0.9])
    predicted = explain(c.model, images, c.layer, [ClassTarget(None)], guided=False, aug_smooth=True)
    classes = predicted.scores.argmax(dim=1)
    with torch.no_grad():
        assert (c.model(images.flip(-1) * 1.1).argmax(dim=1) != classes).any()
    for n, cls in enumerate(classes.tolist()):
        one = explain(c.model, images[n : n + 1], c.layer, [cls], guided=False, aug_smooth=True)
        torch.testing.assert_close(predicted.cam_raw[n], one.cam_raw[0], rtol=1e-5, atol=1e-5 * float(one.cam_raw.max()))
