"""The three images every script writes, their file names, and safe, atomic writing.

For one target the Lua scripts wrote, into ``out_path``:

1. ``<prefix>_gcam_hm_<name>.png``: the heatmap colours of the scaled Grad-CAM map
   (``<prefix>_gcam_<name>.png``, the grey map itself, with ``-save_as_heatmap 0``);
2. ``<prefix>_gb_<name>.png``: guided backprop, channels turned from BGR back to RGB;
3. ``<prefix>_gb_gcam_<name>.png``: guided backprop times the (unnormalised) scaled map.

Each image is min-max normalised on its own (``toDisplayTensor``) and written with truncated bytes
(see :mod:`gradcam_core.image.png`). Another CAM method's map and guided map carry its token instead of
``gcam`` (:func:`render_map`, :func:`render_guided_map`; :func:`gradcam_core.run.task.method_token`).

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

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import GradCamError
from ..image.png import png_bytes
from ..image.render import overlay, to_display, to_heatmap

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
    guided_bgr: torch.Tensor | None,
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
    out = [render_map(prefix, "gcam", name, cam, heatmap=heatmap, dtype=dtype)]
    if guided_bgr is not None:
        out.append(render_guided(prefix, "gb", name, guided_bgr, dtype=dtype))
        out.append(render_guided_map(prefix, "gcam", name, guided_bgr, cam, dtype=dtype))
    return out


def _png(t: torch.Tensor, dtype: torch.dtype) -> bytes:
    # toDisplayTensor copied into the default tensor type before normalising
    return png_bytes(to_display(t.to(dtype)))


def _as_map(cam: torch.Tensor) -> torch.Tensor:
    """(H, W) or (1, H, W) -> (1, H, W) float32 on the CPU: the scripts used ``gcam:float()``."""
    return cam.detach().cpu().float().reshape(1, *cam.shape[-2:])


def render_map(prefix: str, token: str, name: str, cam: torch.Tensor, *, heatmap: bool = True,
               dtype: torch.dtype = torch.float32) -> Rendered:
    """``<prefix>_<token>_hm_<name>.png``: the heatmap colours of the scaled map ``cam`` (H, W), or with
    ``heatmap`` False ``<prefix>_<token>_<name>.png``, the grey map itself (``token`` ``gcam``: the
    original's Grad-CAM files)."""
    cam = _as_map(cam)
    if heatmap:
        return Rendered(safe_filename(f"{prefix}_{token}_hm_", name), _png(to_heatmap(cam.to(dtype)), dtype))
    return Rendered(safe_filename(f"{prefix}_{token}_", name), _png(cam, dtype))


def render_guided(prefix: str, token: str, name: str, guided_bgr: torch.Tensor, *,
                  dtype: torch.dtype = torch.float32) -> Rendered:
    """``<prefix>_<token>_<name>.png`` (``token`` ``gb``): guided backprop (3, H, W), channels turned from
    BGR back to RGB, as the scripts reordered before saving."""
    return Rendered(safe_filename(f"{prefix}_{token}_", name), _png(guided_bgr.detach().cpu().flip(0), dtype))


def render_guided_map(prefix: str, token: str, name: str, guided_bgr: torch.Tensor, cam: torch.Tensor, *,
                      dtype: torch.dtype = torch.float32) -> Rendered:
    """``<prefix>_gb_<token>_<name>.png``: guided backprop (3, H, W) times the (unnormalised) scaled map
    (H, W); ``gb_viz:float():cmul(gcam)``, a float32 product in every script."""
    gb_rgb = guided_bgr.detach().cpu().flip(0)
    return Rendered(safe_filename(f"{prefix}_gb_{token}_", name), _png(gb_rgb.float() * _as_map(cam), dtype))


def render_overlay(prefix: str, name: str, cam: torch.Tensor, rgb: torch.Tensor, token: str = "") -> Rendered:
    """``<prefix>_overlay_<name>.png`` (``<prefix>_overlay_<token>_<name>.png`` for a method other than
    Grad-CAM): the heatmap of ``cam`` (H, W) blended over ``rgb`` (3, H, W), the image as the net saw
    it before preprocessing (:func:`gradcam_core.image.render.overlay`)."""
    cam = cam.detach().cpu().float().reshape(*cam.shape[-2:])
    kind = f"{prefix}_overlay_{token}_" if token else f"{prefix}_overlay_"
    return Rendered(safe_filename(kind, name), png_bytes(overlay(rgb.detach().cpu(), cam)))


def write_all(out_dir: Path, images: list[Rendered], root: Path | None = None) -> list[Path]:
    """Write every image into ``out_dir``: all of them, or none. Returns their paths.

    ``root`` is the output folder the user named (default ``out_dir``); ``out_dir`` is ``root`` or a
    folder below it. ``root`` and its parents are created as named, symlinks and all (where it points
    is the user's choice). The folders from ``root`` down to ``out_dir`` are created one by one and
    opened with ``O_NOFOLLOW``: a symlink (or a file) there is refused, never followed, so nothing is
    written outside ``root`` whatever was planted in it.

    Each file is first written in full to a temporary and synced - unnamed (Linux ``O_TMPFILE``) where
    the file system allows, so even SIGKILL leaves nothing - and only once ALL of them are written is
    each renamed into place; a file name that is a symlink is replaced, not followed. When anything
    fails (a full disk, Ctrl-C), the temporaries and the files already renamed are removed, with the
    folders this call created: a reader never sees a partial PNG, nor part of an image's set.
    Raises GradCamError naming the folder or the file."""
    root = out_dir if root is None else root
    parts = out_dir.relative_to(root).parts
    created: list[Path] = []
    folder = _open_folder(root, parts, out_dir, created)
    staged: list[_Staged] = []
    placed: list[str] = []
    try:
        for im in images:
            staged.append(_Staged.write(folder, im, out_dir))
        for item in staged:
            item.place(folder, out_dir)
            placed.append(item.name)
    except BaseException:
        for item in staged:
            item.discard(folder)
        for name in placed:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=folder)
        for path in reversed(created):  # only if empty: another image's files may be there
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise
    finally:
        os.close(folder)
    return [out_dir / im.filename for im in images]


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_folder(root: Path, parts: tuple[str, ...], out_dir: Path, created: list[Path]) -> int:
    """A descriptor of ``root / parts``, created as needed; the folders of ``parts`` must be real
    folders (see :func:`write_all`). Folders this call made are appended to ``created``."""
    def fail(why: str) -> GradCamError:
        return GradCamError(f"cannot create the output folder {out_dir}: {why}")

    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root, _DIR_FLAGS)
    except OSError as err:
        raise fail(err.strerror or str(err)) from None
    here = root
    for part in parts:
        here = here / part
        try:
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
                created.append(here)
            except FileExistsError:
                pass
            try:
                inner = os.open(part, _DIR_FLAGS | getattr(os, "O_NOFOLLOW", 0), dir_fd=fd)
            except OSError as err:
                if stat.S_ISLNK(os.lstat(part, dir_fd=fd).st_mode):
                    raise fail(f"{here} is a symbolic link (links inside {root} are never followed)") from None
                if err.errno == errno.ENOTDIR:
                    raise fail(f"{here} is not a folder") from None
                raise
        except OSError as err:
            os.close(fd)
            raise fail(err.strerror or str(err)) from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        fd = inner
    return fd


