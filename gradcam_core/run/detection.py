"""Object detection as a front end drives it (:class:`DetectionTask`): a torchvision detector, its boxes
explained one target per box.

A target is a box (:class:`~gradcam_core.tasks.detect.BoxScoreTarget`): either each detection scoring
at least ``score_threshold`` (at most ``max_boxes``, best first), found by one forward without
gradients before the explanation's, or the boxes a user gives (``x1,y1,x2,y2[:label]`` in the input
image's pixels), each matched to the detection that overlaps it best (IoU above 0.5, the same label
when one is given). Images are explained at their own size (the detector resizes them itself), one
image per batch.

Files per box ``i`` (1-based, in the order explained) of class name ``<label>``:
``detect_<token>_hm_<i>_<label>.png``, ``detect_gb_<i>_<label>.png``, ``detect_gb_<token>_<i>_<label>.png``
(:func:`~gradcam_core.run.task.render_target`), and per image ``detect_boxes.png`` (:func:`render_boxes`):
the image with every explained box, its class name and score.

Perturbation methods (Score-CAM, Ablation-CAM) score masked copies of the image: each box's target is
pinned to the detection it matched on the unperturbed image (its box and label), so a masked copy is
scored by whatever it detects at that place as that class (0 when nothing overlaps it by more than 0.5).
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import explain
from ..errors import GradCamError
from ..image.preprocessing import Preprocessing
from ..tasks.detect import (
    BoxScoreTarget,
    OnlyProposals,
    categories,
    default_detector_layer,
    detect_with_proposals,
    detections_above,
    load_detector,
)
from .outputs import Rendered, safe_filename
from .task import BatchResult, ImageResult, Methods, TargetResult, Task

SCORE_THRESHOLD = 0.5
"""The least score of a detection explained when no box is given."""
MAX_BOXES = 20
"""The most detections explained per image when no box is given."""
DETECTOR_INPUT = Preprocessing("rgb", 1.0, None)
"""What a torchvision detector takes: RGB in [0, 1] (it normalises with its own mean and std)."""


@dataclass(frozen=True)
class BoxRequest:
    """One box a user gave: (x1, y1, x2, y2) in the input image's pixels, its class (None: any), as typed."""

    box: tuple[float, float, float, float]
    label: int | None
    text: str


@dataclass(frozen=True)
class DetectionTargets:
    """What to explain: the given ``boxes``, or with none each detection scoring at least
    ``score_threshold`` (at most ``max_boxes``); ``option`` names the field in messages."""

    boxes: tuple[BoxRequest, ...] = ()
    score_threshold: float = SCORE_THRESHOLD
    max_boxes: int = MAX_BOXES
    option: str = "box"


