"""Many images in one run: folder and glob inputs, batches, shards and per-image output folders.

One mechanism for the three pipelines (classification, VQA, captioning). Each pipeline gives
:func:`explain_images` its input size and a function that explains a batch; this module loads the
images (``imageops.preprocess``, as every grad-cam script fed its CNN) and does the rest.

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
    hold no ``..``: nothing is written outside ``-out_path`` (unless a folder the user made inside
    ``-out_path`` is itself a symlink elsewhere).

Batches
    The sorted list is cut into consecutive chunks of ``-batch_size`` files; the images of a chunk that
    load are explained together, through ONE forward. Batching changes the last bits of some numbers
    (BLAS computes a fully connected layer differently for one row and for several), so a map from a
    batch may differ from the single-image run's by one grey level in a few pixels; ``-batch_size 1``
    gives the single-image files byte for byte. A given command always gives the same bytes: the
    chunks do not depend on which images fail to load, nor on the number of torchrun ranks.

Bad images
    In folder and glob mode an image that cannot be read (not an image, truncated, unreadable) or
    whose output folder cannot be made is reported on stderr as ``skipping <path>: <reason>`` and
    skipped; the rest completes, then :class:`ImagesSkipped` (exit code 2) says how many of how many
    were skipped. In single-image mode the error is raised as before.

Beyond one machine
    Under ``torchrun`` (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), rank r takes chunks r, r + W,
    r + 2W, ... (:class:`Shard`): every image is explained in the same batch as in a one-process run,
    so the union of the ranks' files equals that run's, byte for byte. No process group is needed but
    for the final count of skipped images; each rank reports its own skipped images.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from glob import has_magic
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Sequence, TypeVar

from .cli import write_line
from .errors import GradCamError

if TYPE_CHECKING:  # torch is imported only where images are explained
    import torch

    from .outputs import Rendered

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
"""The files a folder or glob selects (compared case-insensitively)."""

T = TypeVar("T")


# ------------------------------------------------------------------------------------ which images


@dataclass(frozen=True)
class ImageJob:
    """One image to explain.

    Attributes:
        path: the file to read.
        out_dir: the folder its files go into.
        shown: how stdout and stderr lines name it: "" in single-image mode (lines unchanged), else
            the image's path as found.
    """

    path: Path
    out_dir: Path
    shown: str = ""


@dataclass(frozen=True)
class Inputs:
    """The images of a run, in order. ``many`` is False only for single-image mode."""

    jobs: tuple[ImageJob, ...]
    many: bool

    @classmethod
    def single(cls, path: Path, out_dir: Path) -> "Inputs":
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
    jobs = tuple(ImageJob(root / rel, output_folder(out_dir, rel), str(root / rel)) for rel in found)
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


def match_images(root: Path, parts: Sequence[str], skip: Optional[Path] = None) -> list[PurePath]:
    """Paths (relative to ``root``) of the image files matching the components ``parts``.

    ``**`` matches any number of folders; other components match one name (``fnmatchcase``). Hidden
    names match only a component that starts with ``.``; symlinked folders are not entered; ``skip``
    (the output folder) is not entered. Only files with an image suffix are kept.
    """
    skip_real = os.path.realpath(skip) if skip is not None else None
    found = {rel for rel in _walk(root, tuple(parts), PurePath(), skip_real) if _is_image_name(rel.name)}
    return list(found)


def _walk(folder: Path, parts: tuple[str, ...], rel: PurePath, skip: Optional[str]) -> Iterator[PurePath]:
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


def _enters(entry: os.DirEntry, skip: Optional[str]) -> bool:
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


# ------------------------------------------------------------------------------------------ shards


@dataclass(frozen=True)
class Shard:
    """This process's part of the work under ``torchrun``: rank r of W takes chunks r, r + W, ..."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Shard":
        """Read ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (as torchrun sets them); absent = one process."""
        world = _env_int(env, "WORLD_SIZE", 1)
        rank = _env_int(env, "RANK", 0)
        local = _env_int(env, "LOCAL_RANK", rank)
        if world < 1 or not 0 <= rank < world or local < 0:
            raise GradCamError(f"torch.distributed environment: RANK {rank}, LOCAL_RANK {local} and WORLD_SIZE "
                               f"{world} do not fit (0 <= RANK < WORLD_SIZE)")
        return cls(rank, world, local)

    def take(self, items: Sequence[T], chunk: int = 1) -> list[list[T]]:
        """This rank's chunks of the sorted list cut into consecutive chunks of ``chunk`` items."""
        chunks = [list(items[i : i + chunk]) for i in range(0, len(items), chunk)]
        return chunks[self.rank :: self.world]

    def describe(self) -> str:
        """"" for one process, else "rank r of W"."""
        return "" if self.world == 1 else f"rank {self.rank} of {self.world}"


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise GradCamError(f"torch.distributed environment: {name}={value!r} is not a whole number") from None


# ------------------------------------------------------------------------------ running the batches


@dataclass
class ImageOutput:
    """What a pipeline made of one image: stdout lines (as a single-image run prints them) and the
    rendered PNGs (named as a single-image run names them)."""

    lines: list[str]
    images: list["Rendered"]


class ImagesSkipped(GradCamError):
    """Some images of a folder or glob run were skipped (each reported on stderr); the others were
    explained. ``written`` holds the files this process wrote."""

    def __init__(self, message: str, skipped: int, total: int, written: list[Path]) -> None:
        super().__init__(message)
        self.skipped, self.total, self.written = skipped, total, written


