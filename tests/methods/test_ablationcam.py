"""Ablation-CAM against pytorch-grad-cam's AblationCAM and a hand-written channel loop; the layers below
the chosen one run on the one image; a zero score gives finite weights; models whose later layers need
the input's batch run on copies."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gradcam_core import explain
from gradcam_core.engine import ClassTarget, resolve_layer

from .pert_common import (
    assert_unchanged,
    caffe_net,
    count_forwards,
    images,
    layer_map,
    rel_err,
    snapshot,
    torchvision_net,
)

grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import base_cam  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

TOL = 1e-4  # of the map's maximum


def reference(model: nn.Module, x: torch.Tensor, module: nn.Module, cls: int, batch_size: int = 32) -> torch.Tensor:
    """pytorch-grad-cam's AblationCAM map for class ``cls`` (N, h, w), before its resize and min-max."""
    with layer_map(base_cam) as got, grad_cam.AblationCAM(model, [module], batch_size=batch_size) as cam:
        cam(x, [ClassifierOutputTarget(cls)] * x.shape[0])
    return got["map"]


def hand_ablation(model: nn.Module, image: torch.Tensor, module: nn.Module, score) -> tuple[torch.Tensor, torch.Tensor]:
    """Ablation-CAM of one image from the formula, a channel at a time: (map (h, w), weights (C,)).
    The ablation value is 0 after a ReLU (minimum 0), else the minimum - 1e7; w = (y - y_c) / y, or
    y - y_c when y = 0."""
    acts: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: acts.append(out.detach().clone()))
    with torch.no_grad():
        y = float(score(model(image)))
    handle.remove()
    a = acts[0]
    value = 0.0 if float(a.min()) == 0 else float(a.min()) - 1e7
    weights = []
    for c in range(a.shape[1]):
        ablated = a.clone()
        ablated[:, c] = value
        handle = module.register_forward_hook(lambda _m, _i, _out, r=ablated: r)
        with torch.no_grad():
            y_c = float(score(model(image)))
        handle.remove()
        weights.append((y - y_c) / y if y != 0 else y - y_c)
    w = torch.tensor(weights, dtype=a.dtype)
    return torch.relu((w[:, None, None] * a[0]).sum(dim=0)), w


@pytest.mark.parametrize(("arch", "layer", "their_batch", "dtype", "seed"), [
    # float64: a relative drop of a float32 score keeps few digits (pytorch-grad-cam's scores are
    # float32, its maps come out within 1e-6); VGG's classifier is too slow in float64 for a quick test,
    # and in float32 both compute the same forwards
    ("resnet18", "layer1", 32, torch.float64, 0),
    pytest.param("vgg11", "features.1", 32, torch.float32, 0, marks=pytest.mark.slow),  # the slowest net
    # a residual sum: the minimum is not 0, so channels go to min - 1e7; pytorch-grad-cam sets the
    # k-th channel of one of its batches to min - k * 1e7, so it is compared with batches of 1
    # (float32: depthwise convolutions are slow in float64; the 1e7 drops keep their digits)
    ("mobilenet_v3_small", "features.3", 1, torch.float32, 2),
])
def test_equals_pytorch_grad_cam_on_torchvision_nets(arch, layer, their_batch, dtype, seed):
    model = torchvision_net(arch, seed=seed, dtype=dtype)
    x = images(1, 32, dtype)
    ours = explain(model, x, layer, [3], method="ablationcam", guided=False)
    ref = reference(model, x, dict(model.named_modules())[layer], 3, their_batch)
    assert float((ref > 0).double().mean()) > 0.1  # a map to compare, not one clipped to 0 by the ReLU
    assert ours.cam_raw.shape == (1, 1, *ref.shape[1:])
    assert rel_err(ours.cam_raw[:, 0], ref) < TOL


def test_equals_pytorch_grad_cam_on_a_caffe_net(tmp_path):
    net = caffe_net(tmp_path)
    x = images(2, 16)
    ours = explain(net, x, "conv3", [ClassTarget(6)], method="ablationcam")
    ref = reference(net, x, resolve_layer(net, "conv3")[1], 6)
    assert float((ref > 0).double().mean()) > 0.1
    assert rel_err(ours.cam_raw[:, 0], ref) < TOL


def test_four_targets_and_the_layers_below_run_on_one_image(tmp_path):
    net = caffe_net(tmp_path)
    x = images(2, 16)
    before = snapshot(net)
    targets = [ClassTarget(None), 1, 2, 7]
    below, handle = count_forwards(net.layers[0])  # conv1
    together = explain(net, x, "conv2", targets, method="ablationcam", batch_size=5)
    handle.remove()
    changed = [int((a.flatten(1) != 0).any(dim=1).sum()) for a in together.activations]
    # the engine's forward, then per image the unablated copy and batches of at most 5 ablated ones
    assert below == [2] + sum(([1] * (1 + -(-c // 5)) for c in changed), [])
    for k, target in enumerate(targets):
        alone = explain(net, x, "conv2", [target], method="ablationcam")
        assert rel_err(together.cam_raw[:, k], alone.cam_raw[:, 0]) < 1e-9
    assert_unchanged(net, before)


class Head(nn.Module):
    """conv -> ReLU (the layer) -> linear -> ReLU: a class whose score is exactly 0 until channel 0
    is ablated."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * 6 * 6, 4)
        self.out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(self.relu(self.conv(x)).flatten(1)))


def test_a_zero_score_gives_the_drops_not_nan():
    model = Head().double().eval()
    x = images(1, 6)
    with torch.no_grad():
        a = model.relu(model.conv(x))[0]
        model.fc.weight[0] = 0
        model.fc.weight[0, :36] = -1.0  # channel 0 pulls class 0 down ...
        model.fc.weight[0, 36:72] = 0.5
        # ... to -0.5 sum(a0) < 0 (the ReLU gives 0); without it the pre-activation is 0.5 sum(a0) > 0
        model.fc.bias[0] = -0.5 * float(a[1].sum()) + 0.5 * float(a[0].sum())
        assert float(model(x)[0, 0]) == 0  # the score is exactly 0
    ours = explain(model, x, "relu", [0], method="ablationcam", guided=False)
    hand_map, hand_weights = hand_ablation(model, x, model.relu, lambda out: out[0, 0])
    assert bool(torch.isfinite(ours.weights).all()) and bool(torch.isfinite(ours.cam_raw).all())
    assert float(hand_weights[0]) < 0  # ablating channel 0 raised the score from 0
    torch.testing.assert_close(ours.weights[0, 0], hand_weights)
    torch.testing.assert_close(ours.cam_raw[0, 0], hand_map)


class Skip(nn.Module):
    """The layer's output is concatenated with an earlier one: its batch must be the input's."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(9 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv1(x)
        return self.fc(torch.cat([self.relu(self.conv2(f)), f], dim=1).flatten(1))


def test_a_model_that_needs_the_inputs_batch_runs_on_copies():
    model = Skip().double().eval()
    x = images(1, 8)
    sizes, handle = count_forwards(model)
    ours = explain(model, x, "relu", [2], method="ablationcam", guided=False, batch_size=3)
    handle.remove()
    hand_map, hand_weights = hand_ablation(model, x, model.relu, lambda out: out[0, 2])
    torch.testing.assert_close(ours.weights[0, 0], hand_weights)
    torch.testing.assert_close(ours.cam_raw[0, 0], hand_map)
    # the engine's forward, the one-image try that failed, then copies only: 1, then 3 + 2 ablated
    assert sizes == [1, 1, 1, 3, 2]
