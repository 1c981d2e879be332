"""Targets: what the explanation is *for*.

A target is any callable mapping the model's output to one score per image, shape (N,). The engine
follows the gradient of that score, exactly as the Lua scripts seeded their backward pass:

* classification: a one-hot ``dOut`` on the pre-softmax logits == the gradient of one logit
  (:class:`ClassTarget`);
* VQA: a one-hot on the answer scores (``gradcam_core.tasks.vqa``);
* captioning: ones on the caption words' log-probabilities == the gradient of their sum
  (``gradcam_core.tasks.caption``);
* semantic segmentation: the sum of one class's logits over a region of pixels, by default the pixels
  predicted as that class (:class:`SegmentationTarget`).

:func:`score_of` is the index-or-predicted choice the classification and VQA targets share.

Methods that score perturbed inputs (Score-CAM, Ablation-CAM) need each target as it chose on the
unperturbed image: a target that picks "the predicted class" must keep that class on a masked copy.
A target may define ``pin(output, n) -> Target`` for that (:func:`pin`), and a target that scores a
region of pixels ``mirrored() -> Target`` for ``aug_smooth``'s mirrored copies (:func:`mirror`);
:class:`Negated` is the counterfactual of any target.
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


@dataclass(frozen=True, eq=False)
class SegmentationTarget:
    """The summed logit of one class over a region, per image, for a segmentation model's output
    (N, classes, H, W): ``y = sum_{(i,j) in M} output[n, index, i, j]`` (the target of
    pytorch-grad-cam's ``SemanticSegmentationTarget``).

    Args:
        index: the 0-based class (output channel).
        mask: the region M: (H, W), the same for every image, or (N, H, W), one per image; any
            non-zero value is in the region (a float mask weights the pixels). None: each image's
            pixels predicted as ``index`` (``output.argmax(1) == index``) on the output the target is
            first called with; it is fixed there, carries no gradient, and :meth:`pin` keeps it for
            perturbed copies of the image (Score-CAM, Ablation-CAM, ``aug_smooth``).
        label: how the user named this target, for error messages (e.g. ``"-label 22"``).

    A class predicted nowhere (or an empty mask) scores 0 with zero gradients: its maps are all zero.
    """

    index: int
    mask: torch.Tensor | None = None
    label: str = ""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        """output (N, C, H, W) -> (N,): the class's logits summed over the region."""
        if output.dim() != 4:
            raise GradCamError(f"a segmentation target needs a (N, classes, H, W) output, got {tuple(output.shape)}")
        n_out = output.shape[1]
        if not 0 <= self.index < n_out:
            what = self.label or f"class index {self.index}"
            raise GradCamError(f"{what} is out of range: the model has {n_out} classes")
        return (output[:, self.index] * self.region(output)).sum(dim=(1, 2))

    def region(self, output: torch.Tensor) -> torch.Tensor:
        """The region as weights broadcastable to (N, H, W) for ``output`` (N, C, H, W), detached."""
        if self.mask is None:
            return (output.detach().argmax(dim=1) == self.index).to(output.dtype)
        mask = self.mask.detach()
        if tuple(mask.shape[-2:]) != tuple(output.shape[-2:]) or mask.dim() not in (2, 3) or (
                mask.dim() == 3 and mask.shape[0] not in (1, output.shape[0])):
            raise GradCamError(f"the segmentation mask is {tuple(mask.shape)}, the model output's pixels are "
                               f"{tuple(output.shape[-2:])} (N = {output.shape[0]})")
        return mask.to(device=output.device, dtype=output.dtype)

    def pin(self, output: torch.Tensor, n: int) -> SegmentationTarget:
        """This target with image ``n``'s region of ``output`` (N, C, H, W) made explicit (H, W)."""
        if self.mask is not None and self.mask.dim() == 2:
            return self
        region = self.region(output)
        return SegmentationTarget(self.index, region[n] if region.shape[0] > 1 else region[0], self.label)

    def mirrored(self) -> SegmentationTarget:
        """This target for a left-right mirrored input: its region mirrored (see :func:`mirror`)."""
        return self if self.mask is None else SegmentationTarget(self.index, self.mask.flip(-1), self.label)


@dataclass(frozen=True)
class Negated:
    """The counterfactual of a target (the Grad-CAM paper's counterfactual explanation): its score
    negated, so a map shows the regions whose removal would raise the target's score."""

    target: Target

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return -self.target(output)

    def pin(self, output: torch.Tensor, n: int) -> Negated:
        return Negated(pin(self.target, output, n))

    def mirrored(self) -> Negated:
        return Negated(mirror(self.target))


def pin(target: Target, output: torch.Tensor, n: int) -> Target:
    """``target`` fixed to what it chose for image ``n`` of the unperturbed ``output`` (N, ...): the
    returned target scores outputs (B, ...) of B perturbed copies of that image. Targets without a
    ``pin`` method are returned as they are (they choose nothing from the output)."""
    method = getattr(target, "pin", None)
    return target if method is None else method(output, n)


def mirror(target: Target) -> Target:
    """``target`` for the left-right mirrored input (``aug_smooth``'s flipped copies): a target that
    scores a region of the output's pixels (:class:`SegmentationTarget`) defines ``mirrored()``; any
    other target is returned as it is (it scores no position)."""
    method = getattr(target, "mirrored", None)
    return target if method is None else method()


def score_of(scores: torch.Tensor, index: int | None) -> torch.Tensor:
    """scores (N, K) -> (N,): each row's entry ``index`` (0-based, in range), or for None each row's
    maximum (the first one on ties, as Torch's max). The choice of entry carries no gradient."""
    if index is None:
        idx = scores.detach().argmax(dim=1)
    else:
        idx = torch.full((scores.shape[0],), index, dtype=torch.long, device=scores.device)
    return scores.gather(1, idx[:, None])[:, 0]

