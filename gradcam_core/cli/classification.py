"""``classification.py`` (``th classification.lua``): its options checked, its printed lines, its files.

Labels are 1-based, as in Lua (243 is ImageNet's 0-based class 242, "boxer"): on the command line, in
messages and in file names; :mod:`gradcam_core.tasks.classify` takes 0-based indices.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..engine import Explanation
from ..errors import GradCamError
from ..run import outputs
from ..run.batches import ImageOutput, explain_images
from ..run.inputs import Inputs
from ..tasks.classify import explain_classes, load_classifier
from .shapecheck import input_size_errors

PREDICTED = -1  # -label -1: explain the predicted class


@dataclass
class ClassificationOptions:
    """The options of classification.lua, converted and checked (see classification.py).

    ``inputs``: the image(s) and where each one's files go (:mod:`gradcam_core.run.inputs`).
    """

    proto_file: Path
    model_file: Path
    inputs: Inputs
    labels: list[int] = field(default_factory=lambda: [PREDICTED])  # 1-based; -1 = predicted
    layer_name: str = "relu5_3"
    input_sz: int = 224
    output_image_name: str = ""
    save_as_heatmap: bool = True
    device: torch.device = torch.device("cpu")
    batch_size: int = 8


def class_indices(labels: list[int]) -> list[int | None]:
    """1-based ``-label`` values -> 0-based class indices (None = predicted); 0 and below are refused."""
    for lab in labels:
        if lab != PREDICTED and lab < 1:
            raise GradCamError(f"-label {lab} is not a label: labels are 1-based (-1 = the predicted class)")
    return [None if lab == PREDICTED else lab - 1 for lab in labels]


def run(opts: ClassificationOptions, log: Callable[[str], None] = print) -> list[Path]:
    """The whole of ``th classification.lua``, for one image or many: returns the written files."""
    classes = class_indices(opts.labels)
    names = [f"-label {lab} (labels are 1-based)" for lab in opts.labels]
    net = load_classifier(opts.proto_file, opts.model_file, opts.device)
    log(f"Successfully loaded {opts.model_file}")
    net.index_of(opts.layer_name)  # an unknown layer fails before any work, listing valid names

    def explain_batch(images: torch.Tensor) -> list[ImageOutput]:
        with input_size_errors(opts.input_sz):
            expl, resolved = explain_classes(net, images, opts.layer_name, classes, names=names)
        return [_image_output(opts, expl, n, [c + 1 for c in per_image]) for n, per_image in enumerate(resolved)]

    return explain_images(opts.inputs, opts.batch_size, opts.input_sz, explain_batch, log=log)


def _image_output(opts: ClassificationOptions, expl: Explanation, n: int, labels: list[int]) -> ImageOutput:
    """Image ``n``'s stdout line and PNGs, as a single-image run gives them (``labels`` 1-based)."""
    lines = []
    if PREDICTED in opts.labels:
        lines.append(f"No label provided, using predicted label \t {labels[opts.labels.index(PREDICTED)]}")
    rendered: list[outputs.Rendered] = []
    for k, label in enumerate(labels):
        name = _output_name(opts.output_image_name, label, len(labels))
        rendered += outputs.render_triplet(
            "classify", name, expl.cam[n, k], expl.guided[n, k], heatmap=opts.save_as_heatmap
        )
    return ImageOutput(lines, rendered)


def _output_name(output_image_name: str, label: int, n_labels: int) -> str:
    """The original named files by ``-output_image_name`` or else the label; with several labels in
    one run a given name gets ``_<label>`` so the files stay apart."""
    if not output_image_name:
        return str(label)
    return output_image_name if n_labels == 1 else f"{output_image_name}_{label}"
