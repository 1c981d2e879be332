"""What the perturbation methods (Score-CAM, Ablation-CAM) share: target scores with the chosen layer's
output replaced by a batch of other activations."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .base import LayerContext


class _Replace:
    """A forward hook that returns ``value`` instead of the layer's output (the layer still runs)."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value

    def __call__(self, _m: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.value.to(dtype=output.dtype)


def score_replaced(ctx: LayerContext, activations: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, h, w) replacements of image ``n``'s layer output -> (B, K) target scores, no gradients.

    First the model runs on image ``n`` alone and the batch appears at the layer (the layers below it
    run once). A model whose later layers refer back to the input's batch size (a concatenation with
    an earlier output, a reshape to a fixed batch) fails that way or gives another batch size; it
    then runs on B copies of the image.
    """
    b = activations.shape[0]
    targets = ctx.pinned_targets(n)
    image = ctx.image[n : n + 1]
    for inputs in (image, image.expand(b, *image.shape[1:])):
        handle = ctx.layer_module.register_forward_hook(_Replace(activations))
        try:
            with torch.no_grad():
                out = ctx.model(inputs)
                scores = torch.stack([t(out) for t in targets], dim=1)
        except RuntimeError:
            if inputs.shape[0] == b:
                raise
            continue
        finally:
            handle.remove()
        if scores.shape[0] == b:
            return scores
    raise RuntimeError("the model's output does not follow the batch of replaced activations")