class DetectionTask(Task[DetectionTargets]):
    """A loaded detector; a target is a box."""

    name, prefix, target_field = "detection", "detect", "box"
    original_layer = ""
    preprocessing = DETECTOR_INPUT
    only_proposals = True
    """A two-stage detector's detected boxes are explained with its box head on their own proposals only
    (:class:`~gradcam_core.tasks.detect.OnlyProposals`: the same scores and gradients, a fraction of the work)."""

    def __init__(self, net: nn.Module, names: list[str] | None = None, model_name: str = "detector", arch: str = "",
                 device: torch.device = torch.device("cpu")) -> None:
        self.net, self.names, self.model_name, self.arch, self.device = net.eval(), names, model_name, arch, device

    @classmethod
    def load(cls, arch: str, model_file: Path | None, *, device: torch.device = torch.device("cpu"),
             **builder_kwargs: Any) -> DetectionTask:
        """torchvision's ``arch`` with the state_dict ``model_file`` (None: random weights)."""
        net = load_detector(arch, model_file, device, **builder_kwargs)
        arch = arch.lower()
        return cls(net, categories(arch), str(model_file) if model_file else f"{arch} (random weights)", arch, device)

    def input_size(self, requested: int | None) -> int:
        """Not used: images are explained at their own size (the detector resizes them itself)."""
        return 0 if requested is None else requested

    def default_layer(self, input_sz: int = 0) -> str:
        """:func:`~gradcam_core.tasks.detect.default_detector_layer`."""
        return default_detector_layer(self.net, self.arch)

    def config(self) -> dict[str, Any]:
        return {"classes": self.names}

    def label_name(self, label: int) -> str:
        """A class index's name (its number where the model has no names)."""
        return self.names[label] if self.names is not None and 0 <= label < len(self.names) else str(label)

    def lookup(self, text: str, option: str = "box") -> int:
        """A class given by name (case-insensitive) or torchvision label number -> the label."""
        return lookup_label(self.names, text, option)

    def targets(self, values: Sequence[str], *, option: str = "", strict: bool = False, question: str | None = None,
                score_threshold: float = SCORE_THRESHOLD, max_boxes: int = MAX_BOXES) -> DetectionTargets:
        """Each value ``x1,y1,x2,y2`` or ``x1,y1,x2,y2:label`` (a class name or number); none: the detections."""
        option = option or self.target_field
        boxes = tuple(parse_box(v, option, self.lookup) for v in values if v.strip())
        if not 0 <= score_threshold <= 1:
            raise GradCamError(f"-score_threshold {score_threshold} must be between 0 and 1")
        return DetectionTargets(boxes, score_threshold, max_boxes, option)

    def explain(self, images: torch.Tensor, layer: str, targets: DetectionTargets, methods: Methods) -> BatchResult:
        """Explain ``images`` (N, 3, H, W), RGB in [0, 1], for the given boxes, or (N = 1) for the boxes detected."""
        if methods.aug_smooth:
            raise GradCamError("-aug_smooth does not apply to detection: a flipped image's boxes are elsewhere")
        height, width = images.shape[-2:]
        check_boxes(targets, int(width), int(height))
        if targets.boxes:
            wanted = [BoxScoreTarget(r.box, r.label) for r in targets.boxes]
            detected: list[dict[str, Any]] | None = None
        else:
            if images.shape[0] != 1:
                raise GradCamError("detection explains the boxes detected one image at a time (batch of 1)")
            found, proposals = detect_with_proposals(self.net, images.to(self.device))
            keep = detections_above(found, targets.score_threshold, targets.max_boxes)
            wanted = [BoxScoreTarget(tuple(float(v) for v in found["boxes"][i]), int(found["labels"][i]))  # type: ignore[arg-type]
                      for i in keep]
            detected = [found]
            if not wanted:
                top = float(found["scores"].max()) if found["scores"].numel() else None
                best = f" (the best scores {top:.3f})" if top is not None else " (none at all)"
                line = f"no detection scores {targets.score_threshold:g} or more{best}: nothing to explain"
                return BatchResult({}, [ImageResult([], {"boxes": []}, [], [line])])
        with contextlib.ExitStack() as stack:
            if detected is not None and proposals is not None and self.only_proposals:
                stack.enter_context(OnlyProposals(self.net, [proposals[i] for i in keep]))
            expls = explain(self.net, images, layer, wanted, **methods.explain_options())
        output = expls[methods.names[0]].scores if detected is None else detected
        return BatchResult(expls, [self._image(output[n], wanted, targets) for n in range(images.shape[0])])

    def _image(self, detections: dict[str, torch.Tensor], wanted: list[BoxScoreTarget],
               targets: DetectionTargets) -> ImageResult:
        """One image's targets, named ``<i>_<label>``, and its lines: per box the detection it explains."""
        results, lines, drawn = [], [], []
        for i, target in enumerate(wanted, start=1):
            j = target.match(detections)
            if j is None:
                label = target.label
                name = f"{i}_{self.label_name(label) if label is not None else 'box'}"
                shown: dict[str, Any] = {"box": list(target.box), "label": label, "name": None, "score": None}
                lines.append(f"Box {i}: no detection matches {targets.boxes[i - 1].text} (IoU above "
                             f"{target.iou_threshold:g}{', same label' if label is not None else ''}): its map is blank")
            else:
                label = int(detections["labels"][j])
                box = [round(float(v), 2) for v in detections["boxes"][j]]
                score = float(detections["scores"][j])
                name = f"{i}_{self.label_name(label)}"
                shown = {"box": box, "label": label, "name": self.label_name(label), "score": score}
                lines.append(f"Box {i}: {self.label_name(label)} {score:.3f} at ({', '.join(f'{v:g}' for v in box)})")
            results.append(TargetResult(name, shown))
            drawn.append(shown | {"index": i})
        return ImageResult(results, {"boxes": drawn}, None, lines)


