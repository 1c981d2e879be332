"""``image.scale`` of Torch7's ``image`` package, exactly: box average when shrinking, align-corners
linear when enlarging, rows first, float32 weights. No Pillow here: the engine scales its maps with it."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

MAX_ROW_PASS: int = 1 << 26
"""Largest row pass (input height x output width, per channel) :func:`scale` makes when it must enlarge
the rows of an image that it then shrinks in height: :func:`check_scalable` refuses more. Every other
pass is bounded by the input's or the output's size."""

_STRIP_BYTES = 1 << 25  # the rows pass of a tall, narrow image is computed this many bytes at a time


def scale(t: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``image.scale(t, width, height)`` (mode "bilinear"): (..., h, w) -> (..., height, width).

    Separable, rows (width) first, then columns, each 1-D resize from n to m samples being:
    m > n: align-corners linear interpolation; m < n: the exact area average of the input over each
    output pixel's footprint (a box filter: every input pixel counts, so shrinking a photo does not
    alias); m == n: a copy. Weights are float32 as in the C code, and the float32 / float64 arithmetic
    follows the C loop's order, so results agree with the original bit for bit (checked against its
    dumps). Leading dimensions are batch/channel dimensions. Returns a new tensor of t's dtype, on
    t's device (computed on the CPU, no gradient).

    Work and memory are bounded by the input and the output: a box sum never builds a table of
    (outputs x taps); a row pass whose result would exceed both (a narrow, very tall image) is computed
    a strip of rows at a time, each strip shrunk at once; a 1-pixel-wide image skips the row pass (it
    is a copy of that pixel). Only the time of that strip-wise row pass grows with height x width:
    :func:`check_scalable` bounds it.
    """
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"scale: expected a float32 or float64 tensor, got {t.dtype}")
    if t.dim() < 2 or width < 1 or height < 1:
        raise ValueError(f"scale: cannot scale shape {tuple(t.shape)} to {width}x{height}")
    *lead, h, w = t.shape
    x = t.detach().to("cpu").reshape(-1, h, w).numpy()  # (B, h, w), a view when t is a contiguous CPU tensor
    if w == 1 and width > 1:  # the row pass copies the single pixel: columns first gives the same bits
        out = np.broadcast_to(_resize_axis1(x, height), (x.shape[0], height, width))
    elif 1 < w < width and h > height:  # a row pass larger than the input: strips, each shrunk at once
        out = _enlarge_rows_then_shrink(x, width, height)
    else:
        out = _resize_axis1(_resize_rows(x, width), height)
    result = torch.from_numpy(np.array(out, dtype=x.dtype, copy=True, order="C"))
    return result.reshape(*lead, height, width).to(t.device)


def row_pass_size(w: int, h: int, width: int, height: int) -> int:
    """Samples per channel that :func:`scale` of an h x w image to height x width computes in its row
    pass beyond the input's and the output's size: h * width for a narrow (1 < w < width), tall
    (h > height) image, else 0."""
    return h * width if 1 < w < width and h > height else 0


def check_scalable(w: int, h: int, width: int, height: int) -> str | None:
    """Why a w x h image cannot be scaled to width x height in bounded time (None when it can)."""
    if row_pass_size(w, h, width, height) > MAX_ROW_PASS:
        return (f"{w}x{h} is too tall for its width to scale to {width}x{height}: an image narrower than "
                f"{width} pixels (and wider than 1) may be {MAX_ROW_PASS // width} pixels tall at most")
    return None


# ------------------------------------------------------------------------------------- the passes

def _resize_rows(x: np.ndarray, m: int) -> np.ndarray:
    """(B, h, w) -> (B, h, m): each row resized to m samples."""
    # Resized as columns of the transposed image: the passes then gather whole contiguous rows.
    columns = np.ascontiguousarray(x.transpose(0, 2, 1))  # (B, w, h)
    return np.ascontiguousarray(_resize_axis1(columns, m).transpose(0, 2, 1))


def _resize_axis1(x: np.ndarray, m: int) -> np.ndarray:
    """Resize axis 1 of x (B, n, w) to m samples (x itself when it already has m)."""
    n = x.shape[1]
    if m > n:
        j, j1, w0, w1 = _enlarge_taps(n, m)
        wt = x.dtype.type  # C multiplies its float32 weight in float32 for float, in double for double
        return x[:, j, :] * w0.astype(wt)[:, None] + x[:, j1, :] * w1.astype(wt)[:, None]
    if m < n:
        return _box_mean(x, _shrink_taps(n, m), 0, m, 0)
    return x


