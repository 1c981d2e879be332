"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci, Kasneci, "A Consistent and Efficient
Evaluation Strategy for Attribution Methods", ICML 2022).

A share of the pixels is removed in order of the map and *imputed* from their neighbours, so that the
removal leaves no sharp edges for the model to react to (the "class information leakage" of plain
masking); then the model scores the imputed image.

Symbols: ``x`` the net input (C, H, W); ``m`` the map (H, W); ``p`` a percentile; ``t_p`` the
``p``-th percentile of the map's values (numpy's linear interpolation); ``y(x)`` the target's score.

* Most relevant first (MoRF) at ``p``: the pixels with ``m >= t_p`` are imputed (the ``100 - p`` percent
  most relevant), the others kept. A good map makes the score drop fast: lower is better.
* Least relevant first (LeRF) at ``p``: the same with ``1 - m`` (maps in [0, 1]): the pixels with
  ``1 - m >= t_p(1 - m)`` (the least relevant) are imputed. A good map keeps the score: higher is better.
* The figure at ``p``: ``y(x_imputed) - y(x)``; a method's ROAD figure is the mean over the levels
  ``p = 10, 20, ..., 90``; pytorch-grad-cam's ``ROADCombined`` is ``(LeRF - MoRF) / 2``.

The imputation (the paper's noisy linear imputer): every removed pixel ``i`` takes the weighted mean
of its 8 neighbours inside the image, with weight ``1/6`` for the 4 edge neighbours and ``1/12`` for
the 4 diagonal ones, removed neighbours being unknowns themselves:

    (sum_{j in N(i)} w_ij) v_i - sum_{j in N(i), removed} w_ij v_j = sum_{j in N(i), kept} w_ij x_j

one sparse linear system per image and channel (the channels share the matrix), solved exactly
(SuperLU through SciPy), then ``noise * e`` added to each imputed value, ``e ~ N(0, 1)`` (``noise``
0.01, the paper's). When every pixel is removed the system has no unique solution: the imputed image
is ``0`` (the preprocessing's mean) plus the noise.

pytorch-grad-cam's ``ROADMostRelevantFirst`` / ``ROADLeastRelevantFirst`` (and their ``...Average``
over 10..90) compute the same figures; drawn from the same random generator in the same order
(levels outer, images inner, one ``(C, pixels)`` block of normal samples per image, channel-major),
the noise is theirs too.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .scoring import TargetSpec, as_score, images_scores, model_input

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
"""The levels ROAD averages over (the paper's and pytorch-grad-cam's)."""

NOISE = 0.01
"""The standard deviation of the noise added to imputed values (absolute, in the net input's units)."""

# (row offset, column offset, weight): edge neighbours 1/6, diagonal ones 1/12 (they sum to 1)
_NEIGHBOURS = tuple((dy, dx, 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def impute(image: torch.Tensor, keep: torch.Tensor, *, noise: float = NOISE,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """The noisy linear imputation of the pixels not in ``keep`` (see the module doc).

    Args:
        image: (C, H, W) the net input.
        keep: (H, W) bool, True where the pixel is kept.
        noise: the noise's standard deviation (0: none, no random numbers drawn).
        generator: where the noise comes from (None: torch's global generator).
    Returns:
        (C, H, W), ``image`` with the removed pixels imputed, in ``image``'s dtype.
    """
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = image.shape
    known = keep.detach().cpu().numpy().astype(bool).reshape(-1)
    values = image.detach().cpu().double().numpy().reshape(c, -1)
    removed = np.flatnonzero(~known)
    n = removed.size
    out = image.detach().cpu().clone().reshape(c, -1)
    if n == 0:
        return out.reshape(c, h, w).to(image.dtype)
    if n == h * w:
        solution = np.zeros((n, c))
    else:
        unknown_of = np.full(h * w, -1)
        unknown_of[removed] = np.arange(n)
        rows, cols = removed // w, removed % w
        diagonal = np.zeros(n)
        rhs = np.zeros((n, c))
        entries_r, entries_c, entries_v = [], [], []
        for dy, dx, weight in _NEIGHBOURS:
            r, q = rows + dy, cols + dx
            inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
            eq = np.flatnonzero(inside)
            flat = r[inside] * w + q[inside]
            diagonal[eq] += weight
            is_known = known[flat]
            rhs[eq[is_known]] += weight * values[:, flat[is_known]].T
            entries_r.append(eq[~is_known])
            entries_c.append(unknown_of[flat[~is_known]])
            entries_v.append(np.full(int((~is_known).sum()), -weight))
        entries_r.append(np.arange(n))
        entries_c.append(np.arange(n))
        entries_v.append(diagonal)
        system = csc_matrix((np.concatenate(entries_v), (np.concatenate(entries_r), np.concatenate(entries_c))),
                            shape=(n, n))
        solution = spsolve(system, rhs).reshape(n, c)
    filled = torch.from_numpy(solution).to(torch.float32).t()  # (C, n)
    if noise:
        filled = filled + noise * torch.randn((c, n), generator=generator)  # one (C, n) block: channel-major
    out[:, torch.from_numpy(removed)] = filled.to(out.dtype)
    return out.reshape(c, h, w).to(image.dtype)


def kept_pixels(cam: torch.Tensor, percentile: float, most_relevant_first: bool) -> torch.Tensor:
    """(H, W) bool: the pixels ROAD keeps at ``percentile`` (see the module doc): ``m < t_p`` for
    MoRF, ``1 - m < t_p(1 - m)`` for LeRF, ``m`` the map (H, W)."""
    values = cam.detach().cpu().to(torch.float32).numpy()
    if not most_relevant_first:
        values = np.float32(1) - values
    return torch.from_numpy(values < np.percentile(values, percentile))


def road(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Sequence[TargetSpec], *,
         most_relevant_first: bool, percentiles: Sequence[float] = PERCENTILES, noise: float = NOISE,
         generator: torch.Generator | None = None, batch_size: int = 32) -> torch.Tensor:
    """ROAD figures ``y(x_imputed) - y(x)`` at each level (see the module doc).

    Args:
        model: the classifier, in eval mode.
        images: (N, C, H, W) net inputs.
        maps: (N, H, W) the maps to evaluate, in [0, 1] for LeRF (the evaluation run divides each by
            its maximum).
        targets: N targets, one per image: an int is that class's softmax probability, a callable
            maps the output (B, ...) of B versions of the image to (B,) scores.
        most_relevant_first: MoRF (True) or LeRF (False).
        percentiles: the levels ``p``.
        noise, generator: the imputation's noise (:func:`impute`).
        batch_size: the most imputed images per forward.
    Returns:
        (N, P) float64, one figure per image and level.
    """
    n_images = images.shape[0]
    imputed = torch.empty((len(percentiles), *images.shape), dtype=images.dtype)
    for i, p in enumerate(percentiles):  # levels outer, images inner: the noise's order (module doc)
        for n in range(n_images):
            keep = kept_pixels(maps[n], p, most_relevant_first)
            imputed[i, n] = impute(images[n].cpu(), keep, noise=noise, generator=generator)
    x = model_input(model, images)
    out = torch.empty((n_images, len(percentiles)), dtype=torch.float64)
    for n in range(n_images):
        score = as_score(targets[n])

        def original(a: int, b: int, n: int = n) -> torch.Tensor:
            return x[n:n + 1]

        def versions(a: int, b: int, n: int = n) -> torch.Tensor:
            return imputed[a:b, n]

        before = images_scores(model, original, 1, score, batch_size)
        after = images_scores(model, versions, len(percentiles), score, batch_size)
        out[n] = (after - before).double()
    return out
