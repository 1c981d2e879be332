"""Several methods in one call give each method's own call's maps exactly, and ``counterfactual``
equals the method on targets negated by hand."""
from __future__ import annotations

import pytest
import torch

from gradcam_core import explain

METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise", "layercam", "eigencam",
           "eigengradcam"]


def test_one_call_gives_each_methods_own_maps(case):
    together = explain(case.model, case.images, case.layer, list(case.classes), method=METHODS, guided=False)
    assert list(together) == METHODS
    for method in METHODS:
        alone = explain(case.model, case.images, case.layer, list(case.classes), method=method, guided=False)
        assert together[method].method == method
        assert torch.equal(together[method].cam_raw, alone.cam_raw), method
        assert torch.equal(together[method].cam, alone.cam), method
        w, v = together[method].weights, alone.weights
        assert (w is None and v is None) or torch.equal(w, v), method


def test_one_call_with_guided_backprop(caffe_case):
    c = caffe_case
    together = explain(c.model, c.images, c.layer, list(c.classes), method=METHODS)
    for method in METHODS:
        alone = explain(c.model, c.images, c.layer, list(c.classes), method=method)
        assert torch.equal(together[method].cam_raw, alone.cam_raw), method
        assert torch.equal(together[method].guided, alone.guided), method
        assert torch.equal(together[method].guided_cam, alone.guided_cam), method


@pytest.mark.parametrize("method", METHODS)
def test_counterfactual_is_the_method_on_negated_scores(caffe_case, resnet, method):
    for c in (caffe_case, resnet):
        negated = [lambda out, k=k: -out[:, k] for k in c.classes]
        cf = explain(c.model, c.images, c.layer, list(c.classes), method=method, counterfactual=True, guided=False)
        by_hand = explain(c.model, c.images, c.layer, negated, method=method, guided=False)
        torch.testing.assert_close(cf.target_scores, by_hand.target_scores, rtol=0, atol=0)
        torch.testing.assert_close(cf.cam_raw, by_hand.cam_raw, rtol=1e-6, atol=1e-7 * float(by_hand.cam_raw.max()))
        if method not in ("eigencam",):  # Eigen-CAM has no target: the same map either way
            plain = explain(c.model, c.images, c.layer, list(c.classes), method=method, guided=False)
            assert not torch.equal(plain.cam_raw, cf.cam_raw)
