"""The detection row of bench/run.py (``--only detection``): what ``detection.py`` computes for the
5 best boxes of one image, against one forward + backward of the same detector.

The detector is torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` with random weights (seeded), its
box predictor's bias for class 18 ("dog") raised by 8 so that its proposals are detected (random
weights detect nothing above torchvision's 0.05); the image is ``images/cat_dog.jpg`` at its own size
(640 x 480; the detector resizes it to 800 x 1067 itself), RGB in [0, 1].

* ours: ``DetectionTask.explain`` as the command runs it, without the PNGs: the detection forward
  (no gradients) that finds the boxes and their region proposals, then ``engine.explain`` for the 5
  boxes at the default layer (``backbone.body.16``) with the box head on those 5 proposals
  (``tasks.detect.OnlyProposals``): one forward with the guided activations, the 5 targets' gradients
  at the layer and guided backprop to the input (both batched over the 5 targets), Grad-CAM's maps;
* the same without guided backprop (the maps alone, as a library call with ``guided=False``);
* the floor: ``out = model(x); torch.autograd.grad(out[0]["scores"][0], x)``, parameters frozen.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import common
from common import Report, Row

SECTION = "object detection (fasterrcnn_mobilenet_v3_large_fpn, random weights)"
BOXES = 5
BOUND = 2.0


def detection_run(image: Path, repeats: int, report: Report, model_lines: list[str]) -> bool:
    """The row (see the module docstring). Returns whether the task found its 5 boxes."""
    import torch
    from torchvision.models import detection

    from gradcam_core.engine import explain
    from gradcam_core.image.decode import load_image, to_rgb
    from gradcam_core.run.detection import DetectionTargets, DetectionTask
    from gradcam_core.run.task import Methods
    from gradcam_core.tasks.detect import BoxScoreTarget, OnlyProposals, detect_with_proposals, detections_above

    torch.manual_seed(0)
    model = detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[18] = 8.0
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    task = DetectionTask(model, None, "bench", "fasterrcnn_mobilenet_v3_large_fpn")
    x = to_rgb(load_image(image))[None]
    layer, targets, methods = task.default_layer(), DetectionTargets(max_boxes=BOXES), Methods()

    def ours() -> None:
        result = task.explain(x, layer, targets, methods)
        assert len(result.images[0].targets) == BOXES

    def maps_only() -> None:  # the same without guided backprop (library use: explain(..., guided=False))
        found, proposals = detect_with_proposals(model, x)
        keep = detections_above(found, 0.5, BOXES)
        assert proposals is not None
        wanted = [BoxScoreTarget(tuple(found["boxes"][i].tolist()), int(found["labels"][i])) for i in keep]
        with OnlyProposals(model, [proposals[i] for i in keep]):
            explain(model, x, layer, wanted, guided=False)

    def floor() -> None:
        xi = x.clone().requires_grad_()
        out = model(xi)
        torch.autograd.grad(out[0]["scores"][0], xi)

    times = common.interleaved({"ours": ours, "maps": maps_only, "floor": floor}, repeats)
    floor_s = f"{common.fmt_s(statistics.median(times['floor']))} ({common.fmt_s(min(times['floor']))})"
    for key, what, bound in (("ours", "Grad-CAM + guided backprop, as detection.py", BOUND),
                             ("maps", "Grad-CAM maps only (guided=False)", None)):
        ratio = statistics.median(a / b for a, b in zip(times[key], times["floor"]))
        t = times[key]
        report.add(Row(f"detection, {BOXES} boxes ({what}) vs one forward + backward of the detector",
                       statistics.median(t), min(t), ratio, section=SECTION, extra=f"floor {floor_s}",
                       target="" if bound is None else f"<= {bound:g}x", ok=None if bound is None else ratio <= bound))
    model_lines.append(f"- Detection: torchvision fasterrcnn_mobilenet_v3_large_fpn, random weights (class 18's bias "
                       f"+8), {image.name} at its own size, {BOXES} boxes at {layer}; {repeats} interleaved rounds")
    return True
