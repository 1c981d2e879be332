"""``classification.py`` (``th classification.lua``): its options checked, its printed lines, its files.

Labels are 1-based, as in Lua (243 is ImageNet's 0-based class 242, "boxer"): on the command line, in
messages and in file names; :mod:`gradcam_core.tasks.classify` takes 0-based indices.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..engine import Explanation
from ..engine.layers import parameter_dtype
from ..errors import GradCamError
from ..run.inputs import Inputs
from ..tasks.classify import (
    ORIGINAL_LAYER,
    Classifier,
    InputOptions,
    default_classifier_layer,
    explain_classes,
    load_model,
)
from .program import Described, Log, Program, RunOptions, run_program

PREDICTED = -1  # -label -1: explain the predicted class
DEFAULT_LAYER = ORIGINAL_LAYER  # the original's -layer_name (VGG-16's relu5_3)


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


def class_indices(labels: list[int]) -> list[int | None]:
    """1-based ``-label`` values -> 0-based class indices (None = predicted); 0 and below are refused."""
    for lab in labels:
        if lab != PREDICTED and lab < 1:
            raise GradCamError(f"-label {lab} is not a label: labels are 1-based (-1 = the predicted class)")
    return [None if lab == PREDICTED else lab - 1 for lab in labels]


def named_labels(labels: list[int | str], model: Classifier) -> list[int]:
    """``-label`` values with class names (``-label 'tiger cat'``) turned into 1-based labels by the
    model's class names (case-insensitive; an ambiguous name lists its candidates)."""
    out = []
    for lab in labels:
        if isinstance(lab, int):
            out.append(lab)
        elif model.names is None:
            raise GradCamError(f"-label {lab!r}: this model has no class names to look it up in; give a 1-based "
                               "label, or the names with -synset_file (Caffe's synset_words.txt format)")
        else:
            try:
                out.append(model.names.lookup(lab) + 1)
            except GradCamError as err:
                raise GradCamError(f"-label {lab!r}: {err}") from None
    return out


class ClassificationProgram(Program[list[int]]):
    """classification.lua's loading, lines and file names; a result is an image's 1-based labels."""

    prefix = "classify"
    nonfinite_hint = "check the weights and the preprocessing options (-mean_value, -mean_file, -input_scale)"

    def __init__(self, opts: ClassificationOptions) -> None:
        self.opts = opts
        class_indices([lab for lab in opts.labels if isinstance(lab, int)])  # refused before loading

    def load(self, log: Log) -> nn.Module:
        opts = self.opts
        self.model = load_model(opts.model_file, proto_file=opts.proto_file, arch=opts.arch, device=opts.device,
                                synset_file=opts.synset_file, inputs=opts.input_options)
        log(f"Successfully loaded {opts.model_file}")
        self.model_name = str(opts.model_file)
        self.net, self.preprocessing = self.model.net, self.model.preprocessing
        self.fixed_batch = getattr(self.net, "batch_size", None) if self.model.fmt == "onnx" else None
        self.labels = named_labels(opts.labels, self.model)
        self.classes = class_indices(self.labels)
        self.label_names = [f"-label {lab} (labels are 1-based)" for lab in self.labels]
        return self.net

    def input_size(self, requested: int | None) -> int:
        """``-input_sz``, or the model's own size (an ONNX file's metadata or fixed input), else 224;
        a size a fixed-size model does not take is one line naming both."""
        return self.model.square_input_size(requested)

    def choose_layer(self, layer: str, net: nn.Module, input_sz: int, log: Log) -> str:
        """``-layer_name`` left at the original's default on a net that has no such layer: the last
        layer whose output is a spatial map, printed."""
        if layer != DEFAULT_LAYER:
            return layer
        probe = torch.zeros(1, 3, input_sz, input_sz, device=self.opts.device, dtype=parameter_dtype(net))
        chosen = default_classifier_layer(net, probe, DEFAULT_LAYER)
        if chosen != layer:
            log(f"Grad-CAM layer: {chosen} (the last layer with a spatial output; -layer_name chooses another)")
        return chosen

    def explain(self, images: torch.Tensor, layer: str) -> tuple[Explanation, list[list[int]]]:
        expl, resolved = explain_classes(self.net, images, layer, self.classes, names=self.label_names)
        if self.model.names is not None:
            self.model.names.check_count(expl.scores.reshape(expl.scores.shape[0], -1).shape[1])
        return expl, [[c + 1 for c in per_image] for per_image in resolved]

    def describe(self, labels: list[int]) -> Described:
        """The stdout lines and file names of an image, as a single-image run gives them: the
        original's line, then each target's class name where the model's names are known."""
        lines = []
        if PREDICTED in self.labels:
            lines.append(f"No label provided, using predicted label \t {labels[self.labels.index(PREDICTED)]}")
        if self.model.names is not None:
            lines += [f"Label {label}: {self.model.names.name(label - 1)}" for label in labels]
        name = self.opts.output_image_name
        return Described(lines, [_output_name(name, label, len(labels)) for label in labels])


def run(opts: ClassificationOptions, log: Log = print) -> list[Path]:
    """The whole of ``th classification.lua``, for one image or many: returns the written files."""
    common = RunOptions(opts.layer_name, opts.inputs, opts.input_sz, opts.batch_size, opts.save_as_heatmap,
                        opts.save_overlay)
    return run_program(ClassificationProgram(opts), common, log)


def _output_name(output_image_name: str, label: int, n_labels: int) -> str:
    """The original named files by ``-output_image_name`` or else the label; with several labels in
    one run a given name gets ``_<label>`` so the files stay apart."""
    if not output_image_name:
        return str(label)
    return output_image_name if n_labels == 1 else f"{output_image_name}_{label}"
