"""The batch loop of every front end: images loaded, explained a batch at a time, lines printed, files
written, bad images skipped and counted.

One mechanism for the three programs (classification, VQA, captioning). Each gives
:func:`explain_images` its input size and a function that explains a batch; this module loads the
images (``image.preprocess``, as every grad-cam script fed its CNN) and does the rest. With
``keep_rgb`` each image is also handed over as the net saw it before preprocessing (for the overlay).

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
    skipped; the rest completes, then :class:`ImagesSkipped` (exit code 2; 0 under torchrun, whose
    launcher cannot pass on a rank's exit code) says how many of how many were skipped. An image
    whose explanation is not finite (NaN or infinite scores or maps) is skipped the same way. In
    single-image mode the error is raised as before.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from ..errors import GradCamError
from .inputs import ImageJob, Inputs
from .shards import Shard, sum_over_ranks

if TYPE_CHECKING:  # torch is imported only where images are explained
    import torch

    from ..image.preprocessing import Preprocessing
    from .outputs import Rendered

T = TypeVar("T")

ExplainBatch = Callable[["torch.Tensor", Sequence[Optional["torch.Tensor"]] | None], Sequence["ImageOutput"]]
"""``explain_batch(images, rgbs)`` of :func:`explain_images`: the batch (N, 3, S, S) of net inputs and, with
``keep_rgb``, each image's (3, S, S) RGB in [0, 1] before preprocessing (else None) -> one
:class:`ImageOutput` per image, in order."""


def write_line(stream: Any, line: str) -> None:
    """One write call for the line and its newline: with unbuffered streams (torchrun sets
    PYTHONUNBUFFERED) ``print`` writes them separately and lines of several ranks get interleaved.
    A line for stderr comes after what stdout holds (stdout is flushed first): into one file or
    terminal, stdout's buffered lines would otherwise land after it, or around it."""
    if stream is not None:
        if stream is sys.stderr and sys.stdout is not None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):  # a closed or broken stdout: the stderr line still goes out
                pass
        stream.write(line + "\n")
        stream.flush()


# ------------------------------------------------------------------------------ running the batches


@dataclass
class ImageOutput:
    """What a pipeline made of one image: stdout lines (as a single-image run prints them) and the
    rendered PNGs (named as a single-image run names them)."""

    lines: list[str]
    images: list[Rendered]
    error: str = ""
    """Why the image has no results (one line naming what failed, e.g. non-finite scores), or "": in
    folder and glob mode the image is skipped with it, in single-image mode the run stops with it
    (prefixed with the image's path); nothing is printed or written for it either way."""
    warning: str = ""
    """A caveat about its results (:func:`unguided_message`), or "": printed on stderr as
    ``warning: <it>`` once per run, however many images carry it."""


class ImagesSkipped(GradCamError):
    """Some images of a folder or glob run were skipped (each reported on stderr); the others were
    explained. ``written`` holds the files this process wrote.

    ``exit_code`` is what the command line exits with: 2, or 0 under torchrun, which would turn any
    nonzero exit of a rank into its own traceback and exit code 1; the message (on rank 0 only, ""
    on the others) then says so."""

    def __init__(self, message: str, skipped: int, total: int, written: list[Path], exit_code: int = 2) -> None:
        super().__init__(message)
        self.skipped, self.total, self.written, self.exit_code = skipped, total, written, exit_code


