"""Decoding image files as Torch7's ``image.load`` did (``load_image``) and the channel handling of
grad-cam's ``utils.preprocess`` (``to_rgb``). Tensors are (C, H, W), float32 or float64.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from PIL import Image, ImageFile

from ..errors import GradCamError
from ..fileio import open_regular

MAX_PIXELS: int = 1 << 26
"""Largest image (width x height) ``load_image`` decodes: 64 Mpx, e.g. 8192 x 8192 (768 MB as float32 RGB).
Larger headers are refused before any pixel memory is allocated (decompression bombs)."""
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG"}  # the prefixes torch's image.load tests
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


# --------------------------------------------------------------------------------------------- loading

def load_image(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32, *,
               exif_orientation: bool = False) -> torch.Tensor:
    """Decode a JPEG or PNG file like ``image.load(path)``.

    Returns (C, H, W) in [0, 1] with the file's native channel count: 1 grey, 2 grey+alpha, 3 RGB,
    4 RGBA. Values are ``raw * (1/255)`` (``1/65535`` for 16-bit PNGs, full precision kept) computed
    in ``dtype``, exactly as the original multiplied in its default tensor type.
    Palette PNGs become RGB (RGBA when they carry transparency); CMYK JPEGs are converted to RGB.
    EXIF orientation is ignored, as libjpeg ignores it, unless ``exif_orientation``: the image is then
    turned as its EXIF Orientation tag says, as browsers show it (H and W swapped for a quarter turn).

    Raises GradCamError (one line naming the file) for anything that is not a decodable JPEG/PNG:
    missing or unreadable file, wrong or empty content, truncated or corrupt data (a JPEG whose
    entropy-coded data ends early is refused even when an end-of-image marker follows), oversized image.
    """
    fmt = _sniff_format(path)
    try:
        samples, max_value = _decode(path, fmt, exif_orientation)
    except _DECODE_ERRORS as err:
        raise GradCamError(f"cannot decode image {os.fspath(path)!r}: {err}") from err
    img = torch.from_numpy(samples).permute(2, 0, 1).contiguous().to(dtype)
    return img.mul_(torch.tensor(1.0 / max_value, dtype=dtype))


def image_size(path: str | os.PathLike[str], *, exif_orientation: bool = False) -> tuple[int, int]:
    """(width, height) of a JPEG or PNG file from its header alone (no pixel decoded, no size limit), so
    a caller can apply a lower pixel limit than :data:`MAX_PIXELS` before :func:`load_image`; with
    ``exif_orientation`` the size :func:`load_image` gives with it. Raises GradCamError as
    ``load_image`` does for a file that is not a JPEG or PNG image."""
    fmt = _sniff_format(path)
    try:
        return _header_size(path, fmt, exif_orientation)
    except _DECODE_ERRORS as err:
        raise GradCamError(f"cannot decode image {os.fspath(path)!r}: {err}") from err


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


def _decode(path: str | os.PathLike[str], fmt: str, exif_orientation: bool = False) -> tuple[np.ndarray, int]:
    """(H, W, C) integer samples and their maximum value (255 or 65535)."""
    with _open(path, fmt) as im:
        if fmt == "JPEG":
            _check_jpeg_complete(path)
        turn = _exif_orientation(im) if exif_orientation else 1
        samples16 = _png16_samples(path, im)
        if samples16 is not None:
            return _oriented(samples16, turn), 65535
        if im.mode in ("I;16", "I"):  # 16-bit grey PNG: Pillow keeps all 16 bits ("I" before Pillow 10)
            return _oriented(np.array(im, dtype=np.int32)[..., None], turn), 65535
        pixels = np.array(_supported_mode(path, im))
    return _oriented(pixels[..., None] if pixels.ndim == 2 else pixels, turn), 255


def _check_jpeg_complete(path: str | os.PathLike[str]) -> None:
    """Refuse a JPEG whose entropy-coded data ends before its last block (cut short, even when an
    end-of-image marker follows, or a header claiming more blocks than the data holds).

    A file cut between two scans is found from its markers (:func:`_missing_scans`). Within a scan,
    Pillow's libjpeg pads missing data with zero bits (a grey image) and drops the warning; libjpeg-turbo
    as simplejpeg builds it reports it ("premature end of data segment"), which is all it is used for:
    it decodes at 1/8 scale (the entropy decoding is the whole cost), stops at the first warning, and
    the pixels stay Pillow's. Any other outcome of that check is left to Pillow's own decode."""
    import simplejpeg

    with open_regular(path) as f:
        data = f.read()
    missing = _missing_scans(data)
    if missing:
        raise GradCamError(f"cannot decode image {os.fspath(path)!r}: truncated JPEG ({missing})")
    try:
        _, _, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        simplejpeg.decode_jpeg(data, colorspace="CMYK" if colorspace in ("CMYK", "YCCK") else "GRAY",
                               min_factor=8, strict=True)
    except ValueError as err:
        if "premature end of data segment" in str(err):  # (a file without its marker: Pillow says so)
            raise GradCamError(f"cannot decode image {os.fspath(path)!r}: truncated JPEG (its data ends before "
                               "its last block)") from None


def _missing_scans(data: bytes) -> str | None:
    """What a baseline or progressive Huffman JPEG's scans leave out before its end-of-image marker
    (a file cut at a scan boundary, which libjpeg decodes without a warning), as words, or None.

    Sequential frames need every component in a scan; progressive ones every coefficient (0..63) of
    every component down to bit 0, as every encoder writes them. Anything unusual (other frame types,
    markers we cannot walk) is None: left to the decoders."""
    frame, comps, coverage, pos = None, [], {}, 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            break
        if pos + 4 > len(data):
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        body = data[pos + 4:pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            return None
        if marker in (0xC0, 0xC1, 0xC2):
            if frame is not None or len(body) < 6:
                return None
            frame = marker
            comps = [body[6 + 3 * i] for i in range(body[5]) if 6 + 3 * i < len(body)]
            coverage = {c: [64] * 64 for c in comps}  # the lowest successive-approximation bit reached
        elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None  # lossless, hierarchical or arithmetic-coded: not checked here
        elif marker == 0xDA:
            if frame is None or not body or len(body) < 1 + 2 * body[0] + 3:
                return None
            n = body[0]
            ids = [body[1 + 2 * i] for i in range(n)]
            ss, se, al = body[1 + 2 * n], body[2 + 2 * n], body[3 + 2 * n] & 0x0F
            if frame != 0xC2:
                ss, se, al = 0, 63, 0
            for c in ids:
                if c not in coverage or not 0 <= ss <= se <= 63:
                    return None
                for k in range(ss, se + 1):
                    coverage[c][k] = min(coverage[c][k], al)
            pos = _end_of_entropy_data(data, pos + 2 + length)
            continue
        pos += 2 + length
    else:
        return None  # no end-of-image marker: Pillow reports the file truncated itself
    if frame is None:
        return None
    for number, c in enumerate(comps, 1):
        if frame != 0xC2 and coverage[c][0] > 0:
            return f"no scan holds component {number}"
        if frame == 0xC2 and max(coverage[c]) > 0:
            k = max(range(64), key=lambda k: coverage[c][k])
            return f"its scans end before coefficient {k} of component {number} is complete"
    return None


def _end_of_entropy_data(data: bytes, pos: int) -> int:
    """The position of the marker that ends the entropy-coded data starting at pos (len(data) if none):
    0xFF 0x00 is a stuffed byte, 0xFF 0xD0..0xD7 a restart marker, 0xFF 0xFF fill."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        nxt = data[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
            pos += 2
        elif nxt == 0xFF:
            pos += 1
        else:
            return pos


