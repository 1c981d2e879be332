"""Targets: what the explanation is *for*.

A target is any callable mapping the model's output to one score per image, shape (N,). The engine
follows the gradient of that score, exactly as the Lua scripts seeded their backward pass:

* classification: a one-hot ``dOut`` on the pre-softmax logits == the gradient of one logit
  (:class:`ClassTarget`);
* VQA: a one-hot on the answer scores (``gradcam_core.tasks.vqa``);
* captioning: ones on the caption words' log-probabilities == the gradient of their sum
  (``gradcam_core.tasks.caption``).

:func:`score_of` is the index-or-predicted choice the classification and VQA targets share.

Methods that score perturbed inputs (Score-CAM, Ablation-CAM) need each target as it chose on the
unperturbed image: a target that picks "the predicted class" must keep that class on a masked copy.
A target may define ``pin(output, n) -> Target`` for that (:func:`pin`); :class:`Negated` is the
counterfactual of any target.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import GradCamError

Target = Callable[[Any], torch.Tensor]
"""Maps the model output (N, ...) to scores (N,) whose gradient is explained (a detector's output is a
list of N dicts: :class:`~gradcam_core.tasks.detect.BoxScoreTarget`)."""


@dataclass(frozen=True)
class ClassTarget:
    """The score of one output unit (a class logit), per image.

    Args:
        index: 0-based position in the flattened per-image output, or ``None`` for each image's
            highest-scoring unit (the predicted class).
        label: how the user named this target, for error messages (e.g. ``"-label 1001"``).
    """

    index: int | None
    label: str = ""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        """output (N, ...) -> (N,): the chosen unit of each image's flattened output."""
        flat = output.reshape(output.shape[0], -1)
        n_out = flat.shape[1]
        if self.index is not None and not 0 <= self.index < n_out:
            what = self.label or f"class index {self.index}"
            raise GradCamError(f"{what} is out of range: the model has {n_out} outputs")
        return score_of(flat, self.index)

    def pin(self, output: torch.Tensor, n: int) -> ClassTarget:
        """This target as it chose for image ``n`` of ``output``: the predicted class made explicit."""
        if self.index is not None:
            return self
        return ClassTarget(int(output[n : n + 1].reshape(1, -1).argmax(dim=1)), self.label)


@dataclass(frozen=True)
class Negated:
    """The counterfactual of a target (the Grad-CAM paper's counterfactual explanation): its score
    negated, so a map shows the regions whose removal would raise the target's score."""

    target: Target

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return -self.target(output)

    def pin(self, output: torch.Tensor, n: int) -> Negated:
        return Negated(pin(self.target, output, n))


def pin(target: Target, output: torch.Tensor, n: int) -> Target:
    """``target`` fixed to what it chose for image ``n`` of the unperturbed ``output`` (N, ...): the
    returned target scores outputs (B, ...) of B perturbed copies of that image. Targets without a
    ``pin`` method are returned as they are (they choose nothing from the output)."""
    method = getattr(target, "pin", None)
    return target if method is None else method(output, n)


def score_of(scores: torch.Tensor, index: int | None) -> torch.Tensor:
    """scores (N, K) -> (N,): each row's entry ``index`` (0-based, in range), or for None each row's
    maximum (the first one on ties, as Torch's max). The choice of entry carries no gradient."""
    if index is None:
        idx = scores.detach().argmax(dim=1)
    else:
        idx = torch.full((scores.shape[0],), index, dtype=torch.long, device=scores.device)
    return scores.gather(1, idx[:, None])[:, 0]

