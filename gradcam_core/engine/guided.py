"""Guided backprop's ReLUs: every ``nn.ReLU`` of a model routed, for one call, through a ReLU whose backward
can be switched between the plain rule and the guided rule ``dx = dy * [x > 0] * [dy > 0]``."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class GuideSwitch:
    """Which backward rule the switchable ReLUs of one ``explain`` call apply (read at backward time)."""

    __slots__ = ("guided",)

    def __init__(self) -> None:
        self.guided = False


class _SwitchableReLU(torch.autograd.Function):
    """ReLU whose backward is plain (``dy * [y > 0]``) or guided (``dy * [y > 0] * [dy > 0]``).

    The mask uses the output: y > 0 exactly where the input x > 0, as GuidedBackpropReLU tested.
    The plain rule is PyTorch's own ReLU backward (``threshold_backward``); the guided one rectifies
    that result in place (the same values as masking ``relu(dy)``, one tensor fewer). The forward
    takes ``ctx`` (no ``setup_context``): ``apply`` then skips binding the arguments through
    ``inspect.signature`` at every call.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, switch: GuideSwitch) -> torch.Tensor:  # type: ignore[override]
        y = torch.relu(x)
        ctx.save_for_backward(y)
        ctx.switch = switch
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        dx = torch.ops.aten.threshold_backward(dy, y, 0)
        if ctx.switch.guided:
            dx.clamp_min_(0)
        return dx, None


class _SwitchableReLUInPlace(torch.autograd.Function):
    """:class:`_SwitchableReLU` rectifying its input in place, for ``nn.ReLU(inplace=True)``: what
    the module itself did (a module before it may rely on its stored output being the rectified one,
    as with loadcaffe's ``nn.ReLU(true)``), with no second pass and no new tensor."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, switch: GuideSwitch) -> torch.Tensor:  # type: ignore[override]
        x.relu_()
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.switch = switch
        return x

    backward = _SwitchableReLU.backward


@contextlib.contextmanager
def switchable_relus(model: nn.Module, switch: GuideSwitch) -> Iterator[None]:
    """Route every ``nn.ReLU`` of ``model`` through :class:`_SwitchableReLU` for the duration.

    Nothing is copied and nothing stays changed (undone also on errors): each ReLU's ``forward`` is
    shadowed by an instance attribute, in place where the module was in place. Functional ``F.relu``
    calls inside a model's ``forward`` are not seen; Caffe and Torch7 models use modules.
    """
    relus = [m for m in model.modules() if type(m) is nn.ReLU and "forward" not in vars(m)]

    def switchable(x: torch.Tensor) -> torch.Tensor:
        return _SwitchableReLU.apply(x, switch)

    def switchable_in_place(x: torch.Tensor) -> torch.Tensor:
        return _SwitchableReLUInPlace.apply(x, switch)

    try:
        for m in relus:
            m.forward = switchable_in_place if m.inplace else switchable
        yield
    finally:
        for m in relus:
            vars(m).pop("forward", None)
