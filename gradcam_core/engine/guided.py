"""Guided backprop's activations: every activation a model calls during one forward, as a module
(``nn.ReLU``, ...) or as a function (``F.relu``, ``torch.relu_``, ``x.relu()``, ...), routed through a
twin whose backward can be switched between the activation's own (plain) backward and the guided rule.

The guided rule, at an activation ``y = f(x)`` receiving the gradient ``dy``, is the activation's own
backward applied to the positive part of that gradient::

    dx = f'(x) * max(dy, 0)

* ReLU:       ``dx = dy * [x > 0] * [dy > 0]`` - Springenberg et al.'s rule, as the original's
  GuidedBackpropReLU computed it;
* ReLU6, Hardtanh: ``dx = dy * [lo < x < hi] * [dy > 0]`` (PyTorch passes no gradient where they clip;
  ReLU6 is lo = 0, hi = 6);
* Leaky ReLU: ``dx = max(dy, 0) * (1 if x > 0 else negative_slope)``; PReLU the same with its learnt
  slope per channel;
* Hardswish:  ``dx = max(dy, 0) * (0 if x < -3, x / 3 + 1 / 2 if -3 <= x <= 3, 1 if x > 3)``;
* SiLU:       ``dx = max(dy, 0) * s(x) * (1 + x * (1 - s(x)))``, s the logistic sigmoid;
* GELU:       ``dx = max(dy, 0) * (Phi(x) + x * phi(x))`` (or the derivative of the tanh approximation
  for ``approximate="tanh"``).

For ReLU and ReLU6 this is the rule's two masks (the forward's ``f'(x)`` and the backward's ``dy > 0``).
For the smooth activations the forward mask becomes the true local slope, so a unit passes positive
signal in proportion to how much it responds to its input; where the activation decreases (Hardswish for
-3 <= x < -1.5, SiLU below about -1.28, GELU below about -0.75: slopes of at most 0.5 in size) its
result is negative; a negative leaky slope makes it negative too. ``f'`` is PyTorch's own backward
kernel for the activation (``threshold_backward``, ``hardtanh_backward``, ``leaky_relu_backward``,
``hardswish_backward``, ``silu_backward``, ``gelu_backward``; PReLU's ``where(x > 0, g, a * g)``), fed
``max(dy, 0)``; in plain mode it is fed ``dy``, i.e. exactly the activation's ordinary backward.

How calls are seen (:func:`switchable_activations`, for the forward only): a
:class:`torch.overrides.TorchFunctionMode` (:class:`GuidedActivations`) sees every torch function the
forward calls and switches the activations among them, where a gradient can flow through them (grad
mode on, an input requiring grad), in place where they were in place; every other call passes
through untouched (one dictionary lookup). A module's ``forward`` calls the same functions
(``nn.ReLU`` calls ``F.relu``, ``nn.LeakyReLU`` ``F.leaky_relu``), so modules need nothing more; the
common ones (``nn.ReLU``, ...) take a shorter path, their ``forward`` shadowed for the call by the
switchable twin itself. A model made only of modules known to call no activation function themselves
(the package's Caffe and Torch7 nets) runs without the mode: its activations are all such modules.
The model is not copied; nothing stays changed.

Gates are not activations on the signal path: ``sigmoid``, ``hardsigmoid`` (squeeze-and-excitation
blocks), ``tanh`` (LSTM cells) and every other op keep their plain backward, silently. Activations the
rule does not know (ELU, SELU, CELU, Mish, Softplus, RReLU, Threshold, GLU, LogSigmoid, Softsign and the
shrinks) keep their plain backward too, and are named in :attr:`GuidedActivations.unguided`, as are
TorchScript submodules holding activations (their calls run in TorchScript, which the mode does not see)
and modules that name themselves an ``unguided_activation`` (Caffe's BNLL).
Not seen at all: an activation written out in elementary ops (``x * torch.sigmoid(x)``, an ONNX export's
SiLU and GELU), and calls from compiled C++ code.
"""
from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_aten = torch.ops.aten
_F = torch.nn.functional
_nn = torch._C._nn


