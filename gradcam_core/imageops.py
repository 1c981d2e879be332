"""Image I/O and image operations with the semantics of Torch7's ``image`` package and grad-cam's utils.

What the Lua original did, step by step, so that our PNGs match the ones it wrote:

* ``load_image``  = ``image.load(path)``: native channel count, ``raw * (1/255)`` in the tensor's precision.
* ``to_rgb``      = the channel handling at the top of ``utils.preprocess``.
* ``scale``       = ``image.scale(t, width, height)`` in its default "bilinear" mode, which is really
  align-corners linear when enlarging and an exact area (box) average when shrinking.
* ``preprocess``  = ``utils.preprocess``: BGR, x255, minus the Caffe VGG means, no batch dimension.
* ``to_display``  = ``image.toDisplayTensor``: one min-max over the whole tensor.
* ``to_heatmap``  = ``utils.to_heatmap``: the jet-like colour map.
* ``png_bytes`` / ``save_png`` = ``image.save``: 8-bit PNG, bytes truncated (not rounded).

Tensors are (C, H, W) unless a function says otherwise; float32 or float64 (the original's default
tensor type: float32 for classification and captioning, float64 for VQA).
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import struct
import warnings
import zlib

import numpy as np
import torch
from PIL import Image

from .errors import GradCamError
from .fileio import open_regular

__all__ = [
    "MAX_PIXELS",
    "MEAN_BGR",
    "load_image",
    "png_bytes",
    "preprocess",
    "save_png",
    "scale",
    "to_display",
    "to_heatmap",
    "to_rgb",
    "write_atomic",
]

MEAN_BGR: tuple[float, float, float] = (103.939, 116.779, 123.68)
"""Per-channel means (B, G, R) that ``utils.preprocess`` subtracts on the 0..255 scale."""

MAX_PIXELS: int = 1 << 26
"""Largest image (width x height) ``load_image`` decodes: 64 Mpx, e.g. 8192 x 8192 (768 MB as float32 RGB).
Larger headers are refused before any pixel memory is allocated (decompression bombs)."""

_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG"}  # the prefixes torch's image.load tests
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


# --------------------------------------------------------------------------------------------- loading

def load_image(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decode a JPEG or PNG file like ``image.load(path)``.

    Returns (C, H, W) in [0, 1] with the file's native channel count: 1 grey, 2 grey+alpha, 3 RGB,
    4 RGBA. Values are ``raw * (1/255)`` (``1/65535`` for 16-bit PNGs, full precision kept) computed
    in ``dtype``, exactly as the original multiplied in its default tensor type.
    Palette PNGs become RGB (RGBA when they carry transparency); CMYK JPEGs are converted to RGB.
    EXIF orientation is ignored, as libjpeg ignores it.

    Raises GradCamError (one line naming the file) for anything that is not a decodable JPEG/PNG:
    missing or unreadable file, wrong or empty content, truncated or corrupt data, oversized image.
    """
    fmt = _sniff_format(path)
    try:
        samples, max_value = _decode(path, fmt)
    except _DECODE_ERRORS as err:
        raise GradCamError(f"cannot decode image {os.fspath(path)!r}: {err}") from err
    img = torch.from_numpy(samples).permute(2, 0, 1).contiguous().to(dtype)
    return img.mul_(torch.tensor(1.0 / max_value, dtype=dtype))


def _sniff_format(path: str | os.PathLike[str]) -> str:
    """'JPEG' or 'PNG' from the file's first bytes (never from its extension)."""
    try:
        with open_regular(path) as f:  # a pipe or device is refused, never read
            head = f.read(4)
    except OSError as err:
        raise GradCamError(f"cannot read image {os.fspath(path)!r}: {err.strerror or err}") from err
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    what = "an empty file" if not head else "not a JPEG or PNG image"
    raise GradCamError(f"cannot load image {os.fspath(path)!r}: {what}")


def _decode(path: str | os.PathLike[str], fmt: str) -> tuple[np.ndarray, int]:
    """(H, W, C) integer samples and their maximum value (255 or 65535)."""
    with _open(path, fmt) as im:
        samples16 = _png16_samples(path, im)
        if samples16 is not None:
            return samples16, 65535
        if im.mode in ("I;16", "I"):  # 16-bit grey PNG: Pillow keeps all 16 bits ("I" before Pillow 10)
            return np.array(im, dtype=np.int32)[..., None], 65535
        pixels = np.array(_supported_mode(path, im))
    return (pixels[..., None] if pixels.ndim == 2 else pixels), 255


