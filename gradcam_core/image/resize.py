"""``image.scale`` of Torch7's ``image`` package, exactly: box average when shrinking, align-corners
linear when enlarging, rows first, float32 weights. No Pillow here: the engine scales its maps with it."""
from __future__ import annotations

import functools

import numpy as np
import torch


def scale(t: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``image.scale(t, width, height)`` (mode "bilinear"): (..., h, w) -> (..., height, width).

    Separable, rows (width) first, then columns, each 1-D resize from n to m samples being:
    m > n: align-corners linear interpolation; m < n: the exact area average of the input over each
    output pixel's footprint (a box filter: every input pixel counts, so shrinking a photo does not
    alias); m == n: a copy. Weights are float32 as in the C code, and the float32 / float64 arithmetic
    follows the C loop's order, so results agree with the original bit for bit (checked against its
    dumps). Each pass gathers K (2 when enlarging, about n/m + 2 when shrinking) weighted rows per output
    row; the taps are cached per (n, m). Leading dimensions are batch/channel dimensions. Returns a new
    tensor of t's dtype.
    """
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"scale: expected a float32 or float64 tensor, got {t.dtype}")
    if t.dim() < 2 or width < 1 or height < 1:
        raise ValueError(f"scale: cannot scale shape {tuple(t.shape)} to {width}x{height}")
    # Both passes resize dimension -2 of a contiguous tensor, where gathering whole rows is fast.
    columns = t.transpose(-1, -2).clone(memory_format=torch.contiguous_format)  # (..., w, h)
    wide = _resize_rows(columns, width).transpose(-1, -2).contiguous()  # (..., h, width)
    return _resize_rows(wide, height)


def _resize_rows(x: torch.Tensor, m: int) -> torch.Tensor:
    """Resize dimension -2 of x to m samples (x itself when it already has m)."""
    n = x.shape[-2]
    if m > n:
        taps = _weighted_taps(x, *_enlarge_taps(n, m))
        return taps[..., 0, :, :] + taps[..., 1, :, :]
    if m < n:
        index, weight, total = _shrink_taps(n, m)
        mean = _box_sum(x, index, weight) / total.to(x.device)[:, None]  # float32, as C
        return mean.to(x.dtype)
    return x


def _weighted_taps(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(..., K, m, w): tap k of output row i is weight[k, i] * x[..., index[k, i], :], in x's dtype
    (C multiplies its float32 weight in float32 for float tensors, in double for double tensors)."""
    rows = x.index_select(-2, index.flatten().to(x.device)).unflatten(-2, tuple(index.shape))
    return rows * weight.to(device=x.device, dtype=x.dtype)[:, :, None]


def _box_sum(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(..., m, w): the K weighted taps of each output row summed in order into a float32 accumulator,
    rounding after every addition as the C loop does (its accumulator is a float even for double
    tensors; the additions are then done in double). One tap at a time: no (K, m, w) intermediate."""
    index, weight = index.to(x.device), weight.to(device=x.device, dtype=x.dtype)
    acc = (x.index_select(-2, index[0]) * weight[0, :, None]).float()
    for k in range(1, index.shape[0]):
        acc = (acc + x.index_select(-2, index[k]) * weight[k, :, None]).float()
    return acc


@functools.lru_cache(maxsize=64)
def _enlarge_taps(n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Align-corners taps for n -> m > n: index (2, m) = (j, j + 1), float32 weight (2, m) = (1 - f, f),
    j + f being output i's position i * (n - 1) / (m - 1) computed in float32 as in C."""
    j = np.zeros(m, dtype=np.int64)
    frac = np.zeros(m, dtype=np.float32)
    if n > 1:  # (n == 1: every output copies the single input)
        step = np.float32(n - 1) / np.float32(m - 1)
        pos = np.arange(m - 1, dtype=np.float32) * step
        j[:-1] = pos.astype(np.int64)
        frac[:-1] = pos - j[:-1].astype(np.float32)
        j[-1] = n - 1  # the last output copies the last input
    index = np.stack([j, np.minimum(j + 1, n - 1)])
    weight = np.stack([np.float32(1) - frac, frac])
    return torch.from_numpy(index), torch.from_numpy(weight)


@functools.lru_cache(maxsize=64)
def _shrink_taps(n: int, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Box-filter taps for n -> m < n: index (K, m), float32 weight (K, m), float32 weight sum (m,).

    Output i covers [i*s, (i+1)*s), s = n/m in float32: its first pixel weighs 1 - frac(i*s), whole
    pixels 1, the last one frac((i+1)*s). Taps are listed in the order the C loop adds them; outputs
    with fewer than K taps are padded with weight-0 taps.
    """
    step = np.float32(n) / np.float32(m)
    rows: list[list[tuple[int, np.float32]]] = []
    start, start_frac = 0, np.float32(0)
    for i in range(m):
        end_pos = np.float32(i + 1) * step
        end = int(end_pos)
        end_frac = end_pos - np.float32(end)
        row = [(start, np.float32(1) - start_frac)]
        row += [(j, np.float32(1)) for j in range(start + 1, min(end, n))]
        if end < n:
            row.append((end, end_frac))
        rows.append(row)
        start, start_frac = end, end_frac
    index = np.zeros((max(map(len, rows)), m), dtype=np.int64)
    weight = np.zeros(index.shape, dtype=np.float32)
    total = np.zeros(m, dtype=np.float32)
    for i, row in enumerate(rows):
        for k, (j, w) in enumerate(row):
            index[k, i], weight[k, i] = j, w
            total[i] += w  # float32 running sum, like C's n
    return torch.from_numpy(index), torch.from_numpy(weight), torch.from_numpy(total)