class GuideSwitch:
    """Which backward rule the switchable activations of one ``explain`` call apply (read at backward time).

    ``watch`` (set during the forward, once the chosen layer's output is made): the activations run
    from then on are watched; in a plain backward each watched one that the guided rule would have
    left unchanged, bit for bit, counts itself in ``unchanged``. (Only for backwards without
    ``is_grads_batched``: the test reads a value.)
    """

    __slots__ = ("guided", "watch", "unchanged")

    def __init__(self) -> None:
        self.guided = False
        self.watch = False
        self.unchanged = 0


def _clamp_changes(grad: torch.Tensor) -> bool:
    """Whether the guided rule's ``clamp_min(0)`` could change ``grad``'s bits: any entry with its sign
    bit set (-0.0 and a negative NaN counted too)."""
    return bool(torch.signbit(grad).any())


class _SwitchableReLU(torch.autograd.Function):
    """ReLU whose backward is plain (``dy * [y > 0]``) or guided (``dy * [y > 0] * [dy > 0]``).

    The mask uses the output: y > 0 exactly where the input x > 0, as GuidedBackpropReLU tested.
    The plain rule is PyTorch's own ReLU backward (``threshold_backward``); the guided one rectifies
    that result in place (the same values as masking ``relu(dy)``, one tensor fewer). The forward
    takes ``ctx`` (no ``setup_context``): ``apply`` then skips binding the arguments through
    ``inspect.signature`` at every call.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, switch: GuideSwitch) -> torch.Tensor:
        y = torch.relu(x)
        ctx.save_for_backward(y)
        ctx.switch = switch
        ctx.watched = switch.watch
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        (y,) = ctx.saved_tensors
        dx = torch.ops.aten.threshold_backward(dy, y, 0)
        switch = ctx.switch
        if switch.guided:
            dx.clamp_min_(0)
        elif ctx.watched and not _clamp_changes(dx):
            switch.unchanged += 1
        return dx, None


class _SwitchableReLUInPlace(torch.autograd.Function):
    """:class:`_SwitchableReLU` rectifying its input in place, for ``nn.ReLU(inplace=True)`` and
    ``F.relu(x, inplace=True)``: what the call itself did (a module before it may rely on its stored
    output being the rectified one, as with loadcaffe's ``nn.ReLU(true)``), with no second pass and no
    new tensor."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, switch: GuideSwitch) -> torch.Tensor:
        x.relu_()
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.switch = switch
        ctx.watched = switch.watch
        return x

    backward = _SwitchableReLU.backward


# f' of an activation as PyTorch's backward kernel: (saves the output?, (gradient, saved) -> gradient
# w.r.t. the input). The clipping ones need only their output (lo < y < hi exactly where lo < x < hi);
# the others their input.
_Kernel = tuple[bool, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def _hardtanh(lo: float, hi: float) -> _Kernel:
    return True, lambda g, y: _aten.hardtanh_backward(g, y, lo, hi)


def _leaky(slope: float) -> _Kernel:
    return False, lambda g, x: _aten.leaky_relu_backward(g, x, slope, False)


def _gelu(approximate: str) -> _Kernel:
    return False, lambda g, x: _aten.gelu_backward(g, x, approximate=approximate)


def _prelu(weight: torch.Tensor, dims: int) -> _Kernel:
    # torch.prelu broadcasts a 1-D weight over axis 1 (the channels); its backward is this where()
    if weight.dim() != dims and dims > 1:
        weight = weight.reshape([1, weight.numel()] + [1] * (dims - 2))
    return False, lambda g, x: torch.where(x > 0, g, weight * g)


_HARDSWISH: _Kernel = (False, lambda g, x: _aten.hardswish_backward(g, x))
_SILU: _Kernel = (False, lambda g, x: _aten.silu_backward(g, x))


class _SwitchableActivation(torch.autograd.Function):
    """One activation call: the call itself as its forward (in place where it is), backward
    ``f'(x) * dy`` (plain) or ``f'(x) * max(dy, 0)`` (guided) with PyTorch's kernel for ``f'``.

    An in-place call whose backward needs its input (Hardswish, SiLU, Leaky ReLU) keeps a copy of the
    input for the backward, as PyTorch's own autograd does for such an op.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor], kernel: _Kernel,
                in_place: bool, switch: GuideSwitch) -> torch.Tensor:
        saves_output, slope = kernel
        saved = x if saves_output or not in_place else x.clone()
        y = run(x)
        if in_place:
            ctx.mark_dirty(x)
        ctx.save_for_backward(y if saves_output else saved)
        ctx.rule = (slope, switch)
        ctx.watched = switch.watch
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        (saved,) = ctx.saved_tensors
        slope, switch = ctx.rule
        if not switch.guided and ctx.watched and not _clamp_changes(dy):
            switch.unchanged += 1
        return slope(dy.clamp_min(0) if switch.guided else dy, saved), None, None, None, None


SWITCHABLE_FUNCTIONS: tuple[type[torch.autograd.Function], ...] = (
    _SwitchableReLU, _SwitchableReLUInPlace, _SwitchableActivation)
"""The autograd functions whose backward the switch steers (the only ones whose guided and plain
backwards differ)."""


# --- the functions guided backprop sees ------------------------------------------------------------
# A parser binds a call's arguments as the function does: (input, in place?, kernel), kernel None for
# ReLU (its own Functions). It raises TypeError for arguments it does not read (an ``out=``): the
# call then runs as it is and is reported.
_Parsed = tuple[torch.Tensor, bool, _Kernel | None]
_Parse = Callable[..., _Parsed]


def _relu(input: torch.Tensor, inplace: bool = False) -> _Parsed:
    return input, inplace, None


def _relu_pure(input: torch.Tensor) -> _Parsed:
    return input, False, None


def _relu_(input: torch.Tensor) -> _Parsed:
    return input, True, None


def _relu6(input: torch.Tensor, inplace: bool = False) -> _Parsed:
    return input, inplace, _hardtanh(0.0, 6.0)


def _relu6_pure(input: torch.Tensor) -> _Parsed:
    return input, False, _hardtanh(0.0, 6.0)


def _relu6_(input: torch.Tensor) -> _Parsed:
    return input, True, _hardtanh(0.0, 6.0)


def _hardtanh_f(input: torch.Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> _Parsed:
    return input, inplace, _hardtanh(min_val, max_val)


def _hardtanh_pure(input: torch.Tensor, min_val: float = -1.0, max_val: float = 1.0) -> _Parsed:
    return input, False, _hardtanh(min_val, max_val)


def _hardtanh_(input: torch.Tensor, min_val: float = -1.0, max_val: float = 1.0) -> _Parsed:
    return input, True, _hardtanh(min_val, max_val)


def _leaky_f(input: torch.Tensor, negative_slope: float = 0.01, inplace: bool = False) -> _Parsed:
    return input, inplace, _leaky(negative_slope)


def _leaky_pure(input: torch.Tensor, negative_slope: float = 0.01) -> _Parsed:
    return input, False, _leaky(negative_slope)


def _leaky_(input: torch.Tensor, negative_slope: float = 0.01) -> _Parsed:
    return input, True, _leaky(negative_slope)


def _hardswish_f(input: torch.Tensor, inplace: bool = False) -> _Parsed:
    return input, inplace, _HARDSWISH


def _hardswish_pure(input: torch.Tensor) -> _Parsed:
    return input, False, _HARDSWISH


def _hardswish_(input: torch.Tensor) -> _Parsed:
    return input, True, _HARDSWISH


def _silu_f(input: torch.Tensor, inplace: bool = False) -> _Parsed:
    return input, inplace, _SILU


def _silu_pure(input: torch.Tensor) -> _Parsed:
    return input, False, _SILU


def _silu_(input: torch.Tensor) -> _Parsed:
    return input, True, _SILU


def _gelu_pure(input: torch.Tensor, approximate: str = "none") -> _Parsed:
    return input, False, _gelu(approximate)


def _gelu_(input: torch.Tensor, approximate: str = "none") -> _Parsed:
    return input, True, _gelu(approximate)


def _prelu_f(input: torch.Tensor, weight: torch.Tensor) -> _Parsed:
    if weight.requires_grad:  # a slope that is itself explained: its gradient would be lost
        raise TypeError("a weight that requires grad")
    return input, False, _prelu(weight, input.dim())


_FUNCTIONS: dict[Any, tuple[str, _Parse | None]] = {}
"""Each function guided backprop knows -> (its name in messages, its parser; None: an activation the rule
does not know, which passes its plain gradient and is reported). Functions, ``torch.*`` builtins,
``Tensor`` methods and ``torch.ops.aten`` ops (an exported graph's)."""


def _known(name: str, parse: _Parse | None, *funcs: Any) -> None:
    for f in funcs:
        _FUNCTIONS[f] = (f"torch.nn.functional.{name}", parse)


def _ops(*names: str) -> list[Any]:
    """The aten ops (packet and default overload) of these names that this torch has."""
    found = [getattr(_aten, n) for n in names if hasattr(_aten, n)]
    return found + [p.default for p in found]


_known("relu", _relu, _F.relu)
_known("relu", _relu_pure, torch.relu, torch.Tensor.relu, *_ops("relu"))
_known("relu", _relu_, torch.relu_, torch.Tensor.relu_, *_ops("relu_"))  # F.relu_ is torch.relu_
_known("relu6", _relu6, _F.relu6)
_known("relu6", _relu6_pure, _nn.relu6, *_ops("relu6"))
_known("relu6", _relu6_, _nn.relu6_, *_ops("relu6_"))
_known("hardtanh", _hardtanh_f, _F.hardtanh)
_known("hardtanh", _hardtanh_pure, _nn.hardtanh, *_ops("hardtanh"))
_known("hardtanh", _hardtanh_, _nn.hardtanh_, *_ops("hardtanh_"))  # F.hardtanh_
_known("leaky_relu", _leaky_f, _F.leaky_relu)
_known("leaky_relu", _leaky_pure, _nn.leaky_relu, *_ops("leaky_relu"))
_known("leaky_relu", _leaky_, _nn.leaky_relu_, *_ops("leaky_relu_"))  # F.leaky_relu_
_known("hardswish", _hardswish_f, _F.hardswish)
_known("hardswish", _hardswish_pure, _nn.hardswish, *_ops("hardswish"))
_known("hardswish", _hardswish_, _nn.hardswish_, *_ops("hardswish_"))
_known("silu", _silu_f, _F.silu)
_known("silu", _silu_pure, _nn.silu, *_ops("silu"))
_known("silu", _silu_, _nn.silu_, *_ops("silu_"))
_known("gelu", _gelu_pure, _nn.gelu, *_ops("gelu"))  # F.gelu is torch._C._nn.gelu
_known("gelu", _gelu_, *[getattr(_nn, n) for n in ("gelu_",) if hasattr(_nn, n)], *_ops("gelu_"))
_known("prelu", _prelu_f, torch.prelu, torch.Tensor.prelu, *_ops("prelu"))  # F.prelu is torch.prelu
# activations the rule does not know (gates - sigmoid, hardsigmoid, tanh - are not listed: they are
# not activations on the signal path)
_known("elu", None, _F.elu, _nn.elu, _nn.elu_, *_ops("elu", "elu_"))
_known("selu", None, _F.selu, torch.selu, torch.selu_, *_ops("selu", "selu_"))
_known("celu", None, _F.celu, torch.celu, torch.celu_, *_ops("celu", "celu_"))
_known("mish", None, _F.mish, _nn.mish, _nn.mish_, *_ops("mish", "mish_"))
_known("softplus", None, _F.softplus, *_ops("softplus"))
_known("rrelu", None, _F.rrelu, torch.rrelu, torch.rrelu_, *_ops("rrelu", "rrelu_"))
_known("threshold", None, _F.threshold, torch.threshold, torch.threshold_, *_ops("threshold", "threshold_"))
_known("glu", None, _F.glu, *_ops("glu"))
_known("logsigmoid", None, _F.logsigmoid, *_ops("log_sigmoid"))
_known("softsign", None, _F.softsign)
_known("tanhshrink", None, _F.tanhshrink)
_known("hardshrink", None, _F.hardshrink, torch.Tensor.hardshrink, *_ops("hardshrink"))
_known("softshrink", None, _F.softshrink, *_ops("softshrink"))

# The common activation modules take a direct path: their ``forward`` shadowed for the call (exact types;
# subclasses and every other module reach the same rules through the mode, a little slower).
_MODULE_KERNELS: dict[type, Callable[[Any], _Kernel]] = {
    nn.ReLU6: lambda m: _hardtanh(m.min_val, m.max_val),
    nn.Hardswish: lambda m: _HARDSWISH,
    nn.SiLU: lambda m: _SILU,
    nn.GELU: lambda m: _gelu(m.approximate),
}
_SHADOWED: tuple[type, ...] = (nn.ReLU, *_MODULE_KERNELS)

GUIDED_ACTIVATIONS: tuple[type, ...] = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.PReLU, nn.Hardswish,
                                        nn.SiLU, nn.GELU)
"""The activation modules guided backprop changes (and their subclasses calling the same functions)."""

# TorchScript ops of activations (guided or not): a scripted module holding one is reported
_SCRIPTED = re.compile(
    r"aten::(relu|relu6|hardtanh|leaky_relu|prelu|hardswish|silu|gelu|elu|selu|celu|mish|softplus|rrelu"
    r"|threshold|glu|log_sigmoid|softsign|tanhshrink|hardshrink|softshrink)_?\(")


class GuidedActivations(TorchFunctionMode):
    """The torch-function mode of one guided forward: every activation call through its switchable
    twin (``switch.guided`` picks the rule at backward time; see the module docstring).

    ``unguided`` names, in order of appearance, the activations whose plain gradient passes through:
    functions the rule does not know (``"torch.nn.functional.elu"``), after the names it starts with
    (:func:`switchable_activations`: the TorchScript submodules holding activations).
    """

    def __init__(self, switch: GuideSwitch, unguided: list[str] | None = None) -> None:
        super().__init__()
        self.switch = switch
        self.unguided: dict[str, None] = dict.fromkeys(unguided or ())

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        try:
            known = _FUNCTIONS.get(func)
        except TypeError:  # an unhashable callable: not an activation
            known = None
        if known is None or not torch.is_grad_enabled():
            return func(*args, **kwargs)
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor) or not x.requires_grad:  # no gradient flows through it
            return func(*args, **kwargs)
        name, parse = known
        if parse is None:
            self.unguided[name] = None
            return func(*args, **kwargs)
        try:
            _, in_place, kernel = parse(*args, **kwargs)
        except TypeError:  # arguments the rule does not read (out=, a slope requiring grad): as it is
            self.unguided[name] = None
            return func(*args, **kwargs)
        if kernel is None:
            return (_SwitchableReLUInPlace if in_place else _SwitchableReLU).apply(x, self.switch)
        rest = args[1:]
        params = {k: v for k, v in kwargs.items() if k != "input"}
        return _SwitchableActivation.apply(x, lambda t: func(t, *rest, **params), kernel, in_place, self.switch)


@contextlib.contextmanager
def switchable_activations(model: nn.Module, switch: GuideSwitch) -> Iterator[GuidedActivations]:
    """Route every activation the block calls (``model``'s forward: modules and functions alike)
    through its switchable twin; yields the :class:`GuidedActivations` mode, whose ``unguided`` lists
    what could not be guided. Enter it for the forward only: the recorded graph keeps the switchable
    backwards.

    Nothing is copied and nothing stays changed (undone also on errors). The modules of the common
    types (``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardswish``, ``nn.SiLU``, ``nn.GELU``; exact types) get their
    switchable twin directly: their ``forward`` shadowed by an instance attribute (in place where the
    module was in place; the forwards are the modules' own, bit for bit), removed afterwards; one whose
    ``forward`` is already shadowed is left to the mode. The activation a shadowed module computes
    inside its twin runs with grad mode off, so the mode lets it pass: no call is switched twice.

    The mode is entered unless every module of ``model`` is known to call no activation function
    itself: a shadowed one, a torch.nn layer that calls none (convolutions, pooling, norms, ...), or a
    class that says so with ``calls_activation_functions = False`` in its own body (the package's
    Caffe and Torch7 nets: :class:`~gradcam_core.nets.graph.GraphNet` and its layers). Such a model
    then runs exactly as with the modules alone, without the mode's cost on every call.
    """
    chosen, watched, fixed = _survey(model)

    def switchable_relu(x: torch.Tensor) -> torch.Tensor:
        return _SwitchableReLU.apply(x, switch)

    def switchable_relu_in_place(x: torch.Tensor) -> torch.Tensor:
        return _SwitchableReLUInPlace.apply(x, switch)

    def switchable(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        run = functools.partial(type(module).forward, module)
        kernel = _MODULE_KERNELS[type(module)](module)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return _SwitchableActivation.apply(x, run, kernel, bool(getattr(module, "inplace", False)), switch)

        return forward

    mode = GuidedActivations(switch, fixed)
    try:
        for m in chosen:
            # instance attributes shadowing the class's forward, removed below
            if type(m) is nn.ReLU:
                m.forward = switchable_relu_in_place if m.inplace else switchable_relu  # type: ignore[method-assign, assignment]
            else:
                m.forward = switchable(m)
        with mode if watched else contextlib.nullcontext():
            yield mode
    finally:
        for m in chosen:
            vars(m).pop("forward", None)


_NO_ACTIVATION_CALLS: frozenset[type] = frozenset({
    nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.Softmax, nn.LogSoftmax, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh,
    nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d,
    nn.Upsample, nn.PixelShuffle,
})
"""torch.nn layers whose forward calls no activation function (exact types)."""


def _survey(model: nn.Module) -> tuple[list[nn.Module], bool, list[str]]:
    """One walk over ``model``'s modules: (the modules to shadow, whether the mode is needed, the
    modules guided backprop cannot change: TorchScript submodules holding activations and modules of a
    class naming itself an ``unguided_activation``, as messages name them)."""
    chosen: list[nn.Module] = []
    watched = False
    fixed: list[str] = []
    script_roots: list[str] = []
    for name, m in model.named_modules():
        kind = type(m)
        if kind in _SHADOWED and "forward" not in vars(m):
            chosen.append(m)
        elif kind not in _NO_ACTIVATION_CALLS and kind.__dict__.get("calls_activation_functions") is not False:
            watched = True
        unknown = kind.__dict__.get("unguided_activation")  # a module computing an activation the rule lacks
        if isinstance(unknown, str) and unknown not in fixed:
            fixed.append(unknown)
        if isinstance(m, torch.jit.ScriptModule) and not any(name.startswith(p) for p in script_roots):
            script_roots.append(f"{name}." if name else "")
            if _holds_activations(m):
                fixed.append(f"TorchScript module {name!r}")
    return chosen, watched, fixed


def _holds_activations(module: torch.jit.ScriptModule) -> bool:
    """Whether a TorchScript module's code (its submodules' inlined) calls an activation."""
    try:
        code = str(module.inlined_graph)
    except Exception:  # noqa: BLE001 - no readable graph: it may hold activations
        return True
    return _SCRIPTED.search(code) is not None
