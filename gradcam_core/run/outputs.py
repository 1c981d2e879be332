"""The three images every script writes, their file names, and safe, atomic writing.

For one target the Lua scripts wrote, into ``out_path``:

1. ``<prefix>_gcam_hm_<name>.png``: the heatmap colours of the scaled Grad-CAM map
   (``<prefix>_gcam_<name>.png``, the grey map itself, with ``-save_as_heatmap 0``);
2. ``<prefix>_gb_<name>.png``: guided backprop, channels turned from BGR back to RGB;
3. ``<prefix>_gb_gcam_<name>.png``: guided backprop times the (unnormalised) scaled map.

Each image is min-max normalised on its own (``toDisplayTensor``) and written with truncated bytes
(see :mod:`gradcam_core.image.png`).

Names: ``<name>`` is the label, answer or caption as given. It can never write outside the output
folder, and never fails to be written:

* path separators (``/``, ``\\``), NUL and the other control characters (C0, DEL, C1), and the Unicode
  line and paragraph separators become ``_`` (so a name is always one line);
* bytes of the command line that were not UTF-8 (which Python holds as surrogate escapes) are written
  back as those same bytes; any other lone surrogate (only a library caller can pass one) becomes ``_``;
* every name carries the fixed prefix, so ``.`` and ``..`` are never whole path components;
* a name that would make the file name longer than 255 bytes (the usual file-system limit) is cut on a
  character boundary and ends with ``~`` plus the first 8 hex digits of the SHA-256 of the full name,
  so different long names stay different.

For example, the caption ``../../etc/passwd`` gives ``caption_gb_.._.._etc_passwd.png``.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..errors import GradCamError
from ..image.png import png_bytes, write_atomic
from ..image.render import to_display, to_heatmap

NAME_MAX = 255  # bytes in one file name on Linux/macOS file systems
# Separators, control characters, line/paragraph separators, and the surrogates that are NOT the
# U+DC80..U+DCFF escapes of undecodable command-line bytes (those cannot be written at all).
_UNSAFE = re.compile("[/\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udc7f\udd00-\udfff]")


@dataclass(frozen=True)
class Rendered:
    """One image ready to write: its file name and its PNG bytes."""

    filename: str
    png: bytes


def safe_filename(prefix: str, name: str, suffix: str = ".png") -> str:
    """``prefix + name + suffix`` made safe as ONE file name inside the output folder (see module doc)."""
    clean = _UNSAFE.sub("_", name)
    fixed = _fs_len(prefix) + _fs_len(suffix)
    if fixed + _fs_len(clean) <= NAME_MAX:
        return prefix + clean + suffix
    tag = "~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return prefix + _cut(clean, NAME_MAX - fixed - len(tag)) + tag + suffix


def _fs_len(text: str) -> int:
    """Bytes of ``text`` in a file name (``os.fsencode``: UTF-8, surrogate escapes as their bytes)."""
    return len(text.encode("utf-8", "surrogateescape"))


def _cut(text: str, budget: int) -> str:
    """The longest prefix of ``text`` (whole characters) of at most ``budget`` file-name bytes."""
    used = 0
    for i, char in enumerate(text):
        used += _fs_len(char)
        if used > budget:
            return text[:i]
    return text


def render_triplet(
    prefix: str,
    name: str,
    cam: torch.Tensor,
    guided_bgr: Optional[torch.Tensor],
    *,
    heatmap: bool = True,
    dtype: torch.dtype = torch.float32,
) -> list[Rendered]:
    """The Lua scripts' three images for one target, rendered in memory.

    Args:
        prefix: ``"classify"``, ``"vqa"`` or ``"caption"``.
        name: the label / answer / caption used in the file names.
        cam: (H, W) or (1, H, W) scaled Grad-CAM map (unnormalised).
        guided_bgr: (3, H, W) guided-backprop gradient w.r.t. the BGR input, or None to skip the
            two guided images.
        heatmap: colour heatmap (``-save_as_heatmap 1``) or the grey map.
        dtype: precision of the normalisation and of the byte truncation: the original's default
            tensor type, float32 for classification and captioning, float64 for VQA.

    Returns:
        ``Rendered`` images in the order the original wrote them.
    """
    def png(t: torch.Tensor) -> bytes:
        # toDisplayTensor copied into the default tensor type before normalising
        return png_bytes(to_display(t.to(dtype)))

    cam = cam.detach().cpu().float().reshape(1, *cam.shape[-2:])  # the scripts used gcam:float()
    out = []
    if heatmap:
        out.append(Rendered(safe_filename(f"{prefix}_gcam_hm_", name), png(to_heatmap(cam.to(dtype)))))
    else:
        out.append(Rendered(safe_filename(f"{prefix}_gcam_", name), png(cam)))
    if guided_bgr is not None:
        gb_rgb = guided_bgr.detach().cpu().flip(0)  # BGR -> RGB, as the scripts reordered before saving
        out.append(Rendered(safe_filename(f"{prefix}_gb_", name), png(gb_rgb)))
        # gb_viz:float():cmul(gcam): a float32 product in every script
        out.append(Rendered(safe_filename(f"{prefix}_gb_gcam_", name), png(gb_rgb.float() * cam)))
    return out


def write_all(out_dir: Path, images: list[Rendered]) -> list[Path]:
    """Create ``out_dir`` (with parents) and write every image atomically (``image.png.write_atomic``):
    a reader never sees a partial PNG, and an interrupted run leaves none behind. Returns the paths."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GradCamError(f"cannot create the output folder {out_dir}: {err.strerror or err}") from None
    written = []
    for im in images:
        path = out_dir / im.filename
        try:
            write_atomic(path, im.png)
        except OSError as err:
            raise GradCamError(f"cannot write {path}: {err.strerror or err}") from None
        written.append(path)
    return written
