"""``segmentation.py``: its options checked, what it prints while loading, its targets.

Labels are 1-based, as classification.py's (``-label 16`` is VOC's 0-based class 15, "person"): on
the command line, in messages and in file names; the task (:mod:`gradcam_core.run.segmentation`)
turns them into classes. ``-mask`` is read and checked against every input image's size before any
image is explained.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import GradCamError
from ..run.inputs import Inputs
from ..run.segmentation import PREDICTED, SegmentationTask, label_classes
from ..run.task import Methods
from ..tasks.classify import InputOptions
from .program import Log, RunOptions, run_task

NONFINITE_HINT = "check the weights and the preprocessing options (-preprocess, -mean_value, -input_scale)"


@dataclass
class SegmentationOptions:
    """The options of segmentation.py, converted and checked (see the script's ``--help``)."""

    model_file: Path
    inputs: Inputs
    arch: str = ""
    labels: list[int | str] = field(default_factory=lambda: [PREDICTED])  # 1-based, or class names; -1 = all predicted
    mask_file: Path | None = None
    layer_name: str = ""  # '': the task's default layer
    input_sz: int | None = None  # None: the model's own size, 520 for -arch, else 224
    output_image_name: str = ""
    save_as_heatmap: bool = True
    save_overlay: bool = False
    device: torch.device = torch.device("cpu")
    batch_size: int = 8
    synset_file: Path | None = None
    input_options: InputOptions = field(default_factory=InputOptions)
    methods: Methods = field(default_factory=Methods)


def run(opts: SegmentationOptions, log: Log = print) -> list[Path]:
    """The whole run of segmentation.py, for one image or many: returns the written files."""
    label_classes([lab for lab in opts.labels if isinstance(lab, int)], "-label")  # refused before loading
    mask = read_mask(opts.mask_file, opts.inputs) if opts.mask_file is not None else None
    task = SegmentationTask.load(opts.model_file if opts.model_file != Path("") else None, arch=opts.arch,
                                 device=opts.device, synset_file=opts.synset_file, inputs=opts.input_options)
    log(f"Successfully loaded {opts.model_file}")
    task.count_outputs(task.input_size(opts.input_sz))  # a classifier refused; labels past the classes too
    targets = task.targets([str(lab) for lab in opts.labels], option="-label", mask=mask,
                           output_name=opts.output_image_name)
    common = RunOptions(opts.layer_name, opts.inputs, opts.input_sz, opts.batch_size, opts.save_as_heatmap,
                        opts.save_overlay, opts.methods, NONFINITE_HINT)
    return run_task(task, targets, common, log)


def read_mask(path: Path, inputs: Inputs) -> torch.Tensor:
    """``-mask``: its non-zero pixels (H, W) bool, refused (one line) when it has none or when an input
    image has another size (an image whose header cannot be read is left to the batch loop, which
    skips it with its own line)."""
    from ..image.decode import image_size
    from ..tasks.segment import load_mask

    mask = load_mask(path)
    if not bool(mask.any()):
        raise GradCamError(f"-mask {path}: it has no non-zero pixel, so there is nothing to sum a class over")
    height, width = mask.shape
    for job in inputs.jobs:
        try:
            size = image_size(job.path)
        except GradCamError:
            continue
        if size != (width, height):
            raise GradCamError(f"-mask {path} is {width}x{height} but the image {job.path} is {size[0]}x{size[1]}: "
                               "a mask has its image's size")
    return mask
