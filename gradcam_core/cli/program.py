"""The run of every program (:func:`run_task`): a loaded task (:mod:`gradcam_core.run.task`) and its
targets -> the layer checked, the images explained a batch at a time, each target's files rendered
(every method's; with ``-save_overlay 1`` its overlays), each image's lines printed.

The programs (``cli/classification.py``, ``cli/vqa.py``, ``cli/captioning.py``) keep only what is
their own: their options, what they print while loading, how their option values become the task's
targets.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..engine import resolve_layer
from ..engine.layers import describe_default
from ..run.batches import ImageOutput, explain_images, nonfinite_message, unguided_message
from ..run.inputs import Inputs
from ..run.task import Methods, Task, render_image
from .shapecheck import input_size_errors

Log = Callable[[str], None]


@dataclass
class RunOptions:
    """The options every program has (``-layer_name`` / ``-layer``, ``-input_sz``, ``-method``, ...)."""

    layer: str
    inputs: Inputs
    input_sz: int | None
    """``-input_sz``; None = not given: the loaded model's own size (:meth:`Task.input_size`)."""
    batch_size: int
    save_as_heatmap: bool
    save_overlay: bool = False
    """``-save_overlay 1``: one more file per target and method, ``<prefix>_overlay_<name>.png``."""
    methods: Methods = field(default_factory=Methods)
    """``-method`` and its modifiers."""
    nonfinite_hint: str = "check the model's weights"
    """What the line for an image with NaN or infinite scores or maps tells the user to check."""


def run_task(task: Task[Any], targets: Any, opts: RunOptions, log: Log = print) -> list[Path]:
    """The whole run of a loaded task for its checked ``targets``, for one image or many: returns the
    written files. ``-layer_name`` left at the original's default on a net without that layer is the
    task's default layer, printed."""
    input_sz = task.input_size(opts.input_sz)
    _check_input_size(task.net, input_sz)
    layer = opts.layer
    if layer == task.original_layer:
        layer = task.default_layer(input_sz)
        if layer != opts.layer:
            reason = task.default_layer_reason or describe_default(task.net, layer)
            log(f"Grad-CAM layer: {layer} ({reason}; -layer_name chooses another)")
    resolve_layer(task.net, layer)  # an unknown layer fails before any work, listing valid names
    for line in task.start_lines(targets):
        log(line)
    methods, dtype = opts.methods, task.dtype

    def explain_batch(images: torch.Tensor, rgbs: Sequence[torch.Tensor | None] | None) -> list[ImageOutput]:
        with input_size_errors(input_sz):
            batch = task.explain(images, layer, targets, methods)
        # guided backprop that could not guide every activation: one stderr line per run (the batch
        # loop prints each warning once)
        warning = unguided_message(batch.unguided) if batch.unguided else ""
        return [ImageOutput([], [], error=nonfinite_message(bad, task.model_name, opts.nonfinite_hint))
                if (bad := batch.nonfinite(n)) else
                ImageOutput(image.lines, render_image(task.prefix, batch, n, methods, heatmap=opts.save_as_heatmap,
                                                      dtype=dtype, rgb=rgbs[n] if rgbs is not None else None)
                            + task.extra_images(batch, n, overlay=opts.save_overlay),
                            warning=warning)
                for n, image in enumerate(batch.images)]

    batch_size = task.fixed_batch or opts.batch_size
    return explain_images(opts.inputs, batch_size, input_sz, explain_batch, dtype=dtype,
                          preprocessing=task.preprocessing, log=log, keep_rgb=opts.save_overlay)


def _check_input_size(net: torch.nn.Module, input_sz: int) -> None:
    """Refuse an ``-input_sz`` the net cannot take before any image is loaded, where the net knows its
    layers' shapes (``GraphNet.check_input_size``: arithmetic only); other nets fail at their first
    forward, with the same line."""
    check = getattr(net, "check_input_size", None)
    if check is not None:
        spec = getattr(net, "input_spec", None)
        with input_size_errors(input_sz):
            check(getattr(spec, "channels", None) or 3, input_sz, input_sz)
