"""``gradcam-evaluate``: its options checked, what it prints, the run (:mod:`gradcam_core.run.evaluate`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..run.classification import PREDICTED, ClassificationTask, label_classes
from ..run.evaluate import EvaluationOptions, evaluate
from ..run.inputs import Inputs
from ..tasks.classify import InputOptions
from .program import Log, _check_input_size
from .shapecheck import input_size_errors


@dataclass
class EvaluateOptions:
    """The command's options, converted and checked."""

    proto_file: Path | None
    model_file: Path
    inputs: Inputs
    out_dir: Path
    methods: tuple[str, ...]
    labels: list[int | str] = field(default_factory=lambda: [PREDICTED])
    layer_name: str = ""
    layer_layout: str = "auto"
    input_sz: int | None = None
    steps: int = 224
    batch_size: int = 32
    boxes: Path | None = None
    save_overlay: bool = False
    device: torch.device = torch.device("cpu")
    arch: str = ""
    synset_file: Path | None = None
    input_options: InputOptions = field(default_factory=InputOptions)
    seed: int = 123


def run(opts: EvaluateOptions, log: Log = print, warn: Log = print) -> list[Path]:
    """The whole evaluation: returns the written files."""
    label_classes([lab for lab in opts.labels if isinstance(lab, int)], "-label")
    task = ClassificationTask.load(opts.model_file, proto_file=opts.proto_file, arch=opts.arch, device=opts.device,
                                   synset_file=opts.synset_file, inputs=opts.input_options)
    log(f"Successfully loaded {opts.model_file}")
    input_sz = task.input_size(opts.input_sz)
    _check_input_size(task.net, input_sz)
    task.count_outputs(input_sz)
    targets = task.targets([str(lab) for lab in opts.labels], option="-label")
    layer = opts.layer_name or task.default_layer(input_sz)
    from ..engine import resolve_layer

    resolve_layer(task.net, layer)
    log(f"Evaluating {len(opts.methods)} methods at layer {layer} on {len(opts.inputs.jobs)} image(s)")
    run_opts = EvaluationOptions(methods=opts.methods, layer=layer, steps=opts.steps, batch_size=opts.batch_size,
                                 layer_layout=opts.layer_layout, boxes=opts.boxes, save_overlay=opts.save_overlay, seed=opts.seed)
    with input_size_errors(input_sz):
        result = evaluate(task, opts.inputs, targets, run_opts, opts.out_dir, warn=warn, input_sz=input_sz)
    log(f"Wrote {opts.out_dir / 'results.csv'}, {opts.out_dir / 'summary.md'} and {len(result.written) - 2} plots "
        f"and figures")
    return result.written
