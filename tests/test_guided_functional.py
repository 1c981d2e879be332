"""Guided backprop on activations called as functions (``F.relu``, ``torch.relu_``, ``x.relu()``,
``F.leaky_relu``, ...), as torchvision's inception_v3 and densenet121 call them, against a reference
written here: every call replaced by an autograd Function applying dx = f'(x) * max(dy, 0), with f and
f' written from their formulas. Also: Grad-CAM's (plain) gradient unchanged, what cannot be guided
reported, the torch-function mode active for the forward only."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradcam_core import explain
from gradcam_core.engine.guided import GuideSwitch, switchable_activations
from gradcam_core.nets.graph import GraphNet, InputSpec
from gradcam_core.nets.modules import BNLL

torchvision = pytest.importorskip("torchvision")


class _Rule(torch.autograd.Function):
    """y = f(x); backward f'(x) * max(dy, 0) (f and f' given as formulas)."""

    @staticmethod
    def forward(ctx, x, f, df):
        ctx.save_for_backward(x)
        ctx.df = df
        return f(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return ctx.df(x) * torch.where(dy > 0, dy, torch.zeros_like(dy)), None, None


def _s(x):
    return 1 / (1 + torch.exp(-x))


def _phi_cdf(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


_C = math.sqrt(2 / math.pi)


def _tanh_u(x):
    return torch.tanh(_C * (x + 0.044715 * x ** 3))


def _one(x):
    return torch.ones_like(x)


def _zero(x):
    return torch.zeros_like(x)


def _clip(lo, hi):
    return (lambda x: torch.where(x < lo, lo * _one(x), torch.where(x > hi, hi * _one(x), x)),
            lambda x: ((x > lo) & (x < hi)).to(x.dtype))


def _leaky(a):
    return lambda x: torch.where(x > 0, x, a * x), lambda x: torch.where(x > 0, _one(x), a * _one(x))


PRELU = torch.tensor([0.25, -0.1, 0.5, 0.05, 0.3, 0.2])  # a slope per channel (6 channels)

# (f, f') from their definitions
FORMULAS = {
    "relu": (lambda x: torch.where(x > 0, x, _zero(x)), lambda x: (x > 0).to(x.dtype)),
    "relu6": _clip(0.0, 6.0),
    "hardtanh": _clip(-1.0, 2.0),
    "leaky_0.1": _leaky(0.1),
    "leaky_0.2": _leaky(0.2),
    "leaky_0.05": _leaky(0.05),
    "leaky_-0.2": _leaky(-0.2),
    "hardswish": (lambda x: x * torch.where(x < -3, _zero(x), torch.where(x > 3, 6 * _one(x), x + 3)) / 6,
                  lambda x: torch.where(x < -3, _zero(x), torch.where(x > 3, _one(x), x / 3 + 0.5))),
    "silu": (lambda x: x * _s(x), lambda x: _s(x) * (1 + x * (1 - _s(x)))),
    "gelu": (lambda x: x * _phi_cdf(x),
             lambda x: _phi_cdf(x) + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
    "gelu_tanh": (lambda x: 0.5 * x * (1 + _tanh_u(x)),
                  lambda x: 0.5 * (1 + _tanh_u(x)) + 0.5 * x * (1 - _tanh_u(x) ** 2) * _C * (1 + 3 * 0.044715 * x * x)),
    "prelu": (lambda x: torch.where(x > 0, x, PRELU.view(1, -1, 1, 1) * x),
              lambda x: torch.where(x > 0, _one(x), PRELU.view(1, -1, 1, 1) * _one(x))),
}


class _SubReLU(nn.ReLU):
    """A subclass (not shadowed as nn.ReLU is): its F.relu call is seen by the mode."""


# how a model calls the activation -> the formula the reference applies
CALLS = {
    "F.relu": (lambda x: F.relu(x), "relu"),
    "F.relu inplace": (lambda x: F.relu(x, inplace=True), "relu"),
    "F.relu_": (lambda x: F.relu_(x), "relu"),
    "torch.relu": (lambda x: torch.relu(x), "relu"),
    "torch.relu_": (lambda x: torch.relu_(x), "relu"),
    "Tensor.relu": (lambda x: x.relu(), "relu"),
    "Tensor.relu_": (lambda x: x.relu_(), "relu"),
    "aten.relu": (lambda x: torch.ops.aten.relu.default(x), "relu"),
    "nn.ReLU subclass": (_SubReLU(inplace=True), "relu"),
    "F.relu6": (lambda x: F.relu6(x), "relu6"),
    "F.relu6 inplace": (lambda x: F.relu6(x, inplace=True), "relu6"),
    "F.hardtanh": (lambda x: F.hardtanh(x, -1.0, 2.0), "hardtanh"),
    "F.hardtanh_": (lambda x: F.hardtanh_(x, -1.0, 2.0), "hardtanh"),
    "F.leaky_relu": (lambda x: F.leaky_relu(x, 0.1), "leaky_0.1"),
    "F.leaky_relu inplace": (lambda x: F.leaky_relu(x, 0.2, inplace=True), "leaky_0.2"),
    "F.leaky_relu_": (lambda x: F.leaky_relu_(x, 0.05), "leaky_0.05"),
    "F.leaky_relu negative slope": (lambda x: F.leaky_relu(x, -0.2), "leaky_-0.2"),
    "nn.LeakyReLU": (nn.LeakyReLU(0.1), "leaky_0.1"),
    "F.hardswish": (lambda x: F.hardswish(x), "hardswish"),
    "F.hardswish inplace": (lambda x: F.hardswish(x, inplace=True), "hardswish"),
    "F.silu": (lambda x: F.silu(x), "silu"),
    "F.silu inplace": (lambda x: F.silu(x, inplace=True), "silu"),
    "F.gelu": (lambda x: F.gelu(x), "gelu"),
    "F.gelu tanh": (lambda x: F.gelu(x, approximate="tanh"), "gelu_tanh"),
    "F.prelu": (lambda x: F.prelu(x, PRELU), "prelu"),
}

MODULE_CALLS = {_SubReLU: "relu", nn.LeakyReLU: "leaky_relu"}  # what the modules' forward calls


class _Toy(nn.Module):
    """conv -> act -> conv -> act -> mean -> linear, ``act`` as the model calls it."""

    def __init__(self, act) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 4)
        self.act = act

    def forward(self, x):
        a = self.act(self.conv1(x))
        b = self.act(self.conv2(a))
        return self.head(b.mean(dim=(2, 3)))


def _toy(name, seed=0):
    torch.manual_seed(seed)
    return _Toy(CALLS[name][0]).eval()


def _reference(model, x, targets, act=None, patch=None):
    """d score / d x with the rule applied at every activation: the toy's ``act`` replaced, or the
    functions ``patch`` names replaced in torch.nn.functional (what torchvision's models call)."""
    grads = []
    for t in targets:
        leaf = x.clone().requires_grad_()
        with pytest.MonkeyPatch.context() as mp:
            if act is not None:
                f, df = FORMULAS[act]
                mp.setattr(model, "act", lambda a, f=f, df=df: _Rule.apply(a, f, df))
            for fname, formula in (patch or {}).items():
                f, df = FORMULAS[formula]
                mp.setattr(F, fname, lambda a, *args, f=f, df=df, **kwargs: _Rule.apply(a, f, df))
            score = model(leaf)[:, t].sum()
            (g,) = torch.autograd.grad(score, leaf)
        grads.append(g)
    return torch.stack(grads, dim=1)  # (N, K, C, H, W)


def _plain(model, x, targets):
    leaf = x.clone().requires_grad_()
    return torch.stack([torch.autograd.grad(model(leaf)[:, t].sum(), leaf)[0] for t in targets], dim=1)


def _close(ours, theirs, rtol=1e-5):
    assert theirs.abs().max() > 0
    assert (ours - theirs).abs().max() <= rtol * theirs.abs().max(), float((ours - theirs).abs().max())


def _input(seed=1, n=2, size=10, scale=4.0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("name", list(CALLS))
def test_every_form_of_call_takes_the_rule(name):
    """Two targets (the batched backward), both activations in the path; the map is not plain backprop."""
    model = _toy(name)
    x = _input()
    e = explain(model, x, layer="conv2", targets=[1, 3], torch7_ties=False)
    call, formula = CALLS[name]
    if isinstance(call, nn.Module):  # the function its forward calls, replaced
        theirs = _reference(model, x, [1, 3], patch={MODULE_CALLS[type(call)]: formula})
    else:
        theirs = _reference(model, x, [1, 3], act=formula)
    _close(e.guided, theirs)
    plain = _plain(model, x, [1, 3])
    assert (plain - theirs).abs().max() > 1e-3 * theirs.abs().max()  # the rule changed something
    assert e.unguided == ()


@pytest.mark.parametrize("name", ["F.relu inplace", "F.leaky_relu negative slope", "F.silu inplace", "F.gelu tanh",
                                  "F.prelu", "F.hardtanh_"])
def test_grad_cam_keeps_the_plain_gradient_bit_for_bit(name):
    """The layer's gradient goes through the activation above it with its own backward: Grad-CAM with
    guided backprop equals Grad-CAM alone exactly."""
    model = _toy(name, seed=2)
    x = _input(seed=3)
    with_gb = explain(model, x, layer="conv1", targets=[0, 2], torch7_ties=False)
    alone = explain(model, x, layer="conv1", targets=[0, 2], guided=False)
    assert torch.equal(with_gb.weights, alone.weights) and torch.equal(with_gb.cam_raw, alone.cam_raw)


def test_in_place_calls_stay_in_place():
    """As without guided backprop: the call writes its input and returns that tensor."""
    x = _input(n=1)
    for call in (lambda b: F.relu(b, inplace=True), lambda b: b.relu_(), lambda b: F.leaky_relu_(b, 0.2),
                 lambda b: F.hardswish(b, inplace=True), lambda b: F.relu6(b, inplace=True)):
        expected = call(x.clone())
        with switchable_activations(nn.Identity(), GuideSwitch()):
            b = x.clone().requires_grad_() * 1
            y = call(b)
        assert y is b and torch.equal(b.detach(), expected)


def test_inception_v3_every_relu_is_functional():
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    x = torch.randn(1, 3, 80, 80, generator=torch.Generator().manual_seed(4))
    e = explain(model, x, layer="Mixed_6e", targets=[7], torch7_ties=False)
    theirs = _reference(model, x, [7], patch={"relu": "relu"})
    _close(e.guided, theirs)
    plain = _plain(model, x, [7])
    assert (plain - theirs).abs().max() > 0.1 * theirs.abs().max()  # the old result, plain backprop, is far
    assert e.unguided == ()
    alone = explain(model, x, layer="Mixed_6e", targets=[7], guided=False)
    assert torch.equal(e.cam_raw, alone.cam_raw)


def test_densenet121_final_relu_is_guided_too():
    """Its ReLUs are modules except the one after norm5 (F.relu, in place): all take the rule."""
    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    e = explain(model, x, layer="features.denseblock4", targets=[11], torch7_ties=False)
    theirs = _reference(model, x, [11], patch={"relu": "relu"})
    _close(e.guided, theirs)
    assert e.unguided == ()
    alone = explain(model, x, layer="features.denseblock4", targets=[11], guided=False)
    assert torch.equal(e.cam_raw, alone.cam_raw)


def test_a_toy_with_every_kind_side_by_side():
    """Modules (shadowed and not) and functions of every kind in one net, with an SE gate."""

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 6, 6, 3, padding=1) for i in range(6))
            self.relu = nn.ReLU(inplace=True)
            self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(6, 6, 1), nn.Sigmoid())
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            c = self.convs
            x = self.relu(c[0](x))
            x = F.leaky_relu(c[1](x), 0.1, inplace=True)
            x = F.silu(c[2](x))
            x = x * self.gate(x)
            x = torch.relu_(c[3](x))
            x = F.gelu(c[4](x))
            x = F.hardswish(c[5](x))
            return self.head(x.mean(dim=(2, 3)))

    torch.manual_seed(6)
    model = Mixed().eval()
    x = _input(seed=7, scale=3.0)
    e = explain(model, x, layer="convs.2", targets=[0, 2], torch7_ties=False)

    patch = {"leaky_relu": "leaky_0.1", "silu": "silu", "gelu": "gelu", "hardswish": "hardswish", "relu": "relu"}
    grads = []
    for t in (0, 2):
        leaf = x.clone().requires_grad_()
        with pytest.MonkeyPatch.context() as mp:
            for fname, formula in patch.items():
                f, df = FORMULAS[formula]
                mp.setattr(F, fname, lambda a, *args, f=f, df=df, **kwargs: _Rule.apply(a, f, df))
            f, df = FORMULAS["relu"]
            mp.setattr(torch, "relu_", lambda a, f=f, df=df: _Rule.apply(a, f, df))
            (g,) = torch.autograd.grad(model(leaf)[:, t].sum(), leaf)
        grads.append(g)
    _close(e.guided, torch.stack(grads, dim=1))
    assert e.unguided == ()


