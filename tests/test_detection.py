"""Object detection (detection.py): the box target, the files and lines, -box, the bad-input lines, and
the maps against pytorch-grad-cam's ``GradCAM`` / ``EigenCAM`` with ``FasterRCNNBoxScoreTarget``.

Random weights detect nothing above torchvision's ``box_score_thresh`` (0.05): every model here is
seeded, then its box predictor's class bias is raised for one class, so that every proposal scores
that class high (softmax over the classes) and the detections are deterministic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gradcam_core.cli.detection import DetectionOptions, run_detection
from gradcam_core.cli.paths import input_images
from gradcam_core.errors import GradCamError
from gradcam_core.run.detection import DetectionTask, parse_box
from gradcam_core.run.task import Methods
from gradcam_core.tasks.detect import BoxScoreTarget, box_iou

NAMES = ["__background__", "thing", "other"]


def tiny_detector() -> nn.Module:
    """A torchvision FasterRCNN on a two-convolution backbone (8 channels, stride 4), 64-pixel inputs,
    seeded; class 1 ("thing") gets a bias of 4, so its detections score about 0.97."""
    import torchvision
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.rpn import AnchorGenerator

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
    backbone.out_channels = 8
    model = FasterRCNN(backbone, num_classes=3, min_size=64, max_size=64,
                       rpn_anchor_generator=AnchorGenerator(sizes=((16, 32),), aspect_ratios=((1.0,),)),
                       box_roi_pool=torchvision.ops.MultiScaleRoIAlign(["0"], 4, 2), representation_size=16,
                       rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_detections_per_img=10)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[:] = torch.tensor([0.0, 4.0, 0.0])
    return model.eval()


@pytest.fixture(scope="module")
def task() -> DetectionTask:
    return DetectionTask(tiny_detector(), NAMES, "tiny")


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "street.png"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def _run(task: DetectionTask, image: Path, out: Path, **options) -> tuple[list[str], list[str]]:
    lines: list[str] = []
    inputs = input_images("input_image_path", str(image), "", out)
    files = run_detection(task, DetectionOptions("tiny", None, inputs, **options), lines.append)
    return lines, sorted(f.name for f in files)


def _output(boxes, labels, scores) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
            "scores": torch.tensor(scores, dtype=torch.float32, requires_grad=True)}


def test_the_target_is_iou_plus_score_of_the_best_match_of_its_label():
    det = _output([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], [2, 1, 1], [0.9, 0.6, 0.8])
    # the first box overlaps most, but it is another class: the second is the match (IoU 9/11)
    target = BoxScoreTarget((0, 0, 10, 10), label=1)
    score = target([det])
    assert target.match(det) == 1
    assert score.shape == (1,) and score.tolist() == [pytest.approx(9 / 11 + 0.6)]
    score.sum().backward()
    assert det["scores"].grad.tolist() == [0, 1, 0]
    assert BoxScoreTarget((0, 0, 10, 10)).match(det) == 0  # any label: the best overlap
    assert BoxScoreTarget((0, 0, 10, 10), 1, with_iou=False)([det]).tolist() == pytest.approx([0.6])
    # no overlap above 0.5 (IoU 0.25 here), or no detection at all: 0, without gradient
    assert BoxScoreTarget((0, 0, 20, 20), 2)([det]).tolist() == [0.0]
    empty = _output(np.zeros((0, 4)), [], [])
    assert BoxScoreTarget((0, 0, 10, 10))([empty, det]).tolist() == [0.0, pytest.approx(1.9)]
    # pinned: the matched detection's own box and label, for perturbed copies of the image
    assert BoxScoreTarget((0.5, 0, 10, 10), 1).pin([det], 0) == BoxScoreTarget((1.0, 0.0, 11.0, 10.0), 1)
    assert box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]])).item() == pytest.approx(1 / 7)


def test_each_detection_above_the_threshold_gets_its_files(task, image, tmp_path):
    lines, files = _run(task, image, tmp_path / "out", max_boxes=2)
    assert lines[0] == "Grad-CAM layer: backbone (the backbone's last stage; -layer_name chooses another)"
    assert [line.split(" at ")[0] for line in lines[1:]] == ["Box 1: thing 0.966", "Box 2: thing 0.966"]
    assert files == sorted(["detect_boxes.png", *(f"detect_{kind}_{i}_thing.png" for i in (1, 2)
                                                  for kind in ("gcam_hm", "gb", "gb_gcam"))])
    with Image.open(tmp_path / "out" / "detect_boxes.png") as drawn:
        assert drawn.size == (64, 48) and drawn.mode == "RGB"  # the image at its own size


def test_given_boxes_with_eigencam_and_scorecam(task, image, tmp_path):
    """-box: matched to the detection overlapping it (a box that matches none: a blank map, said so);
    the gradient-free and perturbation methods run on the detector too."""
    with torch.no_grad():
        found = task.net(torch.from_numpy(np.array(Image.open(image))).permute(2, 0, 1)[None].float() / 255)[0]
    x1, y1, x2, y2 = (float(v) for v in found["boxes"][0])
    boxes = [f"{x1 + 0.5},{y1},{x2},{y2}:thing", "0,0,4,4:other"]
    methods = Methods(("eigencam", "scorecam"), batch_size=4)
    lines, files = _run(task, image, tmp_path / "out", boxes=boxes, methods=methods)
    assert lines[1].startswith("Box 1: thing 0.966 at ")
    assert lines[2] == "Box 2: no detection matches 0,0,4,4:other (IoU above 0.5, same label): its map is blank"
    assert "detect_eigencam_hm_1_thing.png" in files and "detect_scorecam_hm_2_other.png" in files
    assert "detect_gb_1_thing.png" in files and "detect_gb_scorecam_1_thing.png" in files


def test_no_detection_above_the_threshold(task, image, tmp_path):
    lines, files = _run(task, image, tmp_path / "out", score_threshold=0.99)
    assert lines[1] == "no detection scores 0.99 or more (the best scores 0.966): nothing to explain"
    assert files == ["detect_boxes.png"]


def test_bad_boxes_are_one_line(task, image, tmp_path):
    for text, message in [("1,2,3", "expected x1,y1,x2,y2 or x1,y1,x2,y2:label"),
                          ("1,2,a,4", "expected x1,y1,x2,y2"), ("5,5,2,9", "x2 must exceed x1"),
                          ("1,2,3,4:zebra", "'zebra' is not one of this detector's classes")]:
        with pytest.raises(GradCamError, match=message):
            parse_box(text, "box", task.lookup)
    with pytest.raises(GradCamError, match=r"-box 10,10,70,40: the box leaves the 64x48 image"):
        _run(task, image, tmp_path / "out", boxes=["10,10,70,40"])
    assert not (tmp_path / "out").exists()


def test_a_classifier_is_refused(tmp_path):
    """... by name and by its state_dict, before a detector is built; the detectors' COCO names come
    from torchvision's metadata (no download)."""
    from gradcam_core.cli.commands.detection import main
    from gradcam_core.tasks.detect import ARCHITECTURES, categories

    assert all(categories(a)[18] == "dog" and len(categories(a)) == 91 for a in ARCHITECTURES)

    with pytest.raises(GradCamError, match="^-arch resnet18 is a classification architecture"):
        main(arch="resnet18", out_path=str(tmp_path / "out"))
    weights = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1), "fc.bias": torch.zeros(2)}, weights)
    with pytest.raises(GradCamError, match=r"are not a detector's \(their first key is 'conv1.weight'"):
        main(arch="fasterrcnn_mobilenet_v3_large_320_fpn", model_file=str(weights), out_path=str(tmp_path / "out"))