def _enlarge_rows_then_shrink(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """The rows pass (B, h, w) -> (B, h, width) then the column shrink to (B, height, width), the rows
    pass computed a strip of input rows at a time (each strip holds whole output rows' footprints)."""
    b, h, _ = x.shape
    taps = _shrink_taps(h, height)
    out = np.empty((b, height, width), dtype=x.dtype)
    rows_per_strip = max(1, _STRIP_BYTES // (b * width * x.itemsize))
    i = 0
    while i < height:
        first = int(taps.start[i])
        k = i + 1  # outputs i..k-1 whose footprints fit in the strip (at least one)
        while k < height and taps.start[k] + taps.length[k] - first <= rows_per_strip:
            k += 1
        stop = int(taps.start[k - 1] + taps.length[k - 1])
        strip = _resize_rows(x[:, first:stop, :], width)
        out[:, i:k, :] = _box_mean(strip, taps, i, k, first)
        i = k
    return out


# ---------------------------------------------------------------------------------------- box sums

@dataclass(frozen=True)
class _ShrinkTaps:
    """Box-filter taps of n -> m < n. Output i covers [i*s, (i+1)*s), s = n/m in float32: its taps are
    the input samples start[i] .. start[i] + length[i] - 1, weighing first[i], then 1 each, then last[i]
    when has_last[i]; total[i] is the float32 running sum of those weights, as C's n."""

    start: np.ndarray  # (m,) int64
    length: np.ndarray  # (m,) int64, >= 1
    first: np.ndarray  # (m,) float32
    last: np.ndarray  # (m,) float32 (0 without a last tap)
    has_last: np.ndarray  # (m,) bool
    total: np.ndarray  # (m,) float32

    def weight(self, k: int) -> np.ndarray:
        """(m,) float32 weight of tap k of every output (0 past an output's taps)."""
        return np.where(k == 0, self.first,
                        np.where(k < self.length - self.has_last, np.float32(1),
                                 np.where(k < self.length, self.last, np.float32(0)))).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _shrink_taps(n: int, m: int) -> _ShrinkTaps:
    step = np.float32(n) / np.float32(m)
    end_pos = np.arange(1, m + 1, dtype=np.float32) * step  # float32, as C's (di + 1) * scale
    end = end_pos.astype(np.int64)
    end_frac = (end_pos - end.astype(np.float32)).astype(np.float32)
    start = np.minimum(np.concatenate([[0], end[:-1]]), n - 1)
    first = (np.float32(1) - np.concatenate([[np.float32(0)], end_frac[:-1]])).astype(np.float32)
    has_last = end < n
    length = np.maximum(np.minimum(end, n) - start, 1) + has_last
    last = np.where(has_last, end_frac, np.float32(0)).astype(np.float32)
    taps = _ShrinkTaps(start, length, first, last, has_last, np.zeros(m, dtype=np.float32))
    total = taps.first.copy()
    if int(length.max()) <= m:  # few taps: tap by tap over all outputs
        for k in range(1, int(length.max())):
            total = (total + taps.weight(k)).astype(np.float32)
    else:  # long footprints: output by output, a float32 running sum along each
        for i in range(m):
            total[i] = np.cumsum(_chain_weights(taps, i), dtype=np.float32)[-1]
    return _ShrinkTaps(start, length, first, last, has_last, total)


def _chain_weights(taps: _ShrinkTaps, i: int) -> np.ndarray:
    wts = np.ones(int(taps.length[i]), dtype=np.float32)
    wts[0] = taps.first[i]
    if taps.has_last[i]:
        wts[-1] = taps.last[i]
    return wts


def _box_mean(x: np.ndarray, taps: _ShrinkTaps, lo: int, hi: int, offset: int) -> np.ndarray:
    """(B, hi - lo, w): outputs lo..hi-1 of the box mean along axis 1 of x, whose row 0 is input sample
    ``offset``. Each output's taps are summed in order into a float32 accumulator, rounding after every
    addition as the C loop does (its accumulator is a float even for double tensors, whose additions
    are then done in double), then divided by its float32 weight sum; the result in x's dtype."""
    start = taps.start[lo:hi] - offset
    length = taps.length[lo:hi]
    most = int(length.max())
    wt = x.dtype.type
    if x.dtype == np.float32 and most > hi - lo:
        # Long footprints, few outputs: one sequential float32 running sum (cumsum) along each.
        acc = np.empty((x.shape[0], hi - lo, x.shape[2]), dtype=np.float32)
        for i in range(hi - lo):
            seg = x[:, start[i]:start[i] + length[i], :].astype(np.float32, copy=True)
            seg[:, 0, :] *= taps.first[lo + i]
            if taps.has_last[lo + i]:
                seg[:, -1, :] *= taps.last[lo + i]
            acc[:, i, :] = np.cumsum(seg, axis=1, dtype=np.float32)[:, -1, :]
    else:
        # Tap k of every output at once (weight 0 past an output's own taps, as C adds nothing).
        limit = x.shape[1] - 1
        # In-place adds compute in the wider of the two dtypes, then round into the float32 accumulator.
        acc = (x[:, start, :] * taps.first[lo:hi].astype(wt)[:, None]).astype(np.float32)
        whole = int((length - taps.has_last[lo:hi]).min())  # taps 1..whole-1 weigh 1 in every output
        for k in range(1, whole):
            np.add(acc, x[:, start + k, :], out=acc, casting="same_kind")  # (x * 1 is x)
        for k in range(max(whole, 1), most):
            index = np.minimum(start + k, limit)
            np.add(acc, x[:, index, :] * taps.weight(k)[lo:hi].astype(wt)[:, None], out=acc, casting="same_kind")
    return (acc / taps.total[lo:hi][:, None]).astype(x.dtype)


@functools.lru_cache(maxsize=64)
def _enlarge_taps(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Align-corners taps for n -> m > n: output i = w0[i] * x[j[i]] + w1[i] * x[j1[i]], j1 = j + 1,
    float32 weights (1 - f, f), j + f being output i's position i * (n - 1) / (m - 1) computed in float32
    as in C."""
    j = np.zeros(m, dtype=np.int64)
    frac = np.zeros(m, dtype=np.float32)
    if n > 1:  # (n == 1: every output copies the single input)
        step = np.float32(n - 1) / np.float32(m - 1)
        pos = np.arange(m - 1, dtype=np.float32) * step
        j[:-1] = pos.astype(np.int64)
        frac[:-1] = pos - j[:-1].astype(np.float32)
        j[-1] = n - 1  # the last output copies the last input
    return j, np.minimum(j + 1, n - 1), (np.float32(1) - frac).astype(np.float32), frac