# --- what cannot be guided is said ---------------------------------------------------------------


def _with_warning(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_an_activation_without_a_rule_is_named_and_passes_its_plain_gradient():
    """F.elu keeps its own backward (the reference: ELU plain, ReLU guided) and is named once."""

    class EluNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
            self.soft = nn.Softplus()
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            x = F.relu(F.elu(self.conv1(x)))
            x = self.soft(F.elu(self.conv2(x)))
            return self.head(x.mean(dim=(2, 3)))

    torch.manual_seed(8)
    model = EluNet().eval()
    x = _input(seed=9)
    e, said = _with_warning(lambda: explain(model, x, layer="conv2", targets=[1], torch7_ties=False))
    assert e.unguided == ("torch.nn.functional.elu", "torch.nn.functional.softplus")
    assert len(said) == 1 and "torch.nn.functional.elu, torch.nn.functional.softplus" in said[0]
    theirs = _reference(model, x, [1], patch={"relu": "relu"})
    _close(e.guided, theirs)
    assert explain(model, x, layer="conv2", targets=[1], guided=False).unguided == ()


def test_torchscript_modules_with_activations_are_named():
    torch.manual_seed(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        scripted = torch.jit.script(nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()))
        conv_only = torch.jit.script(nn.Conv2d(3, 6, 3, padding=1))
    model = nn.Sequential(conv_only, nn.ReLU(), scripted, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    e, said = _with_warning(lambda: explain(model, _input(seed=11), layer="1", targets=[0], torch7_ties=False))
    assert e.unguided == ("TorchScript module '2'",) and len(said) == 1 and "TorchScript module '2'" in said[0]


def test_gates_are_not_reported():
    """A squeeze-and-excitation gate (sigmoid, hardsigmoid) and tanh are not activations to guide."""

    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, padding=1)
            self.squeeze = nn.Conv2d(6, 6, 1)

        def forward(self, x):
            x = F.relu(self.conv(x))
            x = x * torch.sigmoid(self.squeeze(x.mean(dim=(2, 3), keepdim=True)))
            x = x * F.hardsigmoid(x) + torch.tanh(x)
            return x.mean(dim=(2, 3))

    e, said = _with_warning(lambda: explain(Gated().eval(), _input(seed=13), layer="conv", targets=[0],
                                            torch7_ties=False))
    assert e.unguided == () and not said


# --- the mode: for the forward only, and only where needed -------------------------------------------


class _Probe(nn.Module):
    """Records whether a torch-function mode is on during its forward and during the target."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fail = fail
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(torch._C._is_torch_function_mode_enabled())
        if self.fail:
            raise RuntimeError("inside the forward")
        return F.relu(self.conv(x)).mean(dim=(2, 3))


def test_the_mode_is_on_for_the_forward_only_and_removed_after_errors():
    model = _Probe().eval()
    during_target: list[bool] = []

    def target(output):
        during_target.append(torch._C._is_torch_function_mode_enabled())
        return output[:, 1]

    explain(model, _input(seed=14), layer="conv", targets=[target], torch7_ties=False)
    assert model.seen == [True] and during_target == [False]
    assert not torch._C._is_torch_function_mode_enabled()
    with pytest.raises(RuntimeError, match="inside the forward"):
        explain(_Probe(fail=True).eval(), _input(seed=14), layer="conv", targets=[1], torch7_ties=False)
    assert not torch._C._is_torch_function_mode_enabled()
    explain(model, _input(seed=14), layer="conv", targets=[1], guided=False)
    assert model.seen == [True, False]  # Grad-CAM alone: no mode


def _graph_net(*activations: nn.Module) -> GraphNet:
    entries = [("conv1", "Convolution", nn.Conv2d(3, 6, 3, padding=1))]
    for i, act in enumerate(activations, 2):
        entries += [(f"act{i - 1}", "ReLU" if type(act) is nn.ReLU else "Other", act),
                    (f"conv{i}", "Convolution", nn.Conv2d(6, 6, 3, padding=1))]
    entries += [("pool", "Pooling", nn.AdaptiveAvgPool2d(1)), ("flat", "Flatten", nn.Flatten()),
                ("fc", "InnerProduct", nn.Linear(6, 3))]
    return GraphNet.from_modules(entries, InputSpec("data", 3, None, None)).eval()


def test_a_caffe_style_net_of_modules_runs_without_the_mode():
    """A GraphNet of convolutions and nn.ReLU: no torch call is watched (the modules alone switch)."""
    torch.manual_seed(15)
    net = _graph_net(nn.ReLU(), nn.ReLU(inplace=True))
    watched: list[bool] = []
    net.layers[0].register_forward_hook(lambda *_: watched.append(torch._C._is_torch_function_mode_enabled()))
    e = explain(net, _input(seed=16), layer="conv2", targets=[0], torch7_ties=False)
    assert watched == [False] and e.unguided == ()
    theirs = _reference(net, _input(seed=16), [0], patch={"relu": "relu"})
    _close(e.guided, theirs)


def test_a_caffe_style_net_with_leaky_relu_and_bnll():
    """Caffe's ReLU with a negative slope (nn.LeakyReLU) is guided (through the mode); BNLL is named."""
    torch.manual_seed(17)
    net = _graph_net(nn.LeakyReLU(0.1), nn.ReLU())
    e = explain(net, _input(seed=18), layer="conv2", targets=[2], torch7_ties=False)
    theirs = _reference(net, _input(seed=18), [2], patch={"relu": "relu", "leaky_relu": "leaky_0.1"})
    _close(e.guided, theirs)
    assert e.unguided == ()
    net = _graph_net(BNLL(), nn.ReLU())
    e, said = _with_warning(lambda: explain(net, _input(seed=18), layer="conv2", targets=[2], torch7_ties=False))
    assert e.unguided == ("Caffe BNLL",) and len(said) == 1


# --- the front ends say it once -------------------------------------------------------------------


def write_elu_net(folder) -> tuple[str, str]:
    """A small Caffe net with an ELU (an activation guided backprop has no rule for) and a ReLU:
    (prototxt, caffemodel) for 3 x 32 x 32 inputs and 5 classes."""
    import numpy as np
    from caffe_writer import write_caffemodel, write_prototxt

    rng = np.random.default_rng(0)

    def conv(name, bottom, cin, cout):
        return {"name": name, "type": "Convolution", "bottom": [bottom], "top": [name],
                "convolution_param": {"num_output": cout, "pad": 1, "kernel_size": 3},
                "blobs": [rng.standard_normal((cout, cin, 3, 3), dtype=np.float32) * np.float32(0.3),
                          rng.uniform(0, 0.01, cout).astype(np.float32)]}

    layers = [
        conv("conv1", "data", 3, 4),
        {"name": "elu1", "type": "ELU", "bottom": ["conv1"], "top": ["elu1"]},
        conv("conv2", "elu1", 4, 4),
        {"name": "relu2", "type": "ReLU", "bottom": ["conv2"], "top": ["conv2"]},
        {"name": "pool", "type": "Pooling", "bottom": ["conv2"], "top": ["pool"],
         "pooling_param": {"pool": "AVE", "global_pooling": True}},
        {"name": "fc", "type": "InnerProduct", "bottom": ["pool"], "top": ["fc"],
         "inner_product_param": {"num_output": 5},
         "blobs": [rng.standard_normal((5, 4), dtype=np.float32), np.zeros(5, dtype=np.float32)]},
        {"name": "prob", "type": "Softmax", "bottom": ["fc"], "top": ["prob"]},
    ]
    proto = write_prototxt(folder / "elu.prototxt", layers, input_shape=(1, 3, 32, 32))
    model = write_caffemodel(folder / "elu.caffemodel", layers)
    return str(proto), str(model)


def test_the_cli_says_it_once_on_stderr(tmp_path):
    import shutil

    import cli_runner
    from conftest import ROOT

    proto, model = write_elu_net(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(ROOT / "images" / "cat_dog.jpg", images / name)
    cli = cli_runner.shared()
    for source, batch in ((images / "a.jpg", "1"), (images, "1"), (images, "2")):
        out = tmp_path / f"out_{batch}_{source.name}"
        result = cli.run("classification.py", "-proto_file", proto, "-model_file", model, "-input_sz", "32",
                         "-label", "2", "-input_image_path", str(source), "-batch_size", batch,
                         "-layer_name", "conv2", "-out_path", f"{out}/", timeout=180)
        assert result.returncode == 0, result.stderr
        lines = result.stderr.splitlines()
        assert lines == ["warning: guided backprop has no rule for torch.nn.functional.elu in this model: the "
                         "gradient passes through unguided there, so the guided images are partly plain backprop"]
        assert any(p.name.startswith("classify_gb_") for p in out.rglob("*.png"))