# ------------------------------------------------------------------------ full-size detectors (slow)


def _dog_detector(arch: str, **builder_kwargs) -> nn.Module:
    """torchvision's ``arch`` with random weights (seeded), class 18 ("dog") biased by 8."""
    from torchvision.models import detection

    torch.manual_seed(0)
    model = getattr(detection, arch)(weights=None, weights_backbone=None, **builder_kwargs)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[18] = 8.0
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
def test_equals_pytorch_grad_cam_with_its_box_score_target(method):
    """fasterrcnn_mobilenet_v3_large_fpn at its default layer, K = 3 detected boxes explained as the
    command explains them (``DetectionTask.explain``: the box head on their own proposals): pytorch-grad-cam's
    map before its resize and min-max (its K targets on K copies of the image), times h * w for
    Grad-CAM (ours sums the gradients where it averages them); Eigen-CAM's sign oriented as ours. The
    detector's transform resizes to 320 pixels instead of 800 (the same network, a shorter test)."""
    import pytorch_grad_cam
    from pytorch_grad_cam import base_cam
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    from gradcam_core.tasks.detect import default_detector_layer, detections_above

    model = _dog_detector("fasterrcnn_mobilenet_v3_large_fpn", min_size=320, max_size=427)
    for p in model.parameters():
        p.requires_grad_(False)
    layer = default_detector_layer(model)
    assert layer == "backbone.body.16"
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        found = model(x)[0]
    keep = detections_above(found, 0.5, 3)
    assert len(keep) == 3
    boxes, labels = found["boxes"][keep], found["labels"][keep]
    # the command's path: the detections found again, the box head on their own proposals
    task = DetectionTask(model, None, "random", "fasterrcnn_mobilenet_v3_large_fpn")
    ours = task.explain(x, layer, task.targets([], max_boxes=3), Methods((method,))).explanations[method]
    torch.testing.assert_close(ours.target_scores[0], 1 + found["scores"][keep])  # the same boxes: IoU 1 + score

    module = dict(model.named_modules())[layer]
    xk = x.repeat(3, 1, 1, 1).requires_grad_()  # pytorch-grad-cam: one target per image
    pgc_targets = [FasterRCNNBoxScoreTarget([int(lab)], [b]) for b, lab in zip(boxes, labels)]
    got = ours.cam_raw[0].double().numpy()
    if method == "gradcam":
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
            with pytorch_grad_cam.GradCAM(model, [module]) as cam:
                ref = cam(xk, pgc_targets).astype(np.float64) * got.shape[-1] * got.shape[-2]  # (K, h, w)
    else:  # its projection before the ReLU, on what its hooks captured, oriented as ours (channel sum)
        with pytorch_grad_cam.EigenCAM(model, [module]) as cam:
            cam.activations_and_grads(xk)
            a = cam.activations_and_grads.activations[0].numpy()
            p = cam.get_cam_image(xk, module, pgc_targets, a, None, False).astype(np.float64)
        s = a.astype(np.float64).sum(axis=1)
        cov = ((p - p.mean((1, 2), keepdims=True)) * (s - s.mean((1, 2), keepdims=True))).sum((1, 2))
        ref = np.maximum(np.where(cov[:, None, None] < 0, -p, p), 0)
    peak = np.abs(ref).max(axis=(1, 2))
    assert (peak > 0).all()
    assert (np.abs(got - ref).max(axis=(1, 2)) <= 1e-4 * peak).all(), np.abs(got - ref).max(axis=(1, 2)) / peak


