"""Guided backprop's rule at each activation, checked against the formula written out here
(dx = f'(x) * max(dy, 0), f' taken by autograd from the activation written from its definition), and
the shadowing that applies it: plain mode is the module's own backward, nothing stays changed."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradcam_core import explain
from gradcam_core.engine.guided import GUIDED_ACTIVATIONS, GuideSwitch, switchable_activations


def _hardswish(x):
    return x * torch.clamp(x + 3, 0, 6) / 6


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


# (module, the activation from its definition, with derivative wherever autograd's is right)
ACTIVATIONS = [
    (lambda: nn.ReLU(), lambda x: torch.where(x > 0, x, torch.zeros_like(x))),
    (lambda: nn.ReLU(inplace=True), lambda x: torch.where(x > 0, x, torch.zeros_like(x))),
    (lambda: nn.ReLU6(), lambda x: torch.where((x > 0) & (x < 6), x, torch.where(x >= 6, 6.0, 0.0) * torch.ones_like(x))),
    (lambda: nn.ReLU6(inplace=True), lambda x: torch.minimum(torch.maximum(x, torch.zeros_like(x)), torch.full_like(x, 6.0))),
    (lambda: nn.Hardswish(), _hardswish),
    (lambda: nn.Hardswish(inplace=True), _hardswish),
    (lambda: nn.SiLU(), lambda x: x / (1 + torch.exp(-x))),
    (lambda: nn.SiLU(inplace=True), lambda x: x / (1 + torch.exp(-x))),
    (lambda: nn.GELU(), lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))),
    (lambda: nn.GELU(approximate="tanh"), _gelu_tanh),
    (lambda: nn.Hardtanh(-1.5, 2.5), lambda x: torch.where(x < -1.5, -1.5, torch.where(x > 2.5, 2.5, x))),
    (lambda: nn.LeakyReLU(0.1), lambda x: torch.where(x > 0, x, 0.1 * x)),
    (lambda: nn.LeakyReLU(0.2, inplace=True), lambda x: torch.where(x > 0, x, 0.2 * x)),
    (lambda: nn.LeakyReLU(-0.3), lambda x: torch.where(x > 0, x, -0.3 * x)),
    (lambda: nn.PReLU(1, 0.25).requires_grad_(False), lambda x: torch.where(x > 0, x, 0.25 * x)),
]
IDS = ["relu", "relu_inplace", "relu6", "relu6_inplace", "hardswish", "hardswish_inplace", "silu",
       "silu_inplace", "gelu", "gelu_tanh", "hardtanh", "leaky", "leaky_inplace", "leaky_negative", "prelu"]


def _inputs(dtype=torch.float64):
    """x spread over every branch of the activations (-8..8, away from the kinks at 0, +-3, 6), and a
    gradient of both signs."""
    g = torch.Generator().manual_seed(0)
    x = torch.empty(6, 7, dtype=dtype).uniform_(-8, 8, generator=g)
    kinks = torch.tensor([0.0, -3.0, 3.0, 6.0], dtype=dtype)
    x = torch.where((x[..., None] - kinks).abs().amin(-1) < 0.05, x + 0.1, x)
    dy = torch.randn(6, 7, dtype=dtype, generator=g)
    assert (dy > 0).any() and (dy < 0).any()
    return x, dy


def _through(module: nn.Module, x: torch.Tensor, dy: torch.Tensor, guided: bool):
    """(output, d x) of ``module`` under the switchable activations, with the rule ``guided``."""
    switch = GuideSwitch()
    net = nn.Sequential(nn.Identity(), module).to(x.dtype)  # (PReLU's slope in the input's precision)
    with switchable_activations(net, switch):
        leaf = x.clone().requires_grad_()
        y = net(leaf * 1)  # a non-leaf input, so in-place modules may write it
        switch.guided = guided
        (dx,) = torch.autograd.grad(y, leaf, dy)
    return y.detach(), dx


@pytest.mark.parametrize("make, formula", ACTIVATIONS, ids=IDS)
def test_guided_rule_is_the_local_slope_times_the_positive_gradient(make, formula):
    x, dy = _inputs()
    leaf = x.clone().requires_grad_()
    (slope,) = torch.autograd.grad(formula(leaf).sum(), leaf)  # f'(x), elementwise
    y, dx = _through(make(), x, dy, guided=True)
    torch.testing.assert_close(y, formula(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, slope * dy.clamp_min(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make, formula", ACTIVATIONS, ids=IDS)
def test_plain_rule_is_the_modules_own_backward_bit_for_bit(make, formula):
    for dtype in (torch.float32, torch.float64):
        x, dy = _inputs(dtype)
        y, dx = _through(make(), x, dy, guided=False)
        leaf = x.clone().requires_grad_()
        ref = make().to(dtype)(leaf * 1)
        (ref_dx,) = torch.autograd.grad(ref, leaf, dy)
        assert torch.equal(y, ref.detach()) and torch.equal(dx, ref_dx)


def test_relu_guided_rule_is_both_masks_bit_for_bit():
    """ReLU's guided rule stays exactly dy * [x > 0] * [dy > 0], in float32 as the CLIs run."""
    x, dy = _inputs(torch.float32)
    for make in (nn.ReLU, lambda: nn.ReLU(inplace=True)):
        _, dx = _through(make(), x, dy, guided=True)
        assert torch.equal(dx, dy * (x > 0) * (dy > 0))