@dataclass
class _Staged:
    """One file written in full but not yet in place: an unnamed file (``fd``) or a hidden
    temporary (``tmp``), to become ``name``."""

    name: str
    fd: int | None = None
    tmp: str | None = None

    @classmethod
    def write(cls, folder: int, im: Rendered, out_dir: Path) -> _Staged:
        item = cls(im.filename)
        try:
            item.fd = _unnamed_file(folder)
            if item.fd is None:
                item.tmp = f".gradcam-{secrets.token_hex(6)}.tmp"  # short: the final name may be at NAME_MAX
                # 0o666: the usual umask-based permissions (mkstemp would give 0600)
                item.fd = os.open(item.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                                  0o666, dir_fd=folder)
            with os.fdopen(item.fd, "wb", closefd=False) as f:
                f.write(im.png)
            os.fsync(item.fd)
        except BaseException as err:
            item.discard(folder)
            if isinstance(err, OSError):
                raise GradCamError(f"cannot write {out_dir / im.filename}: {err.strerror or err}") from None
            raise
        return item

    def place(self, folder: int, out_dir: Path) -> None:
        """Give the file its name (replacing any file or symlink of that name)."""
        try:
            if self.tmp is None:  # unnamed: link it under a temporary name first (linkat cannot replace)
                tmp = f".gradcam-{secrets.token_hex(6)}.tmp"
                # dst_dir_fd makes Python call linkat() with AT_SYMLINK_FOLLOW: the file behind the
                # /proc link is linked, not the link itself.
                os.link(f"/proc/self/fd/{self.fd}", tmp, dst_dir_fd=folder, follow_symlinks=True)
                self.tmp = tmp
            os.replace(self.tmp, self.name, src_dir_fd=folder, dst_dir_fd=folder)
            self.tmp = None
        except OSError as err:
            raise GradCamError(f"cannot write {out_dir / self.name}: {err.strerror or err}") from None
        finally:
            self._close()

    def discard(self, folder: int) -> None:
        """Remove whatever is left of it (nothing, for an unnamed file once closed)."""
        self._close()
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp, dir_fd=folder)
            self.tmp = None

    def _close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def _unnamed_file(folder: int) -> int | None:
    """A new unnamed file in the folder ``folder`` (a descriptor), open for writing (Linux
    ``O_TMPFILE``), or None where the system or the file system has none."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(".", flag | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o666, dir_fd=folder)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):  # no O_TMPFILE there
            return None
        raise
