"""Weakly-supervised localization and the pointing game.

Localization (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017, section 4.1 and Table 1): the map is thresholded at ``theta = 15%`` of its
maximum, the bounding box is drawn around the largest connected region of the pixels above it
(8-connected; ties: the region met first in raster order), and the image counts as localized when that
box overlaps a ground-truth box of the explained class with ``IoU >= 0.5``
(``IoU(A, B) = |A & B| / |A | B|``, areas of axis-aligned boxes).

The pointing game (Zhang, Bargal, Lin, Brandt, Shen, Sclaroff, "Top-down Neural Attention by
Excitation Backprop", ECCV 2016): a hit when the map's maximum (the first one in raster order) lies
inside a ground-truth box of the class (no tolerance margin).

Coordinates: a box is ``(x0, y0, x1, y1)`` in the map's pixel-edge coordinates, pixel ``(i, j)``
(row, column) covering ``[j, j + 1) x [i, i + 1)``; a pixel is inside a box when its centre
``(j + 0.5, i + 0.5)`` is. A map's box is ``(min j, min i, max j + 1, max i + 1)`` over its region.
An all-zero map has no box and no maximum: it scores 0 on both.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

THRESHOLD = 0.15
"""The share of the map's maximum above which pixels form the region (the Grad-CAM paper's 15%)."""

IOU = 0.5
"""The overlap a localization needs."""


@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``(x0, y0, x1, y1)`` in map pixel-edge coordinates (see the module doc) and
    the 0-based class it holds (None: any)."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: int | None = None

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    def contains_pixel(self, row: int, col: int) -> bool:
        """Whether pixel (row, col)'s centre lies in the box (edges included)."""
        return self.x0 <= col + 0.5 <= self.x1 and self.y0 <= row + 0.5 <= self.y1


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when both are empty)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    inter = max(0.0, w) * max(0.0, h)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def map_box(cam: torch.Tensor, threshold: float = THRESHOLD) -> Box | None:
    """The box of the largest 8-connected region of ``cam`` (H, W) above ``threshold`` x its
    maximum, or None for a map without a positive maximum."""
    from scipy import ndimage

    values = cam.detach().cpu().double().numpy()
    peak = values.max() if values.size else 0.0
    if not peak > 0:
        return None
    labels, count = ndimage.label(values > threshold * peak, structure=[[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    sizes = torch.bincount(torch.from_numpy(labels.reshape(-1)).long(), minlength=count + 1)[1:]
    region = int(torch.argmax(sizes)) + 1  # argmax: the first largest, in label (raster) order
    rows, cols = (labels == region).nonzero()
    return Box(float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))


def _of_class(boxes: Sequence[Box], label: int | None) -> list[Box]:
    return [b for b in boxes if b.label is None or label is None or b.label == label]


def localization(cam: torch.Tensor, boxes: Sequence[Box], label: int | None = None, *,
                 threshold: float = THRESHOLD, min_iou: float = IOU) -> tuple[float, float]:
    """(1.0 if localized else 0.0, the best IoU) of ``cam`` (H, W) against the ``boxes`` of class
    ``label`` (None: every box)."""
    box = map_box(cam, threshold)
    best = max((iou(box, b) for b in _of_class(boxes, label)), default=0.0) if box is not None else 0.0
    return (1.0 if best >= min_iou else 0.0), best


def pointing(cam: torch.Tensor, boxes: Sequence[Box], label: int | None = None) -> float:
    """1.0 when the maximum of ``cam`` (H, W) lies in a box of class ``label``, else 0.0."""
    flat = cam.detach().reshape(-1)
    if flat.numel() == 0 or not bool(flat.max() > 0):
        return 0.0
    at = int(torch.argmax(flat))  # the first maximum in raster order
    row, col = divmod(at, cam.shape[-1])
    return 1.0 if any(b.contains_pixel(row, col) for b in _of_class(boxes, label)) else 0.0
