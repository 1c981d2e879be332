"""The images of a run: one file, or a folder or glob of them, and where each one's files go.

Which images (``-input_image_path``, see :func:`find_images`)
    * a file: that one image (single-image mode, the Lua scripts' behaviour);
    * a folder: every ``.jpg``, ``.jpeg`` and ``.png`` file under it, recursively, the extension in
      any case;
    * otherwise, a glob pattern (``*``, ``?``, ``[...]`` within one name, ``**`` for any number of
      folders), e.g. ``'photos/*.jpg'``: the matching files with those extensions. Matching is
      case-sensitive (as the shell's); the extension check is not.

    In both multi-image modes, names starting with ``.`` (hidden files and folders) are skipped unless
    a pattern component itself starts with ``.``; symlinks to folders are never followed (no loops, no
    reading outside the tree); a symlink to a file is read as that image; the output folder is skipped
    if it lies inside the searched tree. Images are sorted by their path relative to the folder (or to
    the glob's fixed prefix, its leading components without wildcards), compared as strings.

Where the files go
    Single-image mode: into ``-out_path`` with the Lua scripts' names. Folder and glob mode: into
    ``<out_path>/<relative path of the image>/`` with the same names, e.g.
    ``output/cats/tabby.jpg/classify_gb_5.png``. Relative paths come from directory listings, so they
    hold no ``..``, and the folders below ``-out_path`` are never entered through a symlink (an image
    whose folder there is a symlink is skipped): nothing is written outside ``-out_path``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from glob import has_magic
from pathlib import Path, PurePath

from ..errors import GradCamError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
"""The files a folder or glob selects (compared case-insensitively)."""



# ------------------------------------------------------------------------------------ which images


@dataclass(frozen=True)
class ImageJob:
    """One image to explain.

    Attributes:
        path: the file to read.
        out_dir: the folder its files go into.
        shown: how stdout and stderr lines name it: "" in single-image mode (lines unchanged), else
            the image's path as found.
        out_root: the ``-out_path`` that ``out_dir`` lies below (folder and glob mode), or None:
            the folders between them are never followed through a symlink (``outputs.write_all``).
    """

    path: Path
    out_dir: Path
    shown: str = ""
    out_root: Path | None = None


@dataclass(frozen=True)
class Inputs:
    """The images of a run, in order. ``many`` is False only for single-image mode."""

    jobs: tuple[ImageJob, ...]
    many: bool

    @classmethod
    def single(cls, path: Path, out_dir: Path) -> Inputs:
        return cls((ImageJob(path, out_dir),), many=False)


def is_multi_image(value: str) -> bool:
    """Whether ``-input_image_path value`` selects several images: a folder, or a pattern that is
    not the name of an existing file."""
    path = Path(value).expanduser()
    return path.is_dir() or (has_magic(value) and not path.exists())


def find_images(option: str, value: str, out_dir: Path) -> Inputs:
    """The images a folder or glob ``value`` selects, with their output folders under ``out_dir``.

    Raises GradCamError (naming ``-option``) when nothing is selected or ``out_dir`` is the folder
    searched (each image's folder would collide with the image itself).
    """
    root, parts = split_pattern(value)
    if _same_place(root, out_dir):
        raise GradCamError(
            f"-out_path {out_dir} is the folder the images are read from; each image's files go into a "
            "folder named after the image there, so choose another -out_path"
        )
    found = sorted(match_images(root, parts, skip=out_dir), key=lambda rel: rel.as_posix())
    if not found:
        where = (f"no {_suffix_list()} file in the folder {value}" if Path(value).expanduser().is_dir()
                 else f"{value!r} matches no {_suffix_list()} file")
        raise GradCamError(f"-{option}: {where} (hidden names and symlinked folders are not searched)")
    jobs = tuple(ImageJob(root / rel, output_folder(out_dir, rel), str(root / rel), out_dir) for rel in found)
    return Inputs(jobs, many=True)


def split_pattern(value: str) -> tuple[Path, tuple[str, ...]]:
    """A folder or glob as (fixed prefix, pattern components below it).

    A folder ``photos`` is ``(photos, ("**", "*"))``; ``photos/*/x?.jpg`` is ``(photos, ("*", "x?.jpg"))``;
    ``*.png`` is ``(., ("*.png",))``: the prefix is the leading components without wildcards.
    """
    path = Path(value).expanduser()
    if path.is_dir():
        return path, ("**", "*")
    parts = path.parts
    fixed = next((i for i, part in enumerate(parts) if has_magic(part)), len(parts))
    return Path(*parts[:fixed]) if fixed else Path("."), tuple(parts[fixed:])


def match_images(root: Path, parts: Sequence[str], skip: Path | None = None) -> list[PurePath]:
    """Paths (relative to ``root``) of the image files matching the components ``parts``.

    ``**`` matches any number of folders; other components match one name (``fnmatchcase``). Hidden
    names match only a component that starts with ``.``; symlinked folders are not entered; ``skip``
    (the output folder) is not entered. Only files with an image suffix are kept.
    """
    skip_real = os.path.realpath(skip) if skip is not None else None
    found = {rel for rel in _walk(root, tuple(parts), PurePath(), skip_real) if _is_image_name(rel.name)}
    return list(found)


def _walk(folder: Path, parts: tuple[str, ...], rel: PurePath, skip: str | None) -> Iterator[PurePath]:
    """Depth-first matching of ``parts`` under ``folder`` (``rel`` is ``folder`` relative to the root)."""
    if not parts:
        return
    head, rest = parts[0], parts[1:]
    if head == "**":
        yield from _walk(folder, rest, rel, skip)  # zero folders
    show_hidden = head.startswith(".")
    for entry in _listing(folder):
        if entry.name.startswith(".") and not show_hidden:
            continue
        if head == "**":
            if _enters(entry, skip):
                yield from _walk(Path(entry.path), parts, rel / entry.name, skip)
        elif fnmatchcase(entry.name, head):
            if rest and _enters(entry, skip):
                yield from _walk(Path(entry.path), rest, rel / entry.name, skip)
            elif not rest and _is_file_or_broken_link(entry):
                yield rel / entry.name


def _enters(entry: os.DirEntry, skip: str | None) -> bool:
    """Whether the walk goes into ``entry``: a real folder (not a symlink), not the output folder."""
    return entry.is_dir(follow_symlinks=False) and os.path.realpath(entry.path) != skip


def _listing(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder``; none if it does not exist (a glob's prefix may not). A folder that
    cannot be read is an error: silently leaving its images out would look like success."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as err:
        raise GradCamError(f"cannot list the folder {folder}: {err.strerror or err}") from None


def _is_file_or_broken_link(entry: os.DirEntry) -> bool:
    """A regular file (through a symlink too), or a dangling symlink: reported as unreadable later
    rather than silently ignored. Folders, FIFOs and devices are not images."""
    if entry.is_file():
        return True
    return entry.is_symlink() and not os.path.exists(entry.path)


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _suffix_list() -> str:
    return ", ".join(IMAGE_SUFFIXES[:-1]) + " or " + IMAGE_SUFFIXES[-1]


def _same_place(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def output_folder(out_dir: Path, rel: PurePath) -> Path:
    """``out_dir / rel``: where the image at relative path ``rel`` writes its files. ``rel`` must be
    made of plain names (no ``..``, ``.``, root or empty component), so the result is inside
    ``out_dir``; anything else is refused."""
    parts = rel.parts
    if not parts or rel.is_absolute() or any(p in ("", ".", "..") or "/" in p or "\0" in p for p in parts):
        raise GradCamError(f"refusing output folder {rel!s}: not a plain relative path")
    return out_dir.joinpath(*parts)
