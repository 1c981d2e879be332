"""``captioning.py`` (``th captioning.lua``): its options checked, its targets (captions:
:mod:`gradcam_core.run.captioning`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..run.captioning import CaptioningTask
from ..run.inputs import Inputs
from ..run.task import Methods
from ..tasks.caption.target import DEFAULT_CAPTION
from .program import Log, RunOptions, run_task


@dataclass
class CaptioningOptions:
    """The options of captioning.lua, converted and checked (see captioning.py).

    ``captions``: the captions to explain ('' = each image's generated caption).
    ``inputs``: the image(s) and where each one's files go (:mod:`gradcam_core.run.inputs`).
    """

    model_path: Path
    inputs: Inputs
    captions: list[str] = field(default_factory=lambda: [DEFAULT_CAPTION])
    layer: str = "30"
    input_sz: int = 224
    save_as_heatmap: bool = True
    save_overlay: bool = False  # -save_overlay 1: one more file per target, <prefix>_overlay_<name>.png
    device: torch.device = torch.device("cpu")
    batch_size: int = 8
    methods: Methods = field(default_factory=Methods)  # -method and its modifiers


def run(opts: CaptioningOptions, log: Log = print) -> list[Path]:
    """The whole of ``th captioning.lua``, for one image or many: returns the written files."""
    task = CaptioningTask.load(opts.model_path, device=opts.device)
    targets = task.targets(opts.captions, option="-caption")  # a caption that does not fit fails before any work
    common = RunOptions(opts.layer, opts.inputs, opts.input_sz, opts.batch_size, opts.save_as_heatmap,
                        opts.save_overlay, opts.methods)
    return run_task(task, targets, common, log)
