"""Classification as every front end drives it (:class:`ClassificationTask`): any classifier (Caffe,
ONNX, torchvision), targets named by 1-based labels or class names.

Labels are 1-based, as in Lua (243 is ImageNet's 0-based class 242, "boxer"): as typed, in messages,
in file names and in results; :mod:`gradcam_core.tasks.classify` takes 0-based indices.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..engine import explain
from ..engine.layers import parameter_dtype
from ..errors import GradCamError
from ..formats.synset import ClassNames, is_label_number
from ..tasks.classify import (
    ORIGINAL_LAYER,
    Classifier,
    InputOptions,
    class_targets,
    default_classifier_layer,
    load_model,
    resolve_classes,
)
from .task import BatchResult, ImageResult, Methods, TargetResult, Task

PREDICTED = -1
"""The label of "each image's predicted class" (``-label -1``; '' in a form)."""

TOP = 5
"""How many of the most probable classes a result lists."""


def label_classes(labels: Sequence[int], option: str = "label", outputs: int | None = None) -> list[int | None]:
    """1-based labels -> 0-based class indices (None = predicted, :data:`PREDICTED`). A label below 1
    is refused, and with ``outputs`` (the model's number of classes, where it is known) one above it;
    messages name the field ``option``."""
    out: list[int | None] = []
    for lab in labels:
        if lab == PREDICTED:
            out.append(None)
        elif outputs is not None and not 1 <= lab <= outputs:
            raise GradCamError(f"{option} {lab} is not one of this model's labels: 1 to {outputs} (1-based)")
        elif lab < 1:
            raise GradCamError(f"{option} {lab} is not a label: labels are 1-based (-1 = the predicted class)")
        else:
            out.append(lab - 1)
    return out


@dataclass(frozen=True)
class ClassTargets:
    """The classes to explain: ``labels`` as asked (1-based, :data:`PREDICTED` for the predicted class),
    ``classes`` 0-based (None = predicted); ``option`` names the field in messages; ``output_name``
    replaces the label in file names (``-output_image_name``)."""

    labels: list[int]
    classes: list[int | None]
    option: str = "label"
    output_name: str = ""


class ClassificationTask(Task[ClassTargets]):
    """A loaded classifier; a target is a class."""

    name, prefix, target_field = "classification", "classify", "label"
    original_layer = ORIGINAL_LAYER

    def __init__(self, model: Classifier, device: torch.device = torch.device("cpu")) -> None:
        self.model, self.net, self.device = model, model.net, device
        self.model_name, self.preprocessing = model.source, model.preprocessing
        self.fixed_batch = getattr(self.net, "batch_size", None) if model.fmt == "onnx" else None
        self.names: ClassNames | None = model.names
        """The class names targets are looked up in and results named by (None: unknown)."""
        self.outputs: int | None = None
        """The number of classes, once :meth:`count_outputs` has run (labels above it are refused early)."""

    @classmethod
    def load(cls, model_file: Path, *, proto_file: Path | None = None, arch: str = "",
             device: torch.device = torch.device("cpu"), synset_file: Path | None = None,
             inputs: InputOptions | None = None) -> ClassificationTask:
        """The classifier of ``model_file`` (see :func:`~gradcam_core.tasks.classify.load_model`)."""
        return cls(load_model(model_file, proto_file=proto_file, arch=arch, device=device, synset_file=synset_file,
                              inputs=inputs or InputOptions()), device)

    def input_size(self, requested: int | None) -> int:
        """``requested``, or the model's own size (an ONNX file's metadata or fixed input), else 224; a
        size a fixed-size model does not take is one line naming both."""
        return self.model.square_input_size(requested)

    def _probe(self, input_sz: int) -> torch.Tensor:
        return torch.zeros(1, 3, input_sz, input_sz, device=self.device, dtype=parameter_dtype(self.net))

    def default_layer(self, input_sz: int) -> str:
        """The original's ``relu5_3`` where the net has it, else its last layer with a spatial output."""
        return default_classifier_layer(self.net, self._probe(input_sz), ORIGINAL_LAYER)

    def count_outputs(self, input_sz: int) -> int:
        """The number of classes at this input size (one forward of zeros), checked against the class
        names; from now on :meth:`targets` refuses labels above it."""
        with torch.no_grad():
            self.outputs = int(self.net(self._probe(input_sz)).reshape(1, -1).shape[1])
        if self.names is not None:
            self.names.check_count(self.outputs)
        return self.outputs

    def config(self) -> dict[str, Any]:
        names = self.names
        return {"classes": [names.name(i) for i in range(len(names))] if names else None}

    def targets(self, values: Sequence[str], *, option: str = "", strict: bool = False,
                question: str | None = None, output_name: str = "", names_hint: str = "") -> ClassTargets:
        """Each value a 1-based label (ASCII digits, as Lua read them), ``-1`` or '' for the predicted
        class, or a class name (case-insensitive; an ambiguous one lists its candidates). ``names_hint``
        ends the message for a name when the model has no class names (where to give them)."""
        option = option or self.target_field
        labels = []
        for value in values:
            text = value.strip()
            if not text:
                labels.append(PREDICTED)
            elif is_label_number(text):
                labels.append(int(text))
            else:
                labels.append(self.lookup(text, option, names_hint) + 1)
        return ClassTargets(labels, label_classes(labels, option, self.outputs), option, output_name)

    def lookup(self, name: str, option: str = "label", hint: str = "") -> int:
        """The 0-based class of a class name."""
        if self.names is None:
            raise GradCamError(f"{option} {name!r}: this model has no class names to look it up in; give a 1-based "
                               f"label{hint}")
        try:
            return self.names.lookup(name)
        except GradCamError as err:
            raise GradCamError(f"{option} {name!r}: {err}") from None

    def explain(self, images: torch.Tensor, layer: str, targets: ClassTargets, methods: Methods) -> BatchResult:
        named = [f"{targets.option} {lab} (labels are 1-based)" for lab in targets.labels]
        expls = explain(self.net, images, layer, class_targets(targets.classes, named), **methods.explain_options())
        scores = expls[methods.names[0]].scores
        flat = scores.reshape(scores.shape[0], -1)
        if self.names is not None:
            self.names.check_count(flat.shape[1])
        resolved = resolve_classes(scores, targets.classes)
        return BatchResult(expls, [self._image(flat[n], [c + 1 for c in per_image], targets)
                                   for n, per_image in enumerate(resolved)])

    def _image(self, scores: torch.Tensor, labels: list[int], targets: ClassTargets) -> ImageResult:
        """One image's results from its scores (K,) and the 1-based label of each target. Its lines
        are the original's line for a predicted class, then each target's class name where known."""
        lines = []
        if PREDICTED in targets.labels:
            lines.append(f"No label provided, using predicted label \t {labels[targets.labels.index(PREDICTED)]}")
        if self.names is not None:
            lines += [f"Label {label}: {self.names.name(label - 1)}" for label in labels]
        probs = torch.softmax(scores.double(), 0)
        top = torch.topk(probs, min(TOP, probs.numel()))
        predictions = [self.named(int(i) + 1) | {"score": float(p)} for p, i in zip(top.values, top.indices)]
        return ImageResult(
            [TargetResult(_output_name(targets.output_name, label, len(labels)), self.named(label)) for label in labels],
            self.named(int(probs.argmax()) + 1), predictions, lines)

    def named(self, label: int) -> dict[str, Any]:
        """A 1-based label with its class name (None where unknown)."""
        return {"label": label, "name": self.names.name(label - 1) if self.names else None}


def _output_name(output_image_name: str, label: int, n_labels: int) -> str:
    """The original named files by ``-output_image_name`` or else the label; with several labels in
    one run a given name gets ``_<label>`` so the files stay apart."""
    if not output_image_name:
        return str(label)
    return output_image_name if n_labels == 1 else f"{output_image_name}_{label}"