def _supported_mode(path: str | os.PathLike[str], im: Image.Image) -> Image.Image:
    """im in mode L, LA, RGB or RGBA (8 bits a sample)."""
    if im.mode == "P":  # libpng expands palettes, to RGBA when a tRNS chunk gives them transparency
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode == "1":  # 1-bit grey: libpng expands it to 0 / 255
        return im.convert("L")
    if im.mode == "CMYK":  # a real conversion; libjpeg handed C, M, Y, K on, which grad-cam took for RGBA
        return im.convert("RGB")
    if im.mode in ("L", "LA", "RGB", "RGBA"):
        return im
    raise GradCamError(f"cannot load image {os.fspath(path)!r}: unsupported image mode {im.mode}")


def _open(path: str | os.PathLike[str], fmt: str) -> Image.Image:
    """Open (header only) and refuse oversized images before any pixel is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit
        im = Image.open(path, formats=[fmt])
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise GradCamError(
            f"cannot load image {os.fspath(path)!r}: {width}x{height} exceeds the limit of {MAX_PIXELS} pixels"
        )
    return im


# Pillow decodes 16-bit colour PNGs to 8 bits, keeping each sample's high byte. The PNG unfilter step works
# on whole pixels (6 or 8 bytes here), whatever unpacker follows it, so decoding the same stream again with
# the little-endian unpacker yields the low bytes. 16-bit grey+alpha has no such unpacker; decoding it as
# 8-bit RGBA (also 4 bytes a pixel) yields its raw bytes: grey-high, grey-low, alpha-high, alpha-low.
_PNG16_LOW_BYTES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}


def _png16_samples(path: str | os.PathLike[str], im: Image.Image) -> np.ndarray | None:
    """(H, W, C) int32 samples of a 16-bit RGB, RGBA or grey+alpha PNG; None for any other image."""
    rawmode = im.tile[0][3] if im.format == "PNG" and len(im.tile) == 1 else None
    if rawmode == "LA;16B":
        raw = _decode_with_rawmode(path, "RGBA")
        return _join_bytes(raw[..., 0::2], raw[..., 1::2])
    if rawmode in _PNG16_LOW_BYTES:
        high = _decode_with_rawmode(path, rawmode)
        low = _decode_with_rawmode(path, _PNG16_LOW_BYTES[rawmode])
        return _join_bytes(high, low)
    return None


def _decode_with_rawmode(path: str | os.PathLike[str], rawmode: str) -> np.ndarray:
    with _open(path, "PNG") as im:
        codec, extents, offset, _ = im.tile[0]
        im.tile = [(codec, extents, offset, rawmode)]
        return np.array(im)


def _join_bytes(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    return (high.astype(np.int32) << 8) | low


def to_rgb(img: torch.Tensor) -> torch.Tensor:
    """(C, H, W) with C in 1..4 -> (3, H, W), as ``utils.preprocess`` prepares a loaded image.

    1 channel is replicated; grey+alpha keeps the grey, replicated (the original crashed on it);
    4 channels keep the first three (alpha dropped, no compositing); 3 channels are returned as is.
    """
    channels = img.shape[0]
    if channels in (1, 2):
        return img[:1].repeat(3, 1, 1)
    if channels in (3, 4):
        return img[:3]
    raise ValueError(f"to_rgb: expected 1 to 4 channels, got shape {tuple(img.shape)}")


# --------------------------------------------------------------------------------------------- scaling

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


# ----------------------------------------------------------------------------------------- preprocessing

def preprocess(path: str | os.PathLike[str], width: int, height: int,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``utils.preprocess(path, width, height)``: the network input, (3, height, width), no batch dim.

    load (in ``dtype``) -> RGB -> scale -> then, in float64 as the original's ``:double()``: channels
    reversed to BGR, x255, minus MEAN_BGR. Returned as ``dtype`` (the original's float32 scripts
    converted back; VQA stayed float64).
    """
    img = scale(to_rgb(load_image(path, dtype)), width, height).double()
    mean = torch.tensor(MEAN_BGR, dtype=torch.float64).view(3, 1, 1)
    return (img.flip(0) * 255.0 - mean).to(dtype)


# ------------------------------------------------------------------------------------------- rendering

def to_display(t: torch.Tensor) -> torch.Tensor:
    """``image.toDisplayTensor(t)``: one min-max over ALL elements (all channels together) -> [0, 1].

    The minimum is subtracted, then the result is divided by its maximum unless that is 0 (a constant
    tensor becomes all zeros). Same shape and dtype; computed in t's precision.
    """
    out = t - t.min()
    high = out.max()
    return out / torch.where(high != 0, high, torch.ones_like(high))


