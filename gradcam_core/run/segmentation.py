"""Semantic segmentation as a front end drives it (:class:`SegmentationTask`): a segmentation model
(torchvision's, or ONNX with an (N, classes, H, W) output), targets named by 1-based labels or class
names, each explained over the pixels predicted as that class or over a given mask.

Labels are 1-based, as the classification script's (``-label 16`` is VOC's 0-based class 15,
"person"; ``-label 1`` is ``__background__``): as typed, in messages, in file names and in results;
:mod:`gradcam_core.tasks.segment` takes 0-based classes. ``-1`` explains every class the model
predicts somewhere in the image (inside the mask, with one), one set of files per class. A class
asked for by name or number that an image's prediction does not contain (and no mask is given) is
skipped for that image, with a line saying so: its target would be an empty sum, its maps zero.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..engine import explain
from ..engine.layers import parameter_dtype
from ..errors import GradCamError
from ..formats.synset import ClassNames, is_label_number
from ..tasks.classify import DEFAULT_INPUT_SIZE, InputOptions
from ..tasks.segment import (
    Segmenter,
    check_output,
    default_segment_layer,
    fit_mask,
    load_segmenter,
    predicted,
    segmentation_targets,
)
from .outputs import Rendered, safe_filename
from .task import BatchResult, ImageResult, Methods, TargetResult, Task

PREDICTED = -1
"""The label of "every class predicted in the image" (``-label -1``; '' in a form)."""

TOP = 5
"""How many of the most predicted classes a result lists."""

TORCHVISION_INPUT_SIZE = 520
"""The input side for a torchvision architecture when ``-input_sz`` is not given: its segmentation
weights' own evaluation transform resizes images to 520."""


@dataclass(frozen=True, eq=False)
class SegmentTargets:
    """The classes to explain: ``labels`` as asked (1-based, :data:`PREDICTED` for every predicted
    class), ``classes`` 0-based (None = every predicted class), ``mask`` the region (H, W) bool as read
    (None: each class's predicted pixels), ``option`` names the field in messages; ``output_name``
    replaces the label in file names (``-output_image_name``)."""

    labels: list[int]
    classes: list[int | None]
    mask: torch.Tensor | None = None
    option: str = "label"
    output_name: str = ""
    largest: bool = False
    """:data:`PREDICTED` is the one class with the most predicted pixels (``__background__`` only
    where nothing else is predicted), as a front end explaining one target per request wants it."""


@dataclass
class SegmentImage(ImageResult):
    """An image's results plus each target's region at the input size (S, S) bool, in target order."""

    regions: list[torch.Tensor] = field(default_factory=list)