def explain_images(
    inputs: Inputs,
    batch_size: int,
    input_sz: int,
    explain_batch: Callable[["torch.Tensor"], Sequence[ImageOutput]],
    *,
    dtype: Optional["torch.dtype"] = None,
    log: Callable[[str], None] = print,
    shard: Optional[Shard] = None,
) -> list[Path]:
    """Explain this rank's share of ``inputs`` in batches and write each image's files.

    Args:
        input_sz: each image is preprocessed to (3, input_sz, input_sz) (``imageops.preprocess``: BGR,
            mean-subtracted), in ``dtype`` (default float32); a bad image raises GradCamError.
        explain_batch: (N, 3, input_sz, input_sz) -> one :class:`ImageOutput` per image, in order.
        log: where stdout lines go; in multi-image mode each is prefixed with ``<image path>: ``.
        shard: this process's shard (default: from the torch.distributed environment variables).
    Returns:
        the written files. Raises :class:`ImagesSkipped` at the end if any image was skipped (under
        torchrun: on any rank; the ranks wait for each other first, see :func:`_sum_over_ranks`).
    """
    import torch

    from . import imageops

    def load(path: Path) -> torch.Tensor:
        return imageops.preprocess(path, input_sz, input_sz, dtype or torch.float32)

    shard = shard or Shard.from_env()
    run = _Run(inputs.many, shard, log)
    chunks = shard.take(inputs.jobs, batch_size)
    total = sum(map(len, chunks))
    with run.progress(total):
        for chunk in chunks:
            loaded = [(job, image) for job in chunk if (image := run.attempt(job, load, job.path)) is not None]
            if loaded:
                run.explain(loaded, explain_batch)
    run.finish(total)
    return run.written


class _Run:
    """The bookkeeping of :func:`explain_images`: progress bar, stdout/stderr lines, skips, writes."""

    def __init__(self, many: bool, shard: Shard, log: Callable[[str], None]) -> None:
        self.many, self.shard, self.log = many, shard, log
        self.written: list[Path] = []
        self.skipped = 0
        self.bar: Any = None

    @contextlib.contextmanager
    def progress(self, total: int) -> Iterator[None]:
        """A tqdm bar on stderr in multi-image mode when stderr is a terminal (one line per rank)."""
        from tqdm import tqdm

        show = self.many and sys.stderr.isatty()
        with tqdm(total=total, unit="img", file=sys.stderr, disable=not show, desc=self.shard.describe() or None,
                  position=self.shard.local_rank) as self.bar:
            yield

    def say(self, line: str, to: Callable[[str], None]) -> None:
        """Print a line without tearing the progress bar."""
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stderr):
            to(line)

    def attempt(self, job: ImageJob, action: Callable[..., T], *args: Any) -> Optional[T]:
        """``action(*args)``; in multi-image mode a GradCamError skips the image (one stderr line)."""
        try:
            return action(*args)
        except GradCamError as err:
            if not self.many:
                raise
            self.skipped += 1
            self.bar.update(1)
            self.say(f"skipping {job.shown}: {err}", _stderr)
            return None

    def explain(self, batch: list[tuple[ImageJob, "torch.Tensor"]],
                explain_batch: Callable[["torch.Tensor"], Sequence[ImageOutput]]) -> None:
        """One forward for the batch, then each image's lines and files."""
        import torch

        from . import outputs

        results = explain_batch(torch.stack([image for _, image in batch]))
        for (job, _), result in zip(batch, results):
            for line in result.lines:
                self.say(f"{job.shown}: {line}" if self.many else line, self.log)
            files = self.attempt(job, outputs.write_all, job.out_dir, result.images)
            if files is not None:
                self.written += files
                self.bar.update(1)

    def finish(self, total: int) -> None:
        """Raise :class:`ImagesSkipped` if this rank (or, under torchrun, any rank) skipped an image."""
        counts = _sum_over_ranks(self.shard, (self.skipped, total))
        if counts is None:  # one process, or ranks without a rendezvous: this rank's own count
            counts = (self.skipped, total)
        if not counts[0]:
            return
        mine = f"skipped {self.skipped} of {total} images"
        if self.shard.world == 1:
            message = f"{mine} (see the 'skipping' lines above)"
        else:
            message = f"{self.shard.describe()}: {mine}; over all ranks: skipped {counts[0]} of {counts[1]}"
        raise ImagesSkipped(message, self.skipped, total, self.written)


def _sum_over_ranks(shard: Shard, counts: tuple[int, int]) -> Optional[tuple[int, int]]:
    """(skipped, total) summed over the ranks, or None for one process or without a rendezvous
    (``MASTER_ADDR`` unset).

    A short-lived gloo process group, made only now that this rank's work is done: making it waits
    for every rank, so no rank exits before the others are finished (torchrun stops the remaining
    ranks as soon as one exits with an error, which would cut their shards short), and every rank
    learns whether any image was skipped. The group is always destroyed; one the caller had already
    made is used and kept.
    """
    if shard.world == 1 or not os.environ.get("MASTER_ADDR"):
        return None
    import datetime

    import torch
    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:  # ranks finish at different times: wait for the slowest one, however long its shard takes
        dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world,
                                timeout=datetime.timedelta(days=7))
    try:
        total = torch.tensor(counts, dtype=torch.int64)
        dist.all_reduce(total)
        return int(total[0]), int(total[1])
    finally:
        if own:
            dist.destroy_process_group()


def _stderr(line: str) -> None:
    write_line(sys.stderr, line)
