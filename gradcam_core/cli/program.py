"""What the three programs share: load, check the layer, explain the images a batch at a time, render
each target's three PNGs (and, with ``-save_overlay 1``, its overlay), print each image's lines
(:func:`run_program`).

A program (:class:`Program`) keeps only what is its own: what it loads and prints before the images,
how it turns a batch into the task's 0-based results, and how it words an image's results (its lines
and the name of each target in the file names).
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch

from ..engine import Explanation, resolve_layer
from ..run import outputs
from ..run.batches import ImageOutput, explain_images, nonfinite_message, unguided_message
from ..run.inputs import Inputs
from .shapecheck import input_size_errors

Log = Callable[[str], None]
R = TypeVar("R")  # one image's results, as the program's task gives them


@dataclass
class Described:
    """One image's results as the program words them: its stdout lines (as a single-image run prints
    them) and the name of each target in the file names (target k's maps are the explanation's k-th)."""

    lines: list[str]
    names: list[str]


@dataclass
class RunOptions:
    """The options every program has (``-layer_name`` / ``-layer``, ``-input_sz``, ...)."""

    layer: str
    inputs: Inputs
    input_sz: int | None
    """``-input_sz``; None = not given: the loaded model's own size (:meth:`Program.input_size`)."""
    batch_size: int
    save_as_heatmap: bool
    save_overlay: bool = False
    """``-save_overlay 1``: one more file per target, ``<prefix>_overlay_<name>.png``."""


class Program(abc.ABC, Generic[R]):
    """One of the three programs, as :func:`run_program` drives it."""

    prefix: ClassVar[str]
    """The files' prefix: ``classify``, ``vqa`` or ``caption``."""

    dtype: ClassVar[torch.dtype] = torch.float32
    """The precision of the images and of the rendered maps (the original's default tensor type)."""

    preprocessing: Any = None
    """The model's :class:`~gradcam_core.image.preprocessing.Preprocessing`, set by ``load`` (None: the
    original's ``utils.preprocess``)."""

    fixed_batch: Any = None
    """A batch size the loaded model fixes (an ONNX export with its batch axis baked in), or None."""

    model_name: str = "the model"
    """How messages name the loaded model (its file), set by ``load``."""

    nonfinite_hint: ClassVar[str] = "check the model's weights"
    """What the line for an image with NaN or infinite scores or maps tells the user to check."""

    @abc.abstractmethod
    def load(self, log: Log) -> torch.nn.Module:
        """Load the models (printing what the original printed while loading); return the net whose
        layer is explained, so that an unknown layer fails before any work."""

    def input_size(self, requested: int | None) -> int:
        """The side of the square input, once the model is loaded: ``requested`` (``-input_sz``), or
        for None the model's own size (the original's 224 here)."""
        return 224 if requested is None else requested

    def choose_layer(self, layer: str, net: Any, input_sz: int, log: Log) -> str:
        """The layer to explain: ``layer`` as given, unless the program picks another (it may print
        which)."""
        return layer

    def start(self, log: Log) -> None:
        """After the layer check, before the first image: further checks and the lines printed once."""

    @abc.abstractmethod
    def explain(self, images: torch.Tensor, layer: str) -> tuple[Explanation, Sequence[R]]:
        """The task's explanation of a batch (N, 3, S, S) and each image's results."""

    @abc.abstractmethod
    def describe(self, result: R) -> Described:
        """One image's lines and target names."""


def run_program(program: Program[Any], opts: RunOptions, log: Log = print) -> list[Path]:
    """The whole run of a program, for one image or many: returns the written files."""
    net = program.load(log)
    input_sz = program.input_size(opts.input_sz)
    _check_input_size(net, input_sz)
    layer = program.choose_layer(opts.layer, net, input_sz, log)
    resolve_layer(net, layer)  # an unknown layer fails before any work, listing valid names
    program.start(log)

    def explain_batch(images: torch.Tensor, rgbs: Sequence[torch.Tensor | None] | None) -> list[ImageOutput]:
        with input_size_errors(input_sz):
            expl, results = program.explain(images, layer)
        outs = [ImageOutput([], [], error=nonfinite_message(bad, program.model_name, program.nonfinite_hint))
                if (bad := expl.nonfinite(n)) else
                _image_output(program, opts, expl, n, program.describe(r), rgbs[n] if rgbs is not None else None)
                for n, r in enumerate(results)]
        if expl.unguided:  # one stderr line per run (the batch loop prints each warning once)
            for out in outs:
                out.warning = unguided_message(expl.unguided)
        return outs

    batch_size = program.fixed_batch or opts.batch_size
    return explain_images(opts.inputs, batch_size, input_sz, explain_batch, dtype=program.dtype,
                          preprocessing=program.preprocessing, log=log, keep_rgb=opts.save_overlay)


def _check_input_size(net: torch.nn.Module, input_sz: int) -> None:
    """Refuse an ``-input_sz`` the net cannot take before any image is loaded, where the net knows its
    layers' shapes (``GraphNet.check_input_size``: arithmetic only); other nets fail at their first
    forward, with the same line."""
    check = getattr(net, "check_input_size", None)
    if check is not None:
        spec = getattr(net, "input_spec", None)
        with input_size_errors(input_sz):
            check(getattr(spec, "channels", None) or 3, input_sz, input_sz)


def _image_output(program: Program[Any], opts: RunOptions, expl: Explanation, n: int,
                  described: Described, rgb: torch.Tensor | None) -> ImageOutput:
    """Image ``n``'s lines and the three PNGs of each of its targets, then its overlay when ``rgb``
    (3, S, S), the image before preprocessing, is given (``-save_overlay 1``)."""
    rendered: list[outputs.Rendered] = []
    assert expl.guided is not None  # the scripts always explain with guided backprop
    for k, name in enumerate(described.names):
        rendered += outputs.render_triplet(
            program.prefix, name, expl.cam[n, k], expl.guided[n, k], heatmap=opts.save_as_heatmap,
            dtype=program.dtype,
        )
        if rgb is not None:  # the same scaled map as the gcam file, always as the colour heatmap
            rendered.append(outputs.render_overlay(program.prefix, name, expl.cam[n, k], rgb))
    return ImageOutput(described.lines, rendered)