_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _exif_orientation(im: Image.Image) -> int:
    """The image's EXIF Orientation tag (0x0112), 1 (as stored) when absent or not 1..8."""
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block: shown as stored, as browsers do
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _oriented(samples: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) samples turned for display as EXIF orientation 1..8 says (PIL.ImageOps.exif_transpose)."""
    if orientation in (2, 3):  # 2: mirrored left-right; 3: half turn
        samples = samples[:, ::-1]
    if orientation in (3, 4):  # 4: mirrored top-bottom
        samples = samples[::-1]
    if orientation in _QUARTER_TURNS:
        samples = samples.transpose(1, 0, 2)  # 5: transposed
        if orientation in (6, 7):  # 6: quarter turn clockwise; 7: transverse
            samples = samples[:, ::-1]
        if orientation in (7, 8):  # 8: quarter turn counter-clockwise
            samples = samples[::-1]
    return np.ascontiguousarray(samples)


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


def _open(path: str | os.PathLike[str], fmt: str) -> ImageFile.ImageFile:
    """Open (header only) and refuse oversized images before any pixel is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit
        try:
            im = Image.open(path, formats=[fmt])
        except Image.DecompressionBombError:  # Pillow's own, lower-level limit (past 179 Mpx): ours instead
            raise _too_large(path, *_header_size(path, fmt)) from None
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise _too_large(path, width, height)
    return im


def _too_large(path: str | os.PathLike[str], width: int, height: int) -> GradCamError:
    return GradCamError(
        f"cannot load image {os.fspath(path)!r}: {width}x{height} exceeds the limit of {MAX_PIXELS} pixels"
    )


def _header_size(path: str | os.PathLike[str], fmt: str, exif_orientation: bool = False) -> tuple[int, int]:
    """(width, height) from the header, read by Pillow's format class itself: it applies no limit
    (``Image.open`` does), and decodes no pixel; swapped when ``exif_orientation`` and the EXIF tag
    asks for a quarter turn."""
    from PIL import JpegImagePlugin, PngImagePlugin

    cls = {"JPEG": JpegImagePlugin.JpegImageFile, "PNG": PngImagePlugin.PngImageFile}[fmt]
    with cls(os.fspath(path)) as im:
        width, height = im.size
        if exif_orientation and _exif_orientation(im) in _QUARTER_TURNS:
            return height, width
        return width, height


# Pillow decodes 16-bit colour PNGs to 8 bits, keeping each sample's high byte. The PNG unfilter step works
# on whole pixels (6 or 8 bytes here), whatever unpacker follows it, so decoding the same stream again with
# the little-endian unpacker yields the low bytes. 16-bit grey+alpha has no such unpacker; decoding it as
# 8-bit RGBA (also 4 bytes a pixel) yields its raw bytes: grey-high, grey-low, alpha-high, alpha-low.
_PNG16_LOW_BYTES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}


def _png16_samples(path: str | os.PathLike[str], im: ImageFile.ImageFile) -> np.ndarray | None:
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