def check_boxes(targets: DetectionTargets, width: int, height: int) -> None:
    """Refuse a given box that leaves a ``width`` x ``height`` image (one line naming it)."""
    for req in targets.boxes:
        x1, y1, x2, y2 = req.box
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise GradCamError(f"-{targets.option} {req.text}: the box leaves the {width}x{height} image "
                               f"(x from 0 to {width}, y from 0 to {height})")


def lookup_label(names: Sequence[str] | None, text: str, option: str = "box") -> int:
    """A class given by name (case-insensitive, among ``names``) or torchvision label number -> the label."""
    if text.isascii() and text.isdigit():
        label = int(text)
        if names is not None and not 0 < label < len(names):
            raise GradCamError(f"-{option} label {label} is out of range: this detector's labels are 1 to "
                               f"{len(names) - 1}")
        return label
    if names is None:
        raise GradCamError(f"-{option} label {text!r}: this detector has no class names; give a label number")
    lowered = [n.lower() for n in names]
    if text.lower() not in lowered or text.lower() in ("n/a", "__background__"):
        raise GradCamError(f"-{option} label {text!r} is not one of this detector's classes (e.g. person, dog, car)")
    return lowered.index(text.lower())


def parse_box(text: str, option: str = "box", lookup: Any = None) -> BoxRequest:
    """``x1,y1,x2,y2`` or ``x1,y1,x2,y2:label`` -> a :class:`BoxRequest` (``lookup(label text) -> label``);
    one line for anything else."""
    coords, _, label_text = text.strip().partition(":")
    parts = [p.strip() for p in coords.split(",")]
    usage = f"-{option} {text!r}: expected x1,y1,x2,y2 or x1,y1,x2,y2:label (pixels of the input image)"
    try:
        values = [float(p) for p in parts if p.isascii()]
    except ValueError:
        raise GradCamError(usage) from None
    if len(values) != 4 or len(parts) != 4 or not all(abs(v) < float("inf") for v in values):
        raise GradCamError(usage)
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        raise GradCamError(f"-{option} {text!r}: x2 must exceed x1 and y2 exceed y1")
    label = None
    if label_text.strip():
        label = lookup(label_text.strip(), option) if lookup is not None else int(label_text)
    return BoxRequest((x1, y1, x2, y2), label, text.strip())


# ---------------------------------------------------------------------------------- detect_boxes.png

_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230))


def render_boxes(prefix: str, rgb: torch.Tensor, boxes: Sequence[dict[str, Any]]) -> Rendered:
    """``<prefix>_boxes.png``: the image ``rgb`` (3, H, W) in [0, 1] with each box drawn (PIL ImageDraw),
    captioned ``<i> <name> <score>`` (a box without a matching detection: ``<i> no match``)."""
    from PIL import Image, ImageDraw

    pixels = (rgb.detach().cpu().float().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    width = max(1, round(min(image.size) / 200))
    for item in boxes:
        colour = _COLOURS[(item["index"] - 1) % len(_COLOURS)]
        x1, y1, x2, y2 = item["box"]
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        caption = (f"{item['index']} {item['name']} {item['score']:.2f}" if item["score"] is not None
                   else f"{item['index']} no match")
        left, top, right, bottom = draw.textbbox((x1, y1), caption)
        ty = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        draw.rectangle((x1, ty, x1 + right - left + 4, ty + bottom - top + 2), fill=colour)
        draw.text((x1 + 2, ty), caption, fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return Rendered(safe_filename(f"{prefix}_", "boxes"), out.getvalue())
