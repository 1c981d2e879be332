"""Guided backprop's activations: every ``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardswish``, ``nn.SiLU`` and
``nn.GELU`` of a model routed, for one call, through a twin whose backward can be switched between the
activation's own (plain) backward and the guided rule.

The guided rule, at an activation ``y = f(x)`` receiving the gradient ``dy``, is the activation's own
backward applied to the positive part of that gradient::

    dx = f'(x) * max(dy, 0)

* ReLU:      ``dx = dy * [x > 0] * [dy > 0]`` - Springenberg et al.'s rule, as the original's
  GuidedBackpropReLU computed it;
* ReLU6:     ``dx = dy * [0 < x < 6] * [dy > 0]`` (PyTorch's ReLU6 passes no gradient where it clips);
* Hardswish: ``dx = max(dy, 0) * (0 if x < -3, x / 3 + 1 / 2 if -3 <= x <= 3, 1 if x > 3)``;
* SiLU:      ``dx = max(dy, 0) * s(x) * (1 + x * (1 - s(x)))``, s the logistic sigmoid;
* GELU:      ``dx = max(dy, 0) * (Phi(x) + x * phi(x))`` (or the derivative of the tanh approximation
  when the module has ``approximate="tanh"``).

For ReLU and ReLU6 this is the rule's two masks (the forward's ``f'(x)`` and the backward's ``dy > 0``).
For the smooth activations the forward mask becomes the true local slope, so a unit passes positive
signal in proportion to how much it responds to its input; where the activation decreases (Hardswish for
-3 <= x < -1.5, SiLU below about -1.28, GELU below about -0.75: slopes of at most 0.5 in size) its
result is negative. ``f'`` is PyTorch's own backward kernel for the
module (``hardtanh_backward``, ``hardswish_backward``, ``silu_backward``, ``gelu_backward``), fed
``max(dy, 0)``; in plain mode it is fed ``dy``, i.e. exactly the module's ordinary backward.

Gates are not activations on the signal path: ``nn.Sigmoid``, ``nn.Hardsigmoid`` (squeeze-and-excitation
blocks), ``nn.Tanh`` and every other module keep their plain backward. Only modules of exactly these types are seen
(not subclasses), and only modules: ``F.relu`` or ``torch.relu`` called inside a model's ``forward`` keep
the plain rule. Among torchvision's classification models that concerns googlenet and inception_v3 (every
ReLU is functional: guided backprop is then plain backprop) and the densenets (the one ReLU after the
last norm layer, before the pooling).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

_aten = torch.ops.aten


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
    """:class:`_SwitchableReLU` rectifying its input in place, for ``nn.ReLU(inplace=True)``: what
    the module itself did (a module before it may rely on its stored output being the rectified one,
    as with loadcaffe's ``nn.ReLU(true)``), with no second pass and no new tensor."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, switch: GuideSwitch) -> torch.Tensor:
        x.relu_()
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.switch = switch
        ctx.watched = switch.watch
        return x

    backward = _SwitchableReLU.backward


# The backward kernel of each activation: (gradient, saved tensor, module) -> gradient w.r.t. the input.
# ReLU6 (a Hardtanh) needs only its output (min < y < max exactly where min < x < max); the smooth ones
# need their input.
_Backward = Callable[[torch.Tensor, torch.Tensor, nn.Module], torch.Tensor]
_BACKWARDS: dict[type, tuple[bool, _Backward]] = {  # type -> (saves the output?, backward)
    nn.ReLU6: (True, lambda g, y, m: _aten.hardtanh_backward(g, y, m.min_val, m.max_val)),
    nn.Hardswish: (False, lambda g, x, m: _aten.hardswish_backward(g, x)),
    nn.SiLU: (False, lambda g, x, m: _aten.silu_backward(g, x)),
    nn.GELU: (False, lambda g, x, m: _aten.gelu_backward(g, x, approximate=m.approximate)),
}

GUIDED_ACTIVATIONS: tuple[type, ...] = (nn.ReLU, *_BACKWARDS)
"""The module types whose backward guided backprop changes (exact types, not subclasses)."""


class _SwitchableActivation(torch.autograd.Function):
    """Any activation of :data:`_BACKWARDS`: the module's own forward (in place where the module is),
    backward ``f'(x) * dy`` (plain) or ``f'(x) * max(dy, 0)`` (guided) with PyTorch's kernel for ``f'``.

    An in-place module whose backward needs its input (Hardswish, SiLU) keeps a copy of the input for
    the backward, as PyTorch's own autograd does for such an op.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, module: nn.Module, switch: GuideSwitch) -> torch.Tensor:
        saves_output, backward = _BACKWARDS[type(module)]
        in_place = bool(getattr(module, "inplace", False))
        saved = x if saves_output or not in_place else x.clone()
        y = type(module).forward(module, x)
        if in_place:
            ctx.mark_dirty(x)
        ctx.save_for_backward(y if saves_output else saved)
        ctx.rule = (backward, module, switch)
        ctx.watched = switch.watch
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        (saved,) = ctx.saved_tensors
        backward, module, switch = ctx.rule
        if not switch.guided and ctx.watched and not _clamp_changes(dy):
            switch.unchanged += 1
        return backward(dy.clamp_min(0) if switch.guided else dy, saved, module), None, None


def _clamp_changes(grad: torch.Tensor) -> bool:
    """Whether the guided rule's ``clamp_min(0)`` could change ``grad``'s bits: any entry with its sign
    bit set (-0.0 and a negative NaN counted too)."""
    return bool(torch.signbit(grad).any())


@contextlib.contextmanager
def switchable_activations(model: nn.Module, switch: GuideSwitch) -> Iterator[None]:
    """Route every activation of :data:`GUIDED_ACTIVATIONS` in ``model`` through its switchable twin for
    the duration (``switch.guided`` picks the rule at backward time; see the module docstring).

    Nothing is copied and nothing stays changed (undone also on errors): each module's ``forward`` is
    shadowed by an instance attribute, in place where the module was in place; forwards are the
    modules' own, bit for bit. A module whose ``forward`` is already shadowed is left alone.
    Functional calls (``F.relu`` inside a model's ``forward``) are not seen; Caffe and Torch7 models use
    modules.
    """
    chosen = [m for m in model.modules() if type(m) in GUIDED_ACTIVATIONS and "forward" not in vars(m)]

    def switchable_relu(x: torch.Tensor) -> torch.Tensor:
        return _SwitchableReLU.apply(x, switch)

    def switchable_relu_in_place(x: torch.Tensor) -> torch.Tensor:
        return _SwitchableReLUInPlace.apply(x, switch)

    def switchable(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(x: torch.Tensor) -> torch.Tensor:
            return _SwitchableActivation.apply(x, module, switch)

        return forward

    try:
        for m in chosen:
            # instance attributes shadowing the class's forward, removed below
            if type(m) is nn.ReLU:
                m.forward = switchable_relu_in_place if m.inplace else switchable_relu  # type: ignore[method-assign, assignment]
            else:
                m.forward = switchable(m)
        yield
    finally:
        for m in chosen:
            vars(m).pop("forward", None)
