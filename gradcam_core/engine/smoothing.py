"""``aug_smooth``: maps averaged over augmented copies of the input (pytorch-grad-cam's test-time
augmentation, ``BaseCAM.forward_augmentation_smoothing`` with its default ttach transforms).

The input ``x`` (N, C, H, W), as given to the model (preprocessed), is augmented six ways: mirrored
left-right or not, times each brightness factor ``f`` in (0.9, 1, 1.1)::

    x_{m,f} = f * flip^m(x),   m in {0, 1}
    L       = 1/6 sum_{m,f} flip^m(L[x_{m,f}])

``L[x]`` is a method's map (N, K, h, w) at the layer's resolution (``cam_raw``, after its ReLU) for
input ``x``; mirrored maps are mirrored back before the mean, which is then scaled to the input size
as every map is. Each augmented input is explained with the same targets, fixed to what they chose on
the unaugmented input (a "predicted class" target keeps that class; :func:`~.targets.pin`; a target
without ``pin`` is used as it is); a mirrored copy's targets are mirrored (:func:`~.targets.mirror`: a
segmentation target's region of pixels flips with the image).

Where this differs from pytorch-grad-cam: it averages each augmentation's map after its resize to the
input and its min-max normalisation (each copy counts equally whatever its scale); here the raw maps
are averaged (their mean map, the factor 1.1 copy weighing in with its larger values), so the
result keeps the map's units as ``aug_smooth=False`` does, and it is pytorch-grad-cam's
``aug_smooth`` map with its scaling step removed (which the tests check). pytorch-grad-cam's targets
for ``targets=None`` are chosen again on every copy, and its principal components (Eigen-CAM) keep
LAPACK's sign on each (ours are oriented: :func:`~.methods.first_component`). Mirroring at the layer's
resolution equals mirroring the resized map (both resizes are mirror-symmetric). Guided backprop, the
scores, the activations and the channel weights of the result are the unaugmented input's.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..image.resize import scale
from .targets import Target, mirror, pin

if TYPE_CHECKING:
    from .explanation import Explanation, LayerRef, _Options
    from .methods import CamMethod

    ExplainOnce = Callable[[nn.Module, torch.Tensor, LayerRef, list[Target], Sequence[CamMethod], _Options],
                           dict[str, Explanation]]

FLIPS = (False, True)
"""Mirrored left-right or not (ttach's ``HorizontalFlip``)."""
FACTORS = (0.9, 1.0, 1.1)
"""The brightness factors multiplying the input (ttach's ``Multiply``, pytorch-grad-cam's default)."""


def explain_augmented(explain_once: ExplainOnce, model: nn.Module, image: torch.Tensor, layer: LayerRef,
                      targets: list[Target], methods: Sequence[CamMethod], options: _Options
                      ) -> dict[str, Explanation]:
    """``explain_once`` on the six augmented copies of ``image`` (N, C, H, W), its maps averaged as
    the module docstring says; guided backprop only on the unaugmented copy. {method name: explanation}."""
    plain = explain_once(model, image, layer, targets, methods, options)
    first = next(iter(plain.values()))
    fixed = [_pin_batch(t, first.scores) for t in targets]
    mirrored = [mirror(t) for t in fixed]
    sums = {name: e.cam_raw.clone() for name, e in plain.items()}
    unguided = replace(options, guided=False)
    for flip in FLIPS:
        for factor in FACTORS:
            if not flip and factor == 1.0:
                continue  # the unaugmented input, done above
            x = image.flip(-1) if flip else image
            x = x * factor if factor != 1.0 else x
            for name, e in explain_once(model, x, layer, mirrored if flip else fixed, methods, unguided).items():
                sums[name] += e.cam_raw.flip(-1) if flip else e.cam_raw
    count = len(FLIPS) * len(FACTORS)
    results = {}
    for name, e in plain.items():
        cam_raw = sums[name] / count
        cam = scale(cam_raw, image.shape[-1], image.shape[-2])
        results[name] = replace(e, cam_raw=cam_raw, cam=cam,
                                guided_cam=None if e.guided is None else e.guided * cam[:, :, None])
    return results


@dataclass(frozen=True)
class _PerImage:
    """A target fixed per image: image ``n`` of a batch (N, ...) is scored by ``targets[n]``."""

    targets: tuple[Target, ...]

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return torch.cat([t(output[n : n + 1]) for n, t in enumerate(self.targets)])

    def mirrored(self) -> _PerImage:
        return _PerImage(tuple(mirror(t) for t in self.targets))


def _pin_batch(target: Target, output: torch.Tensor) -> Target:
    """``target`` as it chose on each image of ``output`` (N, ...); itself where it chooses nothing."""
    pinned = tuple(pin(target, output, n) for n in range(output.shape[0]))
    return target if all(p is target or p == target for p in pinned) else _PerImage(pinned)
