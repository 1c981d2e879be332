"""``classification.py`` (``th classification.lua``): its options checked, what it prints while loading,
its targets.

Labels are 1-based, as in Lua (243 is ImageNet's 0-based class 242, "boxer"): on the command line, in
messages and in file names; the task (:mod:`gradcam_core.run.classification`) turns them into classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..run.classification import PREDICTED, ClassificationTask, label_classes
from ..run.inputs import Inputs
from ..run.task import Methods
from ..tasks.classify import ORIGINAL_LAYER, InputOptions
from .program import Log, RunOptions, run_task

DEFAULT_LAYER = ORIGINAL_LAYER  # the original's -layer_name (VGG-16's relu5_3)
NAMES_HINT = ", or the names with -synset_file (Caffe's synset_words.txt format)"
NONFINITE_HINT = "check the weights and the preprocessing options (-mean_value, -mean_file, -input_scale)"


@dataclass
class ClassificationOptions:
    """The options of classification.lua, converted and checked (see classification.py).

    ``inputs``: the image(s) and where each one's files go (:mod:`gradcam_core.run.inputs`).
    """

    proto_file: Path | None
    model_file: Path
    inputs: Inputs
    labels: list[int | str] = field(default_factory=lambda: [PREDICTED])  # 1-based, or class names; -1 = predicted
    layer_name: str = DEFAULT_LAYER
    input_sz: int | None = None  # None (-input_sz not given): the model's own size, else 224
    output_image_name: str = ""
    save_as_heatmap: bool = True
    save_overlay: bool = False  # -save_overlay 1: one more file per target, <prefix>_overlay_<name>.png
    device: torch.device = torch.device("cpu")
    batch_size: int = 8
    arch: str = ""
    synset_file: Path | None = None
    input_options: InputOptions = field(default_factory=InputOptions)
    methods: Methods = field(default_factory=Methods)  # -method and its modifiers


def run(opts: ClassificationOptions, log: Log = print) -> list[Path]:
    """The whole of ``th classification.lua``, for one image or many: returns the written files."""
    label_classes([lab for lab in opts.labels if isinstance(lab, int)], "-label")  # refused before loading
    task = ClassificationTask.load(opts.model_file, proto_file=opts.proto_file, arch=opts.arch, device=opts.device,
                                   synset_file=opts.synset_file, inputs=opts.input_options)
    log(f"Successfully loaded {opts.model_file}")
    targets = task.targets([str(lab) for lab in opts.labels], option="-label", output_name=opts.output_image_name,
                           names_hint=NAMES_HINT)
    common = RunOptions(opts.layer_name, opts.inputs, opts.input_sz, opts.batch_size, opts.save_as_heatmap,
                        opts.save_overlay, opts.methods, NONFINITE_HINT)
    return run_task(task, targets, common, log)
