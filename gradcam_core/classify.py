"""Classification Grad-CAM: the pipeline behind ``classification.py`` (``th classification.lua``).

The original: load the Caffe net, drop its final SoftMax (``cnn:remove()``), preprocess the image,
forward, pick ``-label`` or the predicted class, seed a one-hot on the pre-softmax logits, then
Grad-CAM at ``-layer_name``, guided backprop and guided Grad-CAM, written as three PNGs.

Labels are 1-based, as in Lua (243 is ImageNet's 0-based class 242, "boxer"): on the command line, in
messages and in file names. The library below takes 1-based labels too, since it speaks for the CLI;
:func:`gradcam_core.explain` itself takes 0-based indices.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import batch, outputs
from .batch import ImageOutput, Inputs
from .caffe import CaffeNet, load_caffe
from .engine import Explanation, explain
from .errors import GradCamError
from .shapecheck import input_size_errors
from .targets import ClassTarget

PREDICTED = -1  # -label -1: explain the predicted class


@dataclass
class ClassificationOptions:
    """The options of classification.lua, converted and checked (see classification.py).

    ``inputs``: the image(s) and where each one's files go (:mod:`gradcam_core.batch`).
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


def load_classifier(proto_file: Path, model_file: Path, device: torch.device = torch.device("cpu")) -> CaffeNet:
    """The Caffe net with its final Softmax removed: Grad-CAM follows the pre-softmax logit.

    The Lua script removed the last module whatever it was; with loadcaffe that was the SoftMax of
    V1 files, but fc8 for V2 files (whose SoftMax loadcaffe had already dropped by a bug). Here only a
    final Softmax is removed, so V1 and V2 files give the same logits.
    """
    net = load_caffe(str(proto_file), str(model_file), device=device)
    if len(net) and isinstance(net.module_at(len(net)), nn.Softmax):
        net.remove_last()
    return net


def explain_labels(
    net: nn.Module, image: torch.Tensor, layer: str, labels: list[int]
) -> tuple[Explanation, list[list[int]]]:
    """Explain 1-based ``labels`` (``-1`` = each image's predicted class) for a batch of images.

    Args:
        image: (N, 3, S, S) preprocessed (BGR, mean-subtracted).
    Returns:
        the explanation (K = len(labels)) and, per image, the 1-based label of each target.
    """
    for lab in labels:
        if lab != PREDICTED and lab < 1:
            raise GradCamError(f"-label {lab} is not a label: labels are 1-based (-1 = the predicted class)")
    targets = [
        ClassTarget(None) if lab == PREDICTED else ClassTarget(lab - 1, label=f"-label {lab} (labels are 1-based)")
        for lab in labels
    ]
    expl = explain(net, image, layer, targets)
    predicted = (expl.scores.reshape(expl.scores.shape[0], -1).argmax(dim=1) + 1).tolist()
    resolved = [[p if lab == PREDICTED else lab for lab in labels] for p in predicted]
    return expl, resolved


def run(opts: ClassificationOptions, log: Callable[[str], None] = print) -> list[Path]:
    """The whole of ``th classification.lua``, for one image or many: returns the written files."""
    net = load_classifier(opts.proto_file, opts.model_file, opts.device)
    log(f"Successfully loaded {opts.model_file}")
    net.index_of(opts.layer_name)  # an unknown layer fails before any work, listing valid names

    def explain_batch(images: torch.Tensor) -> list[ImageOutput]:
        with input_size_errors(opts.input_sz):
            expl, resolved = explain_labels(net, images, opts.layer_name, opts.labels)
        return [_image_output(opts, expl, n, labels) for n, labels in enumerate(resolved)]

    return batch.explain_images(opts.inputs, opts.batch_size, opts.input_sz, explain_batch, log=log)


def _image_output(opts: ClassificationOptions, expl: Explanation, n: int, labels: list[int]) -> ImageOutput:
    """Image ``n``'s stdout line and PNGs, as a single-image run gives them."""
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