@pytest.fixture(scope="module")
def cli():
    import cli_runner

    return cli_runner.shared()


@pytest.mark.slow
def test_the_command_end_to_end(cli, tmp_path):
    """detection.py through the prewarmed runner: a biased fasterrcnn_mobilenet_v3_large_320_fpn
    state_dict, its detections' files; then the bad-input lines (exit 2, one line, nothing written)."""
    weights = tmp_path / "dog.pth"
    torch.save(_dog_detector("fasterrcnn_mobilenet_v3_large_320_fpn").state_dict(), weights)
    arch = ("-arch", "fasterrcnn_mobilenet_v3_large_320_fpn", "-model_file", str(weights))
    result = cli.run("detection.py", *arch, "-max_boxes", "2", "-out_path", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"Successfully loaded {weights}",
                         "Grad-CAM layer: backbone.body.16 (the backbone's last stage; -layer_name chooses another)"]
    assert [line.split(" at ")[0] for line in lines[2:]] == ["Box 1: dog 0.970", "Box 2: dog 0.970"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["detect_boxes.png", *(f"detect_{k}_{i}_dog.png" for i in (1, 2) for k in ("gcam_hm", "gb", "gb_gcam"))])
    for args, line in [
        (("-arch", "resnet18"), "detection.py: error: -arch resnet18 is a classification architecture (use "
                                "classification.py); the detection architectures are fasterrcnn_resnet50_fpn, "),
        ((*arch, "-box", "1,2,3"), "detection.py: error: -box '1,2,3': expected x1,y1,x2,y2 or x1,y1,x2,y2:label"),
        ((*arch, "-box", "0,0,10,10;600,10,700,50:dog"),
         "detection.py: error: -box 600,10,700,50:dog: the box leaves the 640x480 image"),
    ]:
        bad = cli.run("detection.py", *args, "-out_path", str(tmp_path / "bad"), cwd=tmp_path)
        assert (bad.returncode, bad.stderr.count("\n")) == (2, 1) and bad.stderr.startswith(line), bad.stderr
    assert not (tmp_path / "bad").exists()


