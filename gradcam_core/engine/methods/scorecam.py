"""Score-CAM (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
Networks", CVPR Workshops 2020), with the masks pytorch-grad-cam makes, so that maps compare.

For an input ``X`` (C_in x H x W), the layer's channels ``A^c`` (h x w, c = 1..C) and a target score
``y_k``:

    U^c   = Up(A^c)                                  A^c bilinearly upsampled to H x W, corners aligned
    M^c   = (U^c - min U^c) / (max U^c - min U^c + 1e-8)   the mask, in [0, 1]
    s^c_k = y_k(X * M^c)                             the score of X with every input channel times M^c
    w^c_k = exp(s^c_k) / sum_c' exp(s^c'_k)          softmax over the C channels
    L_k   = ReLU(sum_c w^c_k A^c)

``y_k`` is the target as it chose on ``X`` itself (a "predicted class" target keeps that class on the
masked images). A constant channel (``max A^c = min A^c``) has the mask 0: every such channel gives the
same blank image ``X * 0``, scored once (pytorch-grad-cam's rounding can leave noise in the mask of a
constant non-zero channel, divided by ``1e-8``; here it is exactly 0, and never NaN, in any precision).

One masked forward serves all K targets; the masks of a batch are made when it runs (not all C at
once), and the batch size follows the free memory (:func:`.perturb.batch_size`: at most 64 images on
the CPU, at most ``batch_size``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import CamMethod, LayerContext, register
from .perturb import OutputBytes, batch_size, forward_bytes, progress_bar

MASK_EPS = 1e-8
"""pytorch-grad-cam's epsilon in the mask's min-max denominator."""


@register
class ScoreCAM(CamMethod):
    name = "scorecam"
    summary = "Score-CAM: channels weighted by the softmax of the scores of the input masked by each channel"
    uses_gradients = False

    def channel_weights(self, ctx: LayerContext) -> torch.Tensor:
        """(N, K, C): the softmax over channels of the masked inputs' scores."""
        acts = ctx.activations
        n_img, c = acts.shape[:2]
        flat = acts.reshape(n_img, c, -1)
        constant = flat.amax(dim=2) == flat.amin(dim=2)  # (N, C)
        forwards = [int((~constant[n]).sum()) + int(constant[n].any()) for n in range(n_img)]
        weights = torch.empty((n_img, len(ctx.targets), c), dtype=acts.dtype, device=acts.device)
        size: int | None = None
        with progress_bar(ctx, sum(forwards), "Score-CAM") as bar:
            for n in range(n_img):
                scores, size = self._channel_scores(ctx, n, constant[n], size, bar)  # (C, K)
                weights[n] = torch.softmax(scores, dim=0).t()
        return weights

    def _channel_scores(self, ctx: LayerContext, n: int, constant: torch.Tensor, size: int | None,
                        bar: Any) -> tuple[torch.Tensor, int]:
        """(C, K) the K scores of image ``n`` masked by each channel; the batch size used."""
        acts = ctx.activations[n]  # (C, h, w)
        image = ctx.image[n]  # (C_in, H, W)
        live = torch.nonzero(~constant).flatten().tolist()
        scores = torch.empty((acts.shape[0], len(ctx.targets)), dtype=acts.dtype, device=acts.device)
        if size is None:
            # the first forward, of one image, measures what a batch costs
            with OutputBytes(ctx.model) as measured:
                if bool(constant.any()):
                    first = self._blank(ctx, n, scores, constant)
                else:
                    scores[live[:1]] = ctx.score_images(self._masked(image, acts[live[:1]]), n)
                    first, live = 1, live[1:]
            per_item = forward_bytes(measured.largest) + (image[:1].numel() + image.numel()) * image.element_size()
            size = batch_size(ctx, per_item, acts.shape[0], whole_model=True)  # C: later images' too
        else:
            first = self._blank(ctx, n, scores, constant) if bool(constant.any()) else 0
        bar.update(first)
        for start in range(0, len(live), size):
            chunk = live[start : start + size]
            scores[chunk] = ctx.score_images(self._masked(image, acts[chunk]), n)
            bar.update(len(chunk))
        return scores, size

    @staticmethod
    def _blank(ctx: LayerContext, n: int, scores: torch.Tensor, constant: torch.Tensor) -> int:
        """Score the blank image once for every constant channel; 1 forward."""
        scores[constant] = ctx.score_images(ctx.image[n : n + 1] * 0, n)
        return 1

    @staticmethod
    def _masked(image: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """image (C_in, H, W), channels (B, h, w) non-constant -> (B, C_in, H, W): image * M^c."""
        up = F.interpolate(channels[None], size=image.shape[-2:], mode="bilinear", align_corners=True)[0]
        flat = up.reshape(up.shape[0], -1)
        lo = flat.amin(dim=1)[:, None, None]
        hi = flat.amax(dim=1)[:, None, None]
        den = hi - lo + MASK_EPS
        den = torch.where(den == 0, torch.ones_like(den), den)  # 1e-8 is 0 in float16: a flat map stays 0
        masks = (up - lo) / den
        return image[None] * masks[:, None]