def to_heatmap(m: torch.Tensor) -> torch.Tensor:
    """``utils.to_heatmap``: a map (1, H, W) or (H, W) -> its (3, H, W) RGB colour image, in m's dtype.

    v = to_display(m); then (R, G, B) = (0, 4v, 1) up to v = 0.25, (0, 1, 2 - 4v) up to 0.5,
    (4v - 2, 1, 0) up to 0.75 and (1, 4 - 4v, 0) above. The map is continuous, so it is written as three
    clamped ramps; every ramp value is exact in float32, so this equals the original's table bit for bit.
    """
    if m.dim() == 3 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2:
        raise ValueError(f"to_heatmap: expected a (1, H, W) or (H, W) map, got shape {tuple(m.shape)}")
    v4 = 4 * to_display(m)
    red = (v4 - 2).clamp(0, 1)
    green = torch.minimum(v4, 4 - v4).clamp(0, 1)
    blue = (2 - v4).clamp(0, 1)
    return torch.stack([red, green, blue])


def png_bytes(t: torch.Tensor) -> bytes:
    """An 8-bit PNG of t, as ``image.save`` writes it: (H, W) or (1, H, W) -> grey, (3, H, W) -> RGB.

    byte = trunc(255 * clamp(x, 0, 1)) computed in t's dtype: the original cast with C's (uint8), which
    truncates, so a value of 0.999 is 254, not 255. NaN becomes 0.
    """
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"png_bytes: expected (H, W), (1, H, W) or (3, H, W), got shape {tuple(t.shape)}")
    levels = (t.detach().cpu().nan_to_num(0.0).clamp(0, 1) * 255).to(torch.uint8)  # .to() truncates
    return encode_png(levels.permute(1, 2, 0).numpy())


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG file bytes of (H, W, 1) grey or (H, W, 3) RGB uint8 pixels, encoded for speed.

    Every row uses PNG's "Sub" filter (each byte minus the same channel of the pixel to its left) and
    zlib level 1: about 10x faster than PIL's default (adaptive filters, level 6), for files 5-20%
    larger. Encoding was the largest cost of a run after the network itself (three PNGs per target).
    """
    h, w, channels = pixels.shape
    rows = np.empty((h, 1 + w * channels), dtype=np.uint8)
    rows[:, 0] = 1  # filter type 1, Sub
    flat = pixels.reshape(h, w * channels)
    rows[:, 1 : 1 + channels] = flat[:, :channels]
    np.subtract(flat[:, channels:], flat[:, :-channels], out=rows[:, 1 + channels :])  # wraps mod 256

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 0 if channels == 1 else 2, 0, 0, 0)  # 8-bit grey / RGB
    return b"".join((b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header),
                     chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)), chunk(b"IEND", b"")))


def save_png(path: str | os.PathLike[str], t: torch.Tensor) -> None:
    """Write ``png_bytes(t)`` to path atomically: a temporary file in the same folder, then os.replace,
    so an interrupted run never leaves a partial PNG. Raises GradCamError naming path on failure."""
    data = png_bytes(t)
    path = os.fspath(path)
    try:
        write_atomic(path, data)
    except OSError as err:
        raise GradCamError(f"cannot write {path!r}: {err.strerror or err}") from err


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a partial file and an interrupted write
    leaves nothing behind: the data goes to a temporary file in the same folder, renamed over ``path``
    (``os.replace``) once complete. On Linux the temporary file is unnamed while it is written
    (``O_TMPFILE``), so even SIGKILL or the OOM killer leave nothing; elsewhere it is a hidden
    ``.gradcam-*.tmp``, removed when the write fails or is interrupted. Raises OSError."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".gradcam-{secrets.token_hex(6)}.tmp")  # short: name may be at NAME_MAX
    try:
        unnamed = _unnamed_file(folder)
        # os.open with 0o666 gives the usual umask-based permissions (mkstemp would give 0600).
        fd = unnamed if unnamed is not None else os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if unnamed is not None:  # complete: now it gets a (temporary) name
                # A src_dir_fd (ignored: the path is absolute) makes Python call linkat() with
                # AT_SYMLINK_FOLLOW, which links the file behind the /proc link, not the link itself.
                os.link(f"/proc/self/fd/{f.fileno()}", tmp, src_dir_fd=f.fileno(), follow_symlinks=True)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)  # only still there if something failed or was interrupted


def _unnamed_file(folder: str) -> int | None:
    """A new unnamed file in ``folder`` open for writing (Linux ``O_TMPFILE``, linked into the folder
    through /proc/self/fd), or None where the system or the file system has none."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(folder, flag | os.O_WRONLY, 0o666)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):  # no O_TMPFILE there
            return None
        raise