def test_help_lists_the_option_table(cli, tmp_path):
    from test_cli_options import help_flags

    from gradcam_core.cli.commands.detection import OPTIONS

    result = cli.run("detection.py", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = help_flags(result.stdout + result.stderr)
    assert [(name, help_) for name, _, help_ in shown] == [(o.name, o.help) for o in OPTIONS.options]


def test_the_box_head_on_the_boxes_own_proposals_changes_nothing(task, tmp_path):
    """Detected boxes are explained with the box head on their proposals only: the same target scores,
    maps and guided backprop as with every proposal, also for a perturbation method (whose masked
    copies run the whole box head). The image is resized by 1.6 inside the detector, so the proposals
    are matched in its coordinates, not the input's."""
    from gradcam_core.tasks.detect import detect_with_proposals

    x = torch.rand(1, 3, 30, 40, generator=torch.Generator().manual_seed(4))
    found, pins = detect_with_proposals(task.net, x)
    assert pins is not None and len(set(pins)) == len(pins) == found["boxes"].shape[0]
    targets = task.targets([], max_boxes=3)
    methods = Methods(("gradcam", "ablationcam"))  # Ablation-CAM's forwards: the whole box head
    pinned = task.explain(x, "backbone", targets, methods)
    task.only_proposals = False
    try:
        full = task.explain(x, "backbone", targets, methods)
    finally:
        del task.only_proposals
    for name in methods.names:
        a, b = pinned.explanations[name], full.explanations[name]
        torch.testing.assert_close(a.target_scores, b.target_scores)
        torch.testing.assert_close(a.cam_raw, b.cam_raw, rtol=1e-4, atol=1e-4 * float(b.cam_raw.abs().max()))
        torch.testing.assert_close(a.guided, b.guided, rtol=1e-4, atol=1e-4 * float(b.guided.abs().max()))
    assert [t.name for t in pinned.images[0].targets] == ["1_thing", "2_thing", "3_thing"]


def test_a_folder_skips_the_images_a_box_leaves(task, tmp_path):
    rng = np.random.default_rng(2)
    for name, (h, w) in {"big.png": (48, 64), "small.png": (20, 24)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    inputs = input_images("input_image_path", str(tmp_path / "*.png"), "", tmp_path / "out")
    lines: list[str] = []
    with pytest.raises(GradCamError, match="skipped 1 of 2 images"):
        run_detection(task, DetectionOptions("tiny", None, inputs, boxes=["2,2,30,30"]), lines.append)
    assert (tmp_path / "out" / "big.png" / "detect_boxes.png").is_file() and not (tmp_path / "out" / "small.png").exists()
