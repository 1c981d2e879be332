"""The model's parameters: frozen for one call (the backward builds no weight gradients), and where an
input must go to meet them."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad for the call (no weight gradients); restored on exit, also on errors."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def model_input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``images`` on the device of the model's first parameter, in its precision where it is a floating-point
    one (a model without parameters: ``images`` as they are)."""
    p = next(model.parameters(), None)
    if p is None:
        return images
    return images.to(device=p.device, dtype=p.dtype if p.is_floating_point() else images.dtype)