def test_relu6_guided_passes_nothing_where_it_clips():
    x = torch.tensor([-1.0, 0.5, 5.5, 7.0], dtype=torch.float64)
    dy = torch.tensor([1.0, 1.0, -1.0, 1.0], dtype=torch.float64)
    _, dx = _through(nn.ReLU6(), x, dy, guided=True)
    assert dx.tolist() == [0.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("make", [lambda: nn.ReLU(True), lambda: nn.ReLU6(True), lambda: nn.Hardswish(True),
                                  lambda: nn.SiLU(True), lambda: nn.LeakyReLU(0.2, True)],
                         ids=["relu", "relu6", "hardswish", "silu", "leaky"])
def test_in_place_modules_stay_in_place(make):
    """The module's input tensor holds the activation afterwards (as the module alone does), and the
    result is that same tensor."""
    module = make()
    x, _ = _inputs()
    with switchable_activations(module, GuideSwitch()):
        a = x.clone().requires_grad_()
        b = a * 1
        y = module(b)
    assert y is b and torch.equal(b.detach(), make()(x.clone()))


@pytest.mark.parametrize("make", [nn.Sigmoid, nn.Hardsigmoid, nn.Tanh], ids=["sigmoid", "hardsigmoid", "tanh"])
def test_gates_keep_their_backward_and_nothing_is_shadowed(make):
    """Gates (squeeze-and-excitation's sigmoids, an LSTM's tanh) are not activations on the signal path:
    their guided-mode backward is their own, negative gradients included, and nothing is reported."""
    x, dy = _inputs()
    model = nn.Sequential(make())
    switch = GuideSwitch()
    with switchable_activations(model, switch) as seen:
        leaf = x.clone().requires_grad_()
        y = model(leaf * 1)
    switch.guided = True
    (dx,) = torch.autograd.grad(y, leaf, dy)
    ref_leaf = x.clone().requires_grad_()
    (ref,) = torch.autograd.grad(make()(ref_leaf), ref_leaf, dy)
    assert torch.equal(dx, ref) and (dx < 0).any() and not seen.unguided
    assert not any("forward" in vars(m) for m in model.modules())
    assert set(GUIDED_ACTIVATIONS) == {nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.PReLU, nn.Hardswish,
                                       nn.SiLU, nn.GELU}


class _Net(nn.Module):
    """A small conv net with each activation, in place and not, with a squeeze-and-excitation gate."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1), nn.Hardswish(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.GELU(),
        )
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1), nn.Hardsigmoid())
        self.head = nn.Linear(8, 5)
        self.fail = False

    def forward(self, x):
        a = self.body(x)
        a = a * self.gate(a)
        if self.fail:
            raise RuntimeError("inside the forward")
        return self.head(a.mean(dim=(2, 3)))


def _snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [dict(vars(m)).get("forward") for m in model.modules()],
            [p.requires_grad for p in model.parameters()])


def _assert_unchanged(model: nn.Module, before) -> None:
    state, forwards, grads = before
    after = model.state_dict()
    assert state.keys() == after.keys() and all(torch.equal(state[k], after[k]) for k in state)
    assert [dict(vars(m)).get("forward") for m in model.modules()] == forwards == [None] * len(forwards)
    assert [p.requires_grad for p in model.parameters()] == grads


def test_explain_leaves_the_model_unchanged_also_after_an_error():
    torch.manual_seed(0)
    model = _Net().eval()
    before = _snapshot(model)
    x = torch.randn(2, 3, 12, 12)
    e = explain(model, x, layer="body.9", targets=[1, 3], torch7_ties=False)
    assert e.guided is not None and e.guided.abs().sum() > 0
    _assert_unchanged(model, before)
    model.fail = True
    with pytest.raises(RuntimeError, match="inside the forward"):
        explain(model, x, layer="body.9", targets=[1], torch7_ties=False)
    _assert_unchanged(model, before)
    model.fail = False
    with pytest.raises(RuntimeError):  # 4 channels: the first convolution fails
        explain(model, torch.randn(1, 4, 12, 12), layer="body.9", targets=[1], torch7_ties=False)
    _assert_unchanged(model, before)


def test_guided_run_gives_the_plain_runs_grad_cam_bit_for_bit():
    """The switchable activations' plain mode is exact: Grad-CAM is the same with and without guided
    backprop."""
    torch.manual_seed(1)
    model = _Net().eval()
    x = torch.randn(2, 3, 12, 12)
    with_gb = explain(model, x, layer="body.6", targets=[0, 2], torch7_ties=False)
    without = explain(model, x, layer="body.6", targets=[0, 2], guided=False)
    assert torch.equal(with_gb.cam_raw, without.cam_raw) and torch.equal(with_gb.weights, without.weights)


def test_guided_backprop_per_target_equals_a_single_target_run():
    """Targets batched through the switchable activations' backward (vmap) give each target's own."""
    torch.manual_seed(2)
    model = _Net().eval()
    x = torch.randn(1, 3, 12, 12)
    both = explain(model, x, layer="body.9", targets=[1, 4], torch7_ties=False)
    for k, t in enumerate([1, 4]):
        one = explain(model, x, layer="body.9", targets=[t], torch7_ties=False)
        torch.testing.assert_close(both.guided[:, k], one.guided[:, 0], rtol=1e-6, atol=1e-9)
