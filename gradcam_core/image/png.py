"""``image.save`` of 8-bit PNGs (bytes truncated, not rounded) and atomic file writes."""
from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets

import torch
from PIL import Image

from ..errors import GradCamError


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
    pixels = levels[0].numpy() if levels.shape[0] == 1 else levels.permute(1, 2, 0).contiguous().numpy()
    out = io.BytesIO()
    # zlib level 1: the fastest level that still compresses (level 0 stores the data: 40% larger files).
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


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
