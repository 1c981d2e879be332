"""FullGrad against pytorch-grad-cam's FullGrad; the layer ignored, targets batched, the model left as
it was (even when a target fails inside the method)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradcam_core import explain
from gradcam_core.engine import ClassTarget, core
from gradcam_core.engine.methods import fullgrad

from .pert_common import ARCHS, assert_unchanged, caffe_net, images, layer_map, rel_err, snapshot, torchvision_net

grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import fullgrad_cam  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

TOL = 1e-4  # of the map's maximum


def reference(model: nn.Module, x: torch.Tensor, cls: int, eigen_smooth: bool = False) -> torch.Tensor:
    """pytorch-grad-cam's FullGrad map (N, H, W): the sum of its terms, before the final min-max."""
    with layer_map(fullgrad_cam) as got, grad_cam.FullGrad(model, []) as cam:
        cam(x, [ClassifierOutputTarget(cls)] * x.shape[0], eigen_smooth=eigen_smooth)
    return got["map"]


LAYERS = {"resnet18": "layer1", "vgg11": "features.1", "mobilenet_v3_small": "features.3"}


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a == "vgg11" else a for a in ARCHS])
def test_equals_pytorch_grad_cam_on_torchvision_nets(arch):  # vgg11, the slowest net, in the slow run
    model = torchvision_net(arch, dtype=torch.float32)
    x = images(2, 32, torch.float32)
    ours = explain(model, x, LAYERS[arch], [5], method="fullgrad", guided=False)  # the layer is not used
    ref = reference(model, x, 5)
    assert ours.cam_raw.shape == (2, 1, 32, 32) and ours.weights is None
    assert rel_err(ours.cam_raw[:, 0], ref) < TOL


def test_equals_pytorch_grad_cam_on_a_caffe_net(tmp_path):
    net = caffe_net(tmp_path, dtype=torch.float32)
    x = images(2, 16, torch.float32)
    ours = explain(net, x, "conv3", [ClassTarget(2)], method="fullgrad")
    assert rel_err(ours.cam_raw[:, 0], reference(net, x, 2)) < TOL


def test_eigen_smooth_equals_pytorch_grad_cam_up_to_the_sign_of_the_component(monkeypatch):
    model = torchvision_net("resnet18", dtype=torch.float32)
    x = images(2, 32, torch.float32)
    ours = explain(model, x, "layer1", [5], method="fullgrad", guided=False, eigen_smooth=True).cam_raw[:, 0]
    ref = reference(model, x, 5, eigen_smooth=True)
    original = fullgrad_cam.get_2d_projection
    monkeypatch.setattr(fullgrad_cam, "get_2d_projection", lambda a: -original(a))
    flipped = reference(model, x, 5, eigen_smooth=True)
    for n in range(2):  # an SVD's singular vector has either sign; the two libraries may choose apart
        assert min(rel_err(ours[n], ref[n]), rel_err(ours[n], flipped[n])) < TOL
    assert not np.allclose(ref.numpy(), flipped.numpy())


def test_targets_batched_layer_ignored_model_unchanged(monkeypatch):
    model = torchvision_net("resnet18", dtype=torch.float32)
    model.fc.weight.requires_grad_(False)  # flags are restored as they were, not all to True
    before = snapshot(model)
    layer_gradients = []
    original = core._batched_grad
    monkeypatch.setattr(core, "_batched_grad", lambda *a, **k: layer_gradients.append(1) or original(*a, **k))
    x = images(2, 32, torch.float32)
    targets = [ClassTarget(None), 1, 2, 7]
    together = explain(model, x, "layer2", targets, method="fullgrad", guided=False)
    assert not layer_gradients  # no gradient at the layer is computed for FullGrad alone
    other_layer = explain(model, x, "layer4", targets, method="fullgrad", guided=False)
    torch.testing.assert_close(together.cam_raw, other_layer.cam_raw)
    for k, target in enumerate(targets):
        alone = explain(model, x, "layer2", [target], method="fullgrad")
        assert rel_err(together.cam_raw[:, k], alone.cam_raw[:, 0]) < 1e-5
    assert_unchanged(model, before)


def test_a_target_failing_inside_the_method_leaves_the_model_as_it_was():
    model = torchvision_net("resnet18", dtype=torch.float32)
    before = snapshot(model)
    calls = []

    def second_call_fails(out: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:  # the engine's forward, then FullGrad's own
            raise RuntimeError("boom")
        return out[:, 0]

    with pytest.raises(RuntimeError, match="boom"):
        explain(model, images(1, 32, torch.float32), "layer1", [second_call_fails], method="fullgrad")
    assert_unchanged(model, before)


def test_which_modules_count():
    class Conv(nn.Conv2d):
        pass

    bn = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.weight.fill_(2.0)
        bn.bias.fill_(1.0)
        bn.running_mean.fill_(0.5)
        bn.running_var.fill_(3.0)
    torch.testing.assert_close(fullgrad.bias_of(bn), torch.full((3,), 1.0 - 0.5 * 2.0 / float(np.sqrt(3.0 + bn.eps))))
    assert fullgrad.bias_of(nn.Conv2d(3, 4, 1)) is not None
    assert fullgrad.bias_of(nn.Conv2d(3, 4, 1, bias=False)) is None
    assert fullgrad.bias_of(nn.BatchNorm2d(3, affine=False)) is None
    assert fullgrad.bias_of(Conv(3, 4, 1)) is None  # exact types, as pytorch-grad-cam counts them
    assert fullgrad.bias_of(nn.Linear(3, 4)) is None
