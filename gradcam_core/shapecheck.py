"""Checking that a network takes an input size, before any real work.

A network with fully connected layers fixes its input size (VGG-16's fc6 wants 512 x 7 x 7, so
224 x 224 images); convolutions need at least their kernel's extent. ``-input_sz`` can ask for any
size, and torch would only say "mat1 and mat2 shapes cannot be multiplied" in the middle of a run. The
check runs the network's forward on the ``meta`` device: shapes only, no data, no memory, a few
milliseconds even for VGG-16.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .errors import GradCamError


def check_input_size(net: nn.Module, shape: Sequence[int], option: str) -> torch.Size:
    """Raise :class:`GradCamError` naming ``option`` unless ``net`` takes inputs of ``shape``.

    Args:
        net: the network (its parameters stay where they are; the forward runs on meta copies).
        shape: one input's shape without the batch axis, e.g. ``(3, 224, 224)``.
        option: what the user set, for the message, e.g. ``"-input_sz 64"``.

    Returns:
        The output's shape for a batch of one.
    """
    state = {name: torch.empty_like(t, device="meta") for name, t in net.named_parameters()}
    state.update({name: torch.empty_like(t, device="meta") for name, t in net.named_buffers()})
    dtype = next(iter(state.values())).dtype if state else torch.float32
    x = torch.empty((1, *shape), dtype=dtype, device="meta")
    try:
        with torch.no_grad():
            out = torch.func.functional_call(net, state, (x,))
    except (RuntimeError, ValueError, IndexError) as e:
        size = "x".join(str(s) for s in shape[1:])
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GradCamError(f"{option}: the network cannot take a {size} image ({reason})") from None
    return out.shape
