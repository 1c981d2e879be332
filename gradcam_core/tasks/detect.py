"""Object detection: torchvision's detectors from a state_dict, their COCO class names, the layer
explained by default, and the target of one box (:class:`BoxScoreTarget`).

A torchvision detector in eval mode maps N images - (N, 3, H, W) RGB in [0, 1], any size; it
normalises and resizes them itself (``model.transform``) - to a list of N dicts, one per image:
``boxes`` (D, 4) as x1, y1, x2, y2 in the image's own pixels, ``labels`` (D,) indices into the class
names (0 is the background) and ``scores`` (D,) in [0, 1], sorted by score. A box's score keeps its
gradient through the box head (a class's softmax, or sigmoid for RetinaNet and FCOS), so
``engine.explain`` follows it like a class logit.

Nothing is downloaded: the architectures are built with ``weights=None, weights_backbone=None`` and the
class names come from torchvision's weights metadata (``meta["categories"]``, shipped with torchvision).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import GradCamError

ARCHITECTURES = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn",
    "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
    "ssd300_vgg16",
    "ssdlite320_mobilenet_v3_large",
)
"""The torchvision detection architectures ``-arch`` takes (Mask and Keypoint R-CNN are not: their
outputs are masks and keypoints)."""

_SSD_LAYERS = {"ssd300_vgg16": "backbone.extra.0", "ssdlite320_mobilenet_v3_large": "backbone.features.1"}
"""SSD's backbones return an OrderedDict of feature maps; these are the deepest single-tensor stage
with more than a few positions (19 x 19 for SSD300's fc7, 10 x 10 for SSDlite's last MobileNet block)."""

MATCH_IOU = 0.5
"""How much a detection must overlap a target box (intersection over union, strictly above) to be its match."""


@dataclass(frozen=True)
class BoxScoreTarget:
    """The score of the detection that best matches one box, per image (pytorch-grad-cam's
    ``FasterRCNNBoxScoreTarget`` for one box).

    For image ``n`` of a detector's output (a list of dicts ``boxes`` (D, 4), ``labels`` (D,),
    ``scores`` (D,)): among its detections of ``label`` (any label for None), the one with the highest
    IoU with ``box``; if that IoU is above ``iou_threshold`` the target is ``IoU + score`` of it (as
    pytorch-grad-cam sums them; with ``with_iou`` False the score alone), else 0 (no gradient).
    pytorch-grad-cam takes the highest-IoU detection of any label and gives 0 when its label differs;
    here a better-overlapping box of another class does not hide the matching one.

    Args:
        box: (x1, y1, x2, y2) in the input image's pixels (the coordinates the detector reports).
        label: the class index (torchvision's: 1 = COCO's "person"), or None for any class.
        iou_threshold: the least IoU of a match (strictly above).
        with_iou: add the IoU (its gradient moves the box) to the class score.
    """

    box: tuple[float, float, float, float]
    label: int | None = None
    iou_threshold: float = MATCH_IOU
    with_iou: bool = True

    def match(self, detections: dict[str, torch.Tensor]) -> int | None:
        """The index of the matching detection of one image's ``detections``, or None."""
        boxes, labels = detections["boxes"], detections["labels"]
        if boxes.shape[0] == 0:
            return None
        ious = box_iou(torch.tensor([self.box], dtype=boxes.dtype, device=boxes.device), boxes.detach())[0]
        if self.label is not None:
            ious = torch.where(labels == self.label, ious, torch.full_like(ious, -1.0))
        best = int(ious.argmax())
        return best if float(ious[best]) > self.iou_threshold else None

    def __call__(self, output: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
        """A detector's output (N dicts) -> (N,) scores."""
        scores = []
        for detections in output:
            i = self.match(detections)
            s = detections["scores"]
            if i is None:
                scores.append(torch.zeros((), dtype=s.dtype, device=s.device))
                continue
            score = s[i]
            if self.with_iou:
                box = torch.tensor([self.box], dtype=s.dtype, device=s.device)
                score = score + box_iou(box, detections["boxes"][i : i + 1])[0, 0]
            scores.append(score)
        return torch.stack(scores)

    def pin(self, output: Sequence[dict[str, torch.Tensor]], n: int) -> BoxScoreTarget:
        """This target as it matched on image ``n`` of the unperturbed ``output``: the matched detection's
        box and label (a masked or ablated copy is then matched against that detection); itself where
        nothing matched."""
        i = self.match(output[n])
        if i is None:
            return self
        box = tuple(float(v) for v in output[n]["boxes"][i])
        return BoxScoreTarget((box[0], box[1], box[2], box[3]), int(output[n]["labels"][i]), self.iou_threshold,
                              self.with_iou)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boxes a (P, 4) and b (Q, 4), x1, y1, x2, y2 -> (P, Q); differentiable
    (torchvision's ``box_iou`` formula; 0 where both boxes are empty)."""
    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / torch.where(union > 0, union, torch.ones_like(union))


def detections_above(output: dict[str, torch.Tensor], threshold: float, limit: int) -> list[int]:
    """The indices of one image's detections scoring at least ``threshold``, best first, at most ``limit``."""
    scores = output["scores"].detach()
    order = torch.argsort(scores, descending=True, stable=True)
    return [int(i) for i in order if float(scores[i]) >= threshold][:limit]


# --------------------------------------------------------------------------------- loading


def categories(arch: str) -> list[str]:
    """The class names of ``arch``'s COCO weights in torchvision, by label (``[1] == "person"``; 91
    entries with ``__background__`` and the unused ``N/A``), from torchvision's metadata: no download."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    return list(next(iter(enum)).meta["categories"])


def is_detection_arch(arch: str) -> bool:
    """Whether ``arch`` is one of :data:`ARCHITECTURES` (case-insensitive)."""
    return arch.lower() in ARCHITECTURES


def check_arch(arch: str) -> str:
    """``arch`` as torchvision names it, or one line: a classifier's name says so, anything else lists
    the detection architectures."""
    if is_detection_arch(arch):
        return arch.lower()
    import torchvision

    listed = ", ".join(ARCHITECTURES)
    if arch.lower() in (n.lower() for n in torchvision.models.list_models(module=torchvision.models)):
        raise GradCamError(f"-arch {arch} is a classification architecture (use classification.py); the detection "
                           f"architectures are {listed}")
    raise GradCamError(f"unknown detection architecture {arch!r}: the detection architectures are {listed}")


def load_detector(arch: str, weights: str | os.PathLike[str] | None, device: str | torch.device = "cpu",
                  **builder_kwargs: Any) -> nn.Module:
    """The torchvision detector ``arch`` (:data:`ARCHITECTURES`) with the state_dict in ``weights`` (None:
    torchvision's random initialisation, backbone included), in eval mode.

    ``builder_kwargs`` go to torchvision's builder (``box_score_thresh=0.01``, ``min_size=512``, ...).
    Raises GradCamError (one line) for a classification architecture, an unknown one, a file that is
    not a torch state_dict, a classifier's state_dict, or one that does not fit ``arch``.
    """
    import torchvision

    from ..formats.torchvision import _check_fits, _read_state_dict

    arch = check_arch(arch)
    state = None if weights is None else _read_state_dict(weights)
    shown = repr(os.fspath(weights)) if weights is not None else ""
    if state is not None and not any(k.startswith("backbone.") for k in state):  # before the model is built
        first = next(iter(state))
        raise GradCamError(f"torchvision weights {shown} are not a detector's (their first key is {first!r}: a "
                           f"classifier's?); {arch} takes a detector's state_dict (backbone.* keys and its heads)")
    try:
        model = torchvision.models.get_model(arch, weights=None, weights_backbone=None, **builder_kwargs)
    except (TypeError, ValueError) as err:
        raise GradCamError(f"cannot build torchvision model {arch!r}: {err}") from err
    if state is not None:
        assert weights is not None
        _check_fits(model, state, weights, arch)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:200]
            raise GradCamError(f"torchvision weights {shown} do not fit {arch}: {detail}") from None
    return model.to(device).eval()


def default_detector_layer(model: nn.Module, arch: str = "") -> str:
    """The layer explained when none is named: a single-tensor layer (N, C, h, w) every CAM method takes.

    * an FPN detector (Faster R-CNN, RetinaNet, FCOS): the backbone body's last stage
      (``backbone.body.layer4`` for ResNet-50, ``backbone.body.16`` for MobileNetV3): the deepest
      features, from which the FPN's top-down path feeds every level (the FPN itself returns an
      OrderedDict of five resolutions, which no single map covers);
    * SSD300: ``backbone.extra.0`` (fc7, stride 16); SSDlite: ``backbone.features.1`` (stride 32);
    * any other model with a ``backbone`` returning a tensor: ``backbone``.
    """
    if arch in _SSD_LAYERS:
        return _SSD_LAYERS[arch]
    backbone = getattr(model, "backbone", None)
    body = getattr(backbone, "body", None)
    if isinstance(body, nn.Module):
        last = [name for name, _ in body.named_children()]
        if last:
            return f"backbone.body.{last[-1]}"
    if isinstance(backbone, nn.Module):
        return "backbone"
    raise GradCamError("this detector has no 'backbone': name the layer to explain with -layer_name")


# ------------------------------------------------------------- two-stage detectors: the boxes' own proposals


def detect_with_proposals(model: nn.Module, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[int] | None]:
    """One forward without gradients of image ``images`` (1, 3, H, W): its detections and, for a two-stage
    detector (torchvision's R-CNN ``roi_heads``), the index of the region proposal each detection came
    from (None for any other detector, or where a detection's proposal is not found)."""
    roi = getattr(model, "roi_heads", None)
    if roi is None or not hasattr(roi, "box_coder") or not hasattr(roi, "box_predictor"):
        with torch.no_grad():
            return model(images)[0], None
    seen: dict[str, Any] = {}
    handles = [
        roi.register_forward_pre_hook(lambda _m, args: seen.update(proposals=args[1][0], shape=args[2][0])),
        roi.box_predictor.register_forward_hook(lambda _m, _args, out: seen.update(regression=out[1])),
        # a copy: the model's transform then rescales the boxes of that dict to the input's size
        roi.register_forward_hook(lambda _m, _args, out: seen.update(result=dict(out[0][0]))),
    ]
    try:
        with torch.no_grad():
            found = model(images)[0]
    finally:
        for h in handles:
            h.remove()
    if not {"proposals", "regression", "result"} <= seen.keys():
        return found, None
    from torchvision.ops import boxes as box_ops

    decoded = box_ops.clip_boxes_to_image(roi.box_coder.decode(seen["regression"], [seen["proposals"]]), seen["shape"])
    pins = []
    for box, label in zip(seen["result"]["boxes"], seen["result"]["labels"]):
        err = (decoded[:, int(label)] - box).abs().amax(dim=1)  # (P,): the detection is one proposal's box
        p = int(err.argmin())
        if float(err[p]) > 1e-3 * max(1.0, float(box.abs().max())):
            return found, None
        pins.append(p)
    return found, pins


class OnlyProposals:
    """While active, a two-stage detector's box head sees only the region proposals ``pins`` (indices
    into the proposals of the one image, as :func:`detect_with_proposals` found them).

    A detection's score and box depend only on its own proposal's features (the box head runs on each
    region alone; the proposals themselves carry no gradient), and detections that survived
    non-maximum suppression among all proposals survive it among these: so the detections explained
    keep their scores, and their gradients, while the box head's forward and backward run on a few
    regions instead of a thousand (most of a detector's backward otherwise). Only the first forward
    (the explanation's) is restricted."""

    def __init__(self, model: nn.Module, pins: Sequence[int]) -> None:
        roi = model.roi_heads
        assert isinstance(roi, nn.Module)
        self.roi = roi
        self.pins = list(pins)

    def _select(self, _m: nn.Module, args: tuple) -> tuple:
        # once: the explanation's own forward; the forwards of masked or ablated copies that follow
        # (Score-CAM, Ablation-CAM) have proposals of their own, and run the whole box head
        self._handle.remove()
        proposals = args[1]
        index = torch.tensor(self.pins, dtype=torch.long, device=proposals[0].device)
        return (args[0], [proposals[0][index]], *args[2:])

    def __enter__(self) -> OnlyProposals:
        self._handle = self.roi.register_forward_pre_hook(self._select)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
