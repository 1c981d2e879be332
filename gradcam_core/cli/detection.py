"""``detection.py`` (``gradcam-detect``): a torchvision detector's boxes explained, its options turned
into a task (:mod:`gradcam_core.run.detection`) and targets, and the run: each image at its own size,
its files (each box's, every method's) and ``detect_boxes.png``, its lines printed."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..engine import resolve_layer
from ..errors import GradCamError
from ..run.batches import ImageOutput, explain_images, nonfinite_message, unguided_message
from ..run.detection import (
    MAX_BOXES,
    SCORE_THRESHOLD,
    DetectionTargets,
    DetectionTask,
    check_boxes,
    lookup_label,
    parse_box,
    render_boxes,
)
from ..run.inputs import Inputs
from ..run.task import Methods, render_image
from .program import Log

NONFINITE_HINT = "check the detector's weights"


@dataclass
class DetectionOptions:
    """The options of detection.py, converted and checked."""

    arch: str
    model_file: Path | None
    inputs: Inputs
    boxes: list[str] = field(default_factory=list)
    score_threshold: float = SCORE_THRESHOLD
    max_boxes: int = MAX_BOXES
    layer_name: str = ""
    save_as_heatmap: bool = True
    device: torch.device = torch.device("cpu")
    methods: Methods = field(default_factory=Methods)


def run(opts: DetectionOptions, log: Log = print) -> list[Path]:
    """The whole run: the boxes checked (against a single image's size too), the detector loaded, then
    :func:`run_detection`."""
    from functools import partial

    from ..tasks.detect import categories

    boxes = [parse_box(b, "box", partial(lookup_label, categories(opts.arch))) for b in opts.boxes if b.strip()]
    check_single_image(DetectionTargets(tuple(boxes), option="box"), opts.inputs)
    task = DetectionTask.load(opts.arch, opts.model_file, device=opts.device)
    log(f"Successfully loaded {opts.model_file}" if opts.model_file else
        f"No -model_file: {opts.arch} with random weights (its detections mean nothing)")
    return run_detection(task, opts, log)


def check_single_image(targets: DetectionTargets, inputs: Inputs) -> None:
    """Refuse a given box outside the one input image (its size read from its header) before any work;
    in folder and glob mode an image that a box leaves is skipped with that line."""
    if targets.boxes and not inputs.many:
        from ..image.decode import image_size

        check_boxes(targets, *image_size(inputs.jobs[0].path))


def run_detection(task: DetectionTask, opts: DetectionOptions, log: Log = print) -> list[Path]:
    """A loaded detector over the images: the layer checked (the default printed), the boxes checked
    against a single image's size before any work, each image explained alone; returns the files."""
    targets = task.targets(opts.boxes, option="box", score_threshold=opts.score_threshold, max_boxes=opts.max_boxes)
    layer = opts.layer_name
    if not layer:
        layer = task.default_layer()
        log(f"Grad-CAM layer: {layer} (the backbone's last stage; -layer_name chooses another)")
    resolve_layer(task.net, layer)
    check_single_image(targets, opts.inputs)
    methods = opts.methods

    def explain_batch(images: torch.Tensor, rgbs: Sequence[torch.Tensor | None] | None) -> list[ImageOutput]:
        try:
            check_boxes(targets, images.shape[-1], images.shape[-2])
        except GradCamError as err:  # a box outside this image: skipped in folder mode
            return [ImageOutput([], [], error=str(err))]
        batch = task.explain(images, layer, targets, methods)
        warning = unguided_message(batch.unguided) if batch.unguided else ""
        out = []
        for n, image in enumerate(batch.images):
            if bad := batch.nonfinite(n):
                out.append(ImageOutput([], [], error=nonfinite_message(bad, task.model_name, NONFINITE_HINT)))
                continue
            files = render_image(task.prefix, batch, n, methods, heatmap=opts.save_as_heatmap) if image.targets else []
            rgb = rgbs[n] if rgbs is not None else None
            assert rgb is not None  # (keep_rgb)
            files.append(render_boxes(task.prefix, rgb, image.predicted["boxes"]))
            out.append(ImageOutput(image.lines, files, warning=warning))
        return out

    return explain_images(opts.inputs, 1, None, explain_batch, preprocessing=task.preprocessing, log=log,
                          keep_rgb=True)


__all__ = ["DetectionOptions", "DetectionTargets", "run", "run_detection"]
