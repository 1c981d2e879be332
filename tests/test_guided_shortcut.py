"""The guided backward that starts at the layer: with one target, where the guided rule changes no
gradient above the layer and every path from the input to the scores crosses the layer, the engine
back-propagates the guided gradient from the layer's plain gradient instead of from the scores. Every
output must keep its bits: each case is run with the shortcut and with it switched off, and checked
against Captum's GuidedBackprop where the net has only ReLUs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from gradcam_core import explain
from gradcam_core.engine import core

SQUEEZE = Path(__file__).resolve().parent.parent / "models" / "squeezenet1_1"
FIELDS = ("scores", "target_scores", "cam_raw", "cam", "guided", "guided_cam")


@pytest.fixture(scope="module")
def squeezenet():
    from gradcam_core.image.preprocessing import load_input
    from gradcam_core.tasks.classify import load_model

    clf = load_model(SQUEEZE / "squeezenet1_1.caffemodel", proto_file=SQUEEZE / "deploy.prototxt")
    x = load_input(Path(__file__).resolve().parent.parent / "images" / "cat_dog.jpg", 224, 224, clf.preprocessing)
    return clf.net, x[None]


class _Skip(nn.Module):
    """conv -> ReLU -> (block: conv, ReLU) + identity -> pool -> linear: the block's conv has a path
    around it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 4)
        with torch.no_grad():
            self.head.weight.abs_()  # positive: nothing negative reaches the pooled features

    def forward(self, x):
        a = self.stem(x)
        a = a + self.block(a)
        return self.head(a.mean(dim=(2, 3)))


class _Custom(torch.autograd.Function):
    """A custom function the guide switch does not steer (its backward halves the gradient)."""

    @staticmethod
    def forward(ctx, x):
        return x * 1

    @staticmethod
    def backward(ctx, dy):
        return dy / 2


class _WithCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(_Custom.apply(self.body(x)).mean(dim=(2, 3)))


class _FunctionalHead(nn.Module):
    """conv -> F.relu -> conv (the layer) -> pool -> ``fn`` called as a function -> linear with
    weights of the sign ``sign``: positive weights bring a positive gradient to ``fn`` (its guided rule
    changes nothing), negative ones a negative one (it clamps)."""

    def __init__(self, fn, sign: float = 1.0) -> None:
        super().__init__()
        self.fn = fn
        self.c1, self.c2, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 4)
        with torch.no_grad():
            self.head.weight.copy_(self.head.weight.abs() * sign)

    def forward(self, x):
        a = self.c2(torch.nn.functional.relu(self.c1(x)))
        return self.head(self.fn(a.mean(dim=(2, 3))))