def explain_images(
    inputs: Inputs,
    batch_size: int,
    input_sz: int | None,
    explain_batch: ExplainBatch,
    *,
    dtype: torch.dtype | None = None,
    preprocessing: Preprocessing | None = None,
    keep_rgb: bool = False,
    log: Callable[[str], None] = print,
    shard: Shard | None = None,
) -> list[Path]:
    """Explain this rank's share of ``inputs`` in batches and write each image's files.

    Args:
        input_sz: each image is preprocessed to (3, input_sz, input_sz) by the model's
            ``preprocessing`` (default: the original's ``image.preprocess``: BGR, mean-subtracted), in
            ``dtype`` (default float32); a bad image raises GradCamError. None: each image at its own
            size (no scaling; give ``batch_size`` 1 unless all images have one size).
        explain_batch: ``(images, rgbs)`` -> one :class:`ImageOutput` per image, in order (see
            :data:`ExplainBatch`).
        keep_rgb: also keep each image's RGB before preprocessing (``load_rgb``; its net input is
            ``preprocessing.apply`` of it, the same bits as ``load_input``) and pass them as ``rgbs``;
            without it ``rgbs`` is None and nothing more is kept.
        log: where stdout lines go; in multi-image mode each is prefixed with ``<image path>: ``.
        shard: this process's shard (default: from the torch.distributed environment variables).
    Returns:
        the written files. Raises :class:`ImagesSkipped` at the end if any image was skipped (under
        torchrun: on any rank; the ranks wait for each other first, see :func:`sum_over_ranks`).
    """
    import torch

    from ..image.decode import load_image, to_rgb
    from ..image.preprocessing import load_input, load_rgb, net_input

    dtype = dtype or torch.float32

    def load(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The net input (3, S, S) and, with ``keep_rgb``, the RGB it was made from (else None)."""
        if input_sz is None:  # the image's own size (a detector resizes it itself)
            rgb = to_rgb(load_image(path, dtype=dtype))
            return net_input(rgb, preprocessing, dtype), rgb if keep_rgb else None
        if not keep_rgb:
            return load_input(path, input_sz, input_sz, preprocessing, dtype), None
        rgb = load_rgb(path, input_sz, input_sz, dtype)  # loaded once: load_input is apply(load_rgb(...))
        return net_input(rgb, preprocessing, dtype), rgb

    shard = shard or Shard.from_env()
    run = _Run(inputs.many, shard, log)
    chunks = shard.take(inputs.jobs, batch_size)
    total = sum(map(len, chunks))
    with run.progress(total):
        for chunk in chunks:
            loaded = [(job, image) for job in chunk if (image := run.attempt(job, load, job.path)) is not None]
            if loaded:
                run.explain(loaded, explain_batch, keep_rgb)
    run.finish(total)
    return run.written


class _Run:
    """The bookkeeping of :func:`explain_images`: progress bar, stdout/stderr lines, skips, writes."""

    def __init__(self, many: bool, shard: Shard, log: Callable[[str], None]) -> None:
        self.many, self.shard, self.log = many, shard, log
        self.written: list[Path] = []
        self.skipped = 0
        self.bar: Any = None
        self.warned: set[str] = set()

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

    def attempt(self, job: ImageJob, action: Callable[..., T], *args: Any) -> T | None:
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

    def explain(self, batch: list[tuple[ImageJob, tuple[torch.Tensor, torch.Tensor | None]]],
                explain_batch: ExplainBatch, keep_rgb: bool) -> None:
        """One forward for the batch, then each image's lines and files."""
        import torch

        from . import outputs

        images = torch.stack([x for _, (x, _) in batch])
        rgbs = [rgb for _, (_, rgb) in batch] if keep_rgb else None
        results = explain_batch(images, rgbs)
        for (job, _), result in zip(batch, results):
            if result.warning and result.warning not in self.warned:
                self.warned.add(result.warning)
                self.say(f"warning: {result.warning}", _stderr)
            if result.error:
                self.attempt(job, _fail, f"{job.path}: {result.error}" if not self.many else result.error)
                continue
            for line in result.lines:
                self.say(f"{job.shown}: {line}" if self.many else line, self.log)
            files = self.attempt(job, outputs.write_all, job.out_dir, result.images, job.out_root)
            if files is not None:
                self.written += files
                self.bar.update(1)

    def finish(self, total: int) -> None:
        """Raise :class:`ImagesSkipped` if this rank (or, under torchrun, any rank) skipped an image
        (under torchrun with ``exit_code`` 0, and a message on rank 0 only)."""
        counts = sum_over_ranks(self.shard, (self.skipped, total))
        rendezvous = counts is not None
        if counts is None:  # one process, or ranks without a rendezvous: this rank's own count
            counts = (self.skipped, total)
        if not counts[0]:
            return
        if self.shard.world == 1:
            message = f"skipped {self.skipped} of {total} images (see the 'skipping' lines above)"
            raise ImagesSkipped(message, self.skipped, total, self.written)
        # Several ranks: every rank has finished (sum_over_ranks waited for all), so rank 0's line
        # comes after every 'skipping' line; without a rendezvous each rank reports its own count.
        if rendezvous:
            message = "" if self.shard.rank else (
                f"skipped {counts[0]} of {counts[1]} images over {self.shard.world} ranks (see the 'skipping' "
                "lines above); exit code 0, as torchrun cannot pass on exit code 2")
        else:
            message = (f"{self.shard.describe()}: skipped {self.skipped} of {total} images (see the 'skipping' "
                       "lines above); exit code 0, as torchrun cannot pass on exit code 2")
        raise ImagesSkipped(message, self.skipped, total, self.written, exit_code=0)


def nonfinite_message(what: str, model: str, hint: str, image: str = "") -> str:
    """The line for an image whose ``what`` (``Explanation.nonfinite``: "scores", ...) holds NaN or
    infinity, naming the model and, where given, the image (the batch loop adds the image's path
    itself, as it does to every line of an image)."""
    on = f" on {image}" if image else ""
    return f"non-finite {what} (NaN/inf) from {model}{on}: {hint}"


def unguided_message(unguided: Sequence[str]) -> str:
    """The line for guided backprop that could not change some activations (``Explanation.unguided``:
    their plain gradient went through), naming them; shared with the web demo."""
    return (f"guided backprop has no rule for {', '.join(unguided)} in this model: the gradient passes "
            "through unguided there, so the guided images are partly plain backprop")


def _fail(message: str) -> None:
    raise GradCamError(message)


def _stderr(line: str) -> None:
    write_line(sys.stderr, line)