class SegmentationTask(Task[SegmentTargets]):
    """A loaded segmentation model; a target is a class over a region of pixels."""

    name, prefix, target_field = "segmentation", "segment", "label"
    original_layer = ""  # no original script: "" = the task's default layer

    def __init__(self, model: Segmenter, device: torch.device = torch.device("cpu")) -> None:
        self.model, self.net, self.device = model, model.net, device
        self.model_name, self.preprocessing = model.source, model.preprocessing
        self.fixed_batch = getattr(self.net, "batch_size", None) if model.fmt == "onnx" else None
        self.names: ClassNames | None = model.names
        self.default_layer_reason = ("the backbone's output, which the heads read" if model.backbone_layer else
                                     "the last feature map below the class scores")
        self.classes: int | None = None
        """The number of classes, once :meth:`count_outputs` has run."""
        self._out_hw: dict[int, tuple[int, int]] = {}

    @classmethod
    def load(cls, model_file: Path | None, *, arch: str = "", device: torch.device = torch.device("cpu"),
             synset_file: Path | None = None, inputs: InputOptions | None = None) -> SegmentationTask:
        """The segmentation model (see :func:`~gradcam_core.tasks.segment.load_segmenter`)."""
        return cls(load_segmenter(model_file, arch=arch, device=device, synset_file=synset_file, inputs=inputs),
                   device)

    def input_size(self, requested: int | None) -> int:
        """``requested``, or the model's own size (an ONNX file's metadata or fixed input), else 520 for
        a torchvision architecture, else 224; a size a fixed-size model does not take is one line."""
        fixed, own = self.model.fixed_size, self.model.input_size or self.model.fixed_size
        if requested is not None:
            if fixed is not None and fixed != (requested, requested):
                raise GradCamError(f"-input_sz {requested}: {self.model_name} takes only {fixed[0]}x{fixed[1]} "
                                   "inputs")
            return requested
        if own is not None:
            if own[0] != own[1]:
                raise GradCamError(f"{self.model_name} takes {own[0]}x{own[1]} inputs, but -input_sz explains "
                                   "square images only")
            return own[0]
        return TORCHVISION_INPUT_SIZE if self.model.fmt == "torchvision" else DEFAULT_INPUT_SIZE

    def _probe(self, input_sz: int) -> torch.Tensor:
        return torch.zeros(1, 3, input_sz, input_sz, device=self.device, dtype=parameter_dtype(self.net))

    def count_outputs(self, input_sz: int) -> int:
        """The number of classes (one forward of zeros at this size), checked: the output must be
        (N, classes, H, W) (a classifier is one line) and match the class names. From now on
        :meth:`targets` refuses labels above it."""
        with torch.no_grad():
            classes, height, width = check_output(self.net(self._probe(input_sz)), self.model_name)
        if self.names is not None:
            self.names.check_count(classes)
        self.classes, self._out_hw[input_sz] = classes, (height, width)
        return classes

    def output_size(self, input_sz: int) -> tuple[int, int]:
        """The (H, W) of the model's output for an input_sz x input_sz input."""
        if input_sz not in self._out_hw:
            self.count_outputs(input_sz)
        return self._out_hw[input_sz]

    def default_layer(self, input_sz: int) -> str:
        """A torchvision model's backbone output (``backbone.layer4``, ``backbone.16``), else the last
        feature map below the class scores (:func:`~gradcam_core.tasks.segment.default_segment_layer`)."""
        classes = self.classes or self.count_outputs(input_sz)
        return default_segment_layer(self.model, self._probe(input_sz), classes)

    def config(self) -> dict[str, Any]:
        names = self.names
        return {"classes": [names.name(i) for i in range(len(names))] if names else None}

    def targets(self, values: Sequence[str], *, option: str = "", strict: bool = False,
                question: str | None = None, mask: torch.Tensor | None = None,
                output_name: str = "") -> SegmentTargets:
        """Each value a 1-based label (ASCII digits), ``-1`` or '' for every predicted class, or a class
        name (case-insensitive); ``mask`` (H, W) bool: the region every class is explained over.
        ``strict`` (a front end explaining one target per request, the web demo): '' or ``-1`` is the
        class with the most predicted pixels (:attr:`SegmentTargets.largest`)."""
        option = option or self.target_field
        labels = []
        for value in values:
            text = value.strip()
            if not text or text == str(PREDICTED):
                labels.append(PREDICTED)
            elif is_label_number(text):
                labels.append(int(text))
            else:
                labels.append(self._lookup(text, option) + 1)
        return SegmentTargets(labels, label_classes(labels, option, self.classes), mask, option, output_name,
                              largest=strict)

    def _lookup(self, name: str, option: str) -> int:
        if self.names is None:
            raise GradCamError(f"{option} {name!r}: this model has no class names to look it up in; give a 1-based "
                               "label, or the names with -synset_file")
        try:
            return self.names.lookup(name)
        except GradCamError as err:
            raise GradCamError(f"{option} {name!r}: {err}") from None

    def explain(self, images: torch.Tensor, layer: str, targets: SegmentTargets, methods: Methods) -> BatchResult:
        """The batch's classes explained from one call: the classes asked for, then (for ``-1``) every
        class predicted in some image of the batch, found by one forward before; each image then lists
        the classes it predicts (or all asked for, with a mask)."""
        size = images.shape[-1]
        out_hw = self.output_size(size)
        mask = None if targets.mask is None else fit_mask(targets.mask, *out_hw).to(self.device)
        asked = [c for c in targets.classes if c is not None]
        every = PREDICTED in targets.labels
        classes = list(dict.fromkeys(asked))
        if every:
            with torch.no_grad():
                pred = predicted(self.net(images.to(device=self.device, dtype=parameter_dtype(self.net))))
            inside = pred if mask is None else pred[:, mask.bool()]
            classes += [c for c in torch.unique(inside).tolist() if c not in classes]
        named = [f"{targets.option} {c + 1} (labels are 1-based)" for c in classes]
        expls = explain(self.net, images, layer, segmentation_targets(classes, mask, named),
                        **methods.explain_options())
        scores = expls[methods.names[0]].scores
        check_output(scores[:1], self.model_name)
        pred = predicted(scores)
        return BatchResult(expls, [self._image(pred[n], classes, asked, every, mask, targets, size)
                                   for n in range(scores.shape[0])])

    def _image(self, pred: torch.Tensor, classes: list[int], asked: list[int], every: bool,
               mask: torch.Tensor | None, targets: SegmentTargets, size: int) -> SegmentImage:
        """One image's results from its prediction ``pred`` (H, W): a target per class it predicts
        (inside ``mask``), or per class asked for where a mask is given."""
        results, regions, lines = [], [], []
        present = set(torch.unique(pred if mask is None else pred[mask.bool()]).tolist())
        counts = torch.bincount(pred.reshape(-1), minlength=self.classes or 0)
        if every and targets.largest:  # one class: the largest (inside the mask), background last
            inside = torch.bincount(pred[mask.bool()] if mask is not None else pred.reshape(-1),
                                    minlength=counts.numel())
            if self._background() is not None and len(present - {self._background()}) > 0:
                inside[self._background()] = -1
            present = {int(inside.argmax())} | (present & set(asked))
        n_files = len(classes)
        for k, c in enumerate(classes):
            label = c + 1
            region = (pred == c) if mask is None else mask.bool()
            if c not in present and (mask is None or c not in asked):
                if c in asked:  # never predicted: the target would be an empty sum
                    lines.append(f"{targets.option} {label}{self._called(c)}: not predicted in this image, skipped "
                                 "(no pixels to sum its logits over)")
                continue
            pixels = int(((pred == c) & region).sum())
            results.append(TargetResult(_output_name(targets.output_name, label, n_files),
                                        self.named(label) | {"pixels": pixels}, index=k))
            regions.append(_at_size(region, size))
            lines.append(f"Label {label}{self._called(c)}: {pixels} pixels predicted"
                         + (" inside the mask" if mask is not None else ""))
        top, total = int(counts.argmax()), int(counts.sum())
        # the most predicted classes, their share of the pixels as their "score"
        return SegmentImage(results, self.named(top + 1) | {"pixels": int(counts[top])},
                            [self.named(int(c) + 1) | {"pixels": int(counts[c]), "score": int(counts[c]) / total}
                             for c in counts.argsort(descending=True)[:TOP] if counts[c] > 0],
                            lines, regions)

    def _background(self) -> int | None:
        """The class named ``__background__`` (torchvision's VOC class 0), or None."""
        if self.names is None:
            return None
        return next((i for i in range(len(self.names)) if self.names.name(i) == "__background__"), None)

    def _called(self, c: int) -> str:
        return f" ({self.names.name(c)})" if self.names is not None else ""

    def named(self, label: int) -> dict[str, Any]:
        """A 1-based label with its class name (None where unknown)."""
        return {"label": label, "name": self.names.name(label - 1) if self.names else None}

    def extra_images(self, batch: BatchResult, n: int, *, overlay: bool = False) -> list[Rendered]:
        """With ``overlay``: ``segment_mask_<L>.png`` per target, its region at the input size (white:
        the pixels the target sums over: the class's predicted pixels, or the given mask)."""
        from ..image.png import png_bytes

        image = batch.images[n]
        if not overlay or not isinstance(image, SegmentImage):
            return []
        return [Rendered(safe_filename(f"{self.prefix}_mask_", target.name), png_bytes(region.float()[None]))
                for target, region in zip(image.targets, image.regions)]


def label_classes(labels: Sequence[int], option: str = "label", outputs: int | None = None) -> list[int | None]:
    """1-based labels -> 0-based classes (None = every predicted class, :data:`PREDICTED`), checked as
    the classification task checks them (below 1, or above ``outputs`` where known: one line)."""
    from .classification import label_classes as check

    return check(labels, option, outputs)


def _at_size(region: torch.Tensor, size: int) -> torch.Tensor:
    """A region (H, W) bool at size x size (``image.scale`` then half covered), on the CPU."""
    region = region.detach().cpu()
    if tuple(region.shape) == (size, size):
        return region
    return fit_mask(region, size, size).bool()


def _output_name(output_image_name: str, label: int, n_labels: int) -> str:
    """Files are named by the 1-based label, or by ``-output_image_name`` (``_<label>`` added where an
    image explains several classes)."""
    if not output_image_name:
        return str(label)
    return output_image_name if n_labels == 1 else f"{output_image_name}_{label}"