def _smooth_head(act: nn.Module) -> nn.Module:
    """conv -> ReLU -> conv (the layer) -> pool -> ``act`` -> linear with positive weights: the
    gradient reaching ``act`` is positive, so its guided rule changes nothing."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), act,
                        nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        net[6].weight.abs_()
    return net.eval()


def _run(monkeypatch, model, x, layer, targets, shortcut: bool = True, **kw):
    """explain(...) with the shortcut allowed or not: (explanation, whether it was taken)."""
    taken = []
    below = core._grad_below
    monkeypatch.setattr(core, "_grad_below", lambda *a: (taken.append(1), below(*a))[1])
    if not shortcut:
        monkeypatch.setattr(core._LayerTap, "crossed_only_by_layer", lambda *a, **k: False)
    try:
        return explain(model, x, layer, targets, **kw), bool(taken)
    finally:
        monkeypatch.undo()


def _assert_same_bits(a, b) -> None:
    for f in FIELDS:
        ta, tb = getattr(a, f), getattr(b, f)
        assert ta.shape == tb.shape and torch.equal(ta.view(torch.int32), tb.view(torch.int32)), f


@pytest.mark.slow  # Captum and the bundled SqueezeNet (2-9 s); the same bits on toy nets stay quick
@pytest.mark.parametrize("layer", ["fire9/concat", "relu_conv10"])
def test_squeezenet_takes_the_shortcut_with_the_same_bits_and_captums_guided_backprop(monkeypatch, squeezenet, layer):
    from captum.attr import GuidedBackprop

    net, x = squeezenet
    fast, taken = _run(monkeypatch, net, x, layer, [242])
    slow, taken_slow = _run(monkeypatch, net, x, layer, [242], shortcut=False)
    assert taken and not taken_slow
    _assert_same_bits(fast, slow)
    theirs = GuidedBackprop(net).attribute(x.clone().requires_grad_(), target=242)
    torch.testing.assert_close(fast.guided[:, 0], theirs, rtol=1e-5, atol=1e-7 * float(theirs.abs().max()))


@pytest.mark.parametrize("act", [nn.SiLU(), nn.GELU(), nn.Hardswish(), nn.ReLU6(), nn.ReLU(inplace=True)],
                         ids=["silu", "gelu", "hardswish", "relu6", "relu_inplace"])
def test_an_activation_above_the_layer_that_its_rule_leaves_alone_keeps_the_bits(monkeypatch, act):
    torch.manual_seed(0)
    net, x = _smooth_head(act), torch.randn(2, 3, 12, 12)
    fast, taken = _run(monkeypatch, net, x, "2", [1], torch7_ties=False)
    slow, _ = _run(monkeypatch, net, x, "2", [1], shortcut=False, torch7_ties=False)
    assert taken
    _assert_same_bits(fast, slow)


def _assert_not_taken(monkeypatch, cases) -> None:
    for model, inputs, layer, targets, kw in cases:
        result, taken = _run(monkeypatch, model, inputs, layer, targets, torch7_ties=False, **kw)
        assert not taken, (layer, kw)
        plain, _ = _run(monkeypatch, model, inputs, layer, targets, shortcut=False, torch7_ties=False, **kw)
        _assert_same_bits(result, plain)


def test_no_shortcut_where_the_rule_changes_a_gradient_or_a_path_avoids_the_layer(monkeypatch):
    torch.manual_seed(0)
    xt = torch.randn(1, 3, 12, 12)
    _assert_not_taken(monkeypatch, [
        (_Skip().eval(), xt, "block.0", [1], {}),  # the identity path goes around the layer
        (_FunctionalHead(torch.nn.functional.silu, -1.0).eval(), xt, "c2", [1], {}),  # F.silu above clamps
        (_smooth_head(nn.SiLU()), xt, "0", [1], {}),  # the layer's own ReLU above it is watched and clamps
        (_smooth_head(nn.SiLU()), xt, "2", [1, 2], {}),  # two targets (their backwards batched)
        (_smooth_head(nn.SiLU()), xt, "2", [1], {"counterfactual": True}),  # the negated score
    ])


@pytest.mark.slow  # the bundled SqueezeNet, six explanations; the same rules on toy nets above
def test_no_shortcut_on_squeezenet_below_clamping_relus_with_two_targets_or_a_negated_score(monkeypatch, squeezenet):
    net, x = squeezenet
    _assert_not_taken(monkeypatch, [
        (net, x, "fire9/concat", [242], {"counterfactual": True}),  # the negated score: negative gradients
        (net, x, "fire8/concat", [242], {}),  # fire9's ReLUs above it clamp
        (net, x, "fire9/concat", [242, 281], {}),  # two targets (their backwards batched)
    ])


@pytest.mark.slow  # Captum's import; the same bits as without the shortcut stay quick above
def test_the_skip_connection_case_matches_captum(monkeypatch):
    """Where a path goes around the layer the full guided backward is kept: Captum's GuidedBackprop."""
    from captum.attr import GuidedBackprop

    torch.manual_seed(3)
    model, x = _Skip().eval(), torch.randn(2, 3, 10, 10)
    ours = explain(model, x, "block.0", [2]).guided[:, 0]
    theirs = GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=2)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fn", [torch.nn.functional.relu, torch.nn.functional.silu, torch.nn.functional.gelu,
                                torch.relu], ids=["F.relu", "F.silu", "F.gelu", "torch.relu"])
def test_an_activation_function_above_the_layer_is_watched_too(monkeypatch, fn):
    """Activations called as functions are guided (engine/guided.py's torch-function mode), so they are
    watched like modules: taken where their rule changes nothing, with the same bits."""
    torch.manual_seed(1)
    net, x = _FunctionalHead(fn).eval(), torch.randn(2, 3, 12, 12)
    fast, taken = _run(monkeypatch, net, x, "c2", [1])
    slow, _ = _run(monkeypatch, net, x, "c2", [1], shortcut=False)
    assert taken
    _assert_same_bits(fast, slow)


def test_a_custom_function_above_the_layer_keeps_the_bits(monkeypatch):
    """A custom autograd function the switch does not steer runs the same backward in both passes."""
    torch.manual_seed(2)
    net, x = _WithCustom().eval(), torch.randn(1, 3, 12, 12)
    fast, taken = _run(monkeypatch, net, x, "body.2", [1], torch7_ties=False)
    slow, _ = _run(monkeypatch, net, x, "body.2", [1], shortcut=False, torch7_ties=False)
    assert taken
    _assert_same_bits(fast, slow)
