"""Ablation-CAM (Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network
via Gradient-free Localization", WACV 2020), with pytorch-grad-cam's ablation value and weights.

For one image, the layer's activations ``A`` (C x h x w, channels ``A^c``) and a target score ``y_k``
of the layer's output:

    v       = 0 if min A = 0, else min A - 1e7    the ablation value (min over every channel and position)
    A_(c)   = A with every value of channel c set to v
    y_k     = y_k(A),   y^c_k = y_k(A_(c))        scores with the layer's output replaced
    w^c_k   = (y_k - y^c_k) / y_k                 the relative drop; for y_k = 0 the drop y_k - y^c_k itself
    L_k     = ReLU(sum_c w^c_k A^c)

The paper zeroes the channel; pytorch-grad-cam does too when the activations' minimum is 0 (after a
ReLU) and otherwise sets it far below every activation, as here. (Its ablation layer takes the minimum
of a batch it has already partly ablated, so in one batch its second ablated channel gets
``min A - 2e7``, the third ``min A - 3e7``, ...; here every channel gets ``v``, its value with
``batch_size=1``.) In float16, where ``min A - 1e7`` overflows, ``v`` is the type's lowest finite value.
Dividing by ``y_k`` scales image k's map by ``1 / y_k``: for ``y_k > 0`` that leaves the normalised map
as it is, for ``y_k < 0`` it flips the map's sign; a zero score has no such scale, its map is the
drops' (no NaN, no infinity). ``y_k`` is computed as the ``y^c_k`` are (the layer's output replaced by
``A`` itself), so that both round alike; a channel that already equals ``v`` everywhere changes
nothing (``w^c_k = 0``) and is not run.

The part of the model below the layer runs on the one image, once per batch of ablated copies; the
copies are as many as the free memory holds (:func:`.perturb.batch_size`), at most ``batch_size``.
"""
from __future__ import annotations

import torch

from .base import CamMethod, LayerContext, register
from .perturb import OutputBytes, batch_size, forward_bytes, progress_bar

ABLATION_OFFSET = 1e7
"""How far below the activations' minimum an ablated channel is set when that minimum is not 0."""


@register
class AblationCAM(CamMethod):
    name = "ablationcam"
    summary = "Ablation-CAM: channels weighted by the relative drop of the score when each is ablated"
    uses_gradients = False

    def channel_weights(self, ctx: LayerContext) -> torch.Tensor:
        """(N, K, C): ``(y_k - y^c_k) / y_k`` per image."""
        acts = ctx.activations
        n_img, c = acts.shape[:2]
        values = [ablation_value(acts[n]) for n in range(n_img)]
        changed = [~(acts[n] == values[n]).reshape(c, -1).all(dim=1) for n in range(n_img)]  # (C,) each
        weights = torch.empty((n_img, len(ctx.targets), c), dtype=acts.dtype, device=acts.device)
        size: int | None = None
        with progress_bar(ctx, sum(1 + int(ch.sum()) for ch in changed), "Ablation-CAM") as bar:
            for n in range(n_img):
                a = acts[n]
                if size is None:
                    # the unablated forward, on one copy, measures what a copy costs above the layer
                    with OutputBytes(ctx.model, after=ctx.layer_module) as measured:
                        y = ctx.score_activations(a[None].clone(), n)[0]  # (K,)
                    per_copy = a.numel() * a.element_size() + forward_bytes(measured.largest)
                    size = batch_size(ctx, per_copy, c, whole_model=False)
                else:
                    y = ctx.score_activations(a[None].clone(), n)[0]
                bar.update(1)
                ablated = y.expand(c, -1).clone()  # (C, K): unchanged channels keep y
                todo = torch.nonzero(changed[n]).flatten()
                for start in range(0, todo.numel(), size):
                    chunk = todo[start : start + size]
                    batch = a.expand(chunk.numel(), *a.shape).clone()
                    batch[torch.arange(chunk.numel(), device=a.device), chunk] = values[n]
                    ablated[chunk] = ctx.score_activations(batch, n)
                    bar.update(chunk.numel())
                divisor = torch.where(y == 0, torch.ones_like(y), y)
                weights[n] = ((y - ablated) / divisor).t()
        return weights


def ablation_value(a: torch.Tensor) -> float:
    """``v`` for one image's activations ``a`` (C, h, w): 0 when their minimum is 0, else the minimum
    minus :data:`ABLATION_OFFSET`, no lower than the dtype's lowest finite value."""
    lo = float(a.min())
    if lo == 0:
        return 0.0
    return max(lo - ABLATION_OFFSET, float(torch.finfo(a.dtype).min))
