"""``classification.py`` (``th classification.lua``): its options checked, its printed lines, its files.

Labels are 1-based, as in Lua (243 is ImageNet's 0-based class 242, "boxer"): on the command line, in
messages and in file names; :mod:`gradcam_core.tasks.classify` takes 0-based indices.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..engine import Explanation
from ..errors import GradCamError
from ..nets.graph import GraphNet
from ..run.inputs import Inputs
from ..tasks.classify import explain_classes, load_classifier
from .program import Described, Log, Program, RunOptions, run_program

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


class ClassificationProgram(Program[list[int]]):
    """classification.lua's loading, lines and file names; a result is an image's 1-based labels."""

    prefix = "classify"

    def __init__(self, opts: ClassificationOptions) -> None:
        self.opts = opts
        self.classes = class_indices(opts.labels)
        self.label_names = [f"-label {lab} (labels are 1-based)" for lab in opts.labels]

    def load(self, log: Log) -> GraphNet:
        self.net = load_classifier(self.opts.proto_file, self.opts.model_file, self.opts.device)
        log(f"Successfully loaded {self.opts.model_file}")
        return self.net

    def explain(self, images: torch.Tensor, layer: str) -> tuple[Explanation, list[list[int]]]:
        expl, resolved = explain_classes(self.net, images, layer, self.classes, names=self.label_names)
        return expl, [[c + 1 for c in per_image] for per_image in resolved]

    def describe(self, labels: list[int]) -> Described:
        """The stdout line and file names of an image, as a single-image run gives them."""
        opts, lines = self.opts, []
        if PREDICTED in opts.labels:
            lines.append(f"No label provided, using predicted label \t {labels[opts.labels.index(PREDICTED)]}")
        return Described(lines, [_output_name(opts.output_image_name, label, len(labels)) for label in labels])


def run(opts: ClassificationOptions, log: Log = print) -> list[Path]:
    """The whole of ``th classification.lua``, for one image or many: returns the written files."""
    common = RunOptions(opts.layer_name, opts.inputs, opts.input_sz, opts.batch_size, opts.save_as_heatmap)
    return run_program(ClassificationProgram(opts), common, log)


def _output_name(output_image_name: str, label: int, n_labels: int) -> str:
    """The original named files by ``-output_image_name`` or else the label; with several labels in
    one run a given name gets ``_<label>`` so the files stay apart."""
    if not output_image_name:
        return str(label)
    return output_image_name if n_labels == 1 else f"{output_image_name}_{label}"
