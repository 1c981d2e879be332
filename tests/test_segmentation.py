"""Semantic segmentation: the class target (its logits summed over its predicted pixels or a mask)
against pytorch-grad-cam's ``SemanticSegmentationTarget`` with its CAM classes as the oracle, the task
(``-label -1``, the regions kept fixed for Score-CAM), and ``segmentation.py`` end to end on an ONNX
export of a tiny model (file names, ``-mask``, the bad-input lines).

The oracle's maps are taken at the layer's resolution before its resize and min-max (as
tests/methods/conftest.py does); Grad-CAM's are its maps times h * w (ours sums the gradients over the
positions where it averages them). The full-size torchvision models run with random weights under
``slow``.
"""
from __future__ import annotations

from pathlib import Path

import cli_runner
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from methods.conftest import assert_maps_close
from PIL import Image
from torch import nn

from gradcam_core import explain
from gradcam_core.engine import SegmentationTarget
from gradcam_core.errors import GradCamError
from gradcam_core.image.preprocessing import Preprocessing, load_input
from gradcam_core.run.segmentation import SegmentationTask
from gradcam_core.run.task import Methods
from gradcam_core.tasks.segment import OutputOf, Segmenter

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import base_cam  # noqa: E402
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402

SIZE = 48
CLASSES = 4


class TinySeg(nn.Module):
    """conv-ReLU-conv-ReLU (stride 4 in all: the explained layer ``backbone.3``), a 1x1 class conv, the
    scores upsampled to the input (as torchvision's segmentation models do)."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(16, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.classifier(self.backbone(x)), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


def tiny() -> nn.Module:
    torch.manual_seed(4)
    return TinySeg().eval()


def images(n: int, size: int = SIZE, seed: int = 1) -> torch.Tensor:
    """Smooth random images (a coarse noise upsampled), so that the prediction forms regions."""
    coarse = torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 2


def pgc_maps(model: nn.Module, module: nn.Module, x: torch.Tensor, classes: list[int], method: str = "GradCAM",
             masks: np.ndarray | None = None) -> np.ndarray:
    """pytorch-grad-cam's maps (N, K, h, w) before resize and min-max, for class k over each image's
    predicted pixels (or ``masks`` (H, W)): the images repeated K times, one target each."""
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    n = x.shape[0]
    targets = [SemanticSegmentationTarget(c, masks if masks is not None else (pred[i] == c).astype(np.float32))
               for c in classes for i in range(n)]
    stacked = x.repeat(len(classes), 1, 1, 1).requires_grad_()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
        with getattr(pgc, method)(model, [module]) as cam:
            maps = cam(stacked, targets)
    return maps.reshape(len(classes), n, *maps.shape[1:]).transpose(1, 0, 2, 3)


def present_in_all(model: nn.Module, x: torch.Tensor) -> list[int]:
    with torch.no_grad():
        pred = model(x).argmax(1)
    return [c for c in range(int(model(x[:1]).shape[1])) if all(bool((p == c).any()) for p in pred)]


# ------------------------------------------------------------------------------------ the target


def test_gradcam_equals_pytorch_grad_cam_on_a_tiny_model():
    model, x = tiny(), images(2)
    classes = present_in_all(model, x)
    assert len(classes) >= 2, classes  # regions of several classes in both images: maps to compare
    ours = explain(model, x, "backbone.3", [SegmentationTarget(c) for c in classes], guided=False)
    h, w = ours.cam_raw.shape[-2:]
    assert_maps_close(ours.cam_raw, pgc_maps(model, model.backbone[3], x, classes), factor=h * w, what="tiny")


def test_a_mask_is_the_region_summed_over():
    model, x = tiny(), images(2)
    mask = torch.zeros(SIZE, SIZE)
    mask[8:30, 12:40] = 1
    ours = explain(model, x, "backbone.3", [SegmentationTarget(c, mask) for c in (0, 3)], guided=False)
    ref = pgc_maps(model, model.backbone[3], x, [0, 3], masks=mask.numpy())
    assert_maps_close(ours.cam_raw, ref, factor=ours.cam_raw.shape[-1] * ours.cam_raw.shape[-2], what="mask")
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(ours.target_scores[:, 1], (out[:, 3] * mask).sum((1, 2)))


def test_the_predicted_region_is_fixed_on_the_unperturbed_image():
    model, x = tiny(), images(2)
    with torch.no_grad():
        out = model(x)
    target = SegmentationTarget(1)
    pinned = target.pin(out, 1)
    assert pinned.mask is not None and torch.equal(pinned.mask.bool(), out[1].argmax(0) == 1)
    blank = torch.zeros_like(out[:1])
    assert float(pinned(blank + out[1:2])) == pytest.approx(float(target(out)[1]))  # the same pixels
    assert float(target(blank)) == float((blank[:, 1]).sum())  # unpinned: argmax of what it is given
    with pytest.raises(GradCamError, match="is out of range: the model has 4 classes"):
        SegmentationTarget(4)(out)
    with pytest.raises(GradCamError, match=r"needs a \(N, classes, H, W\) output"):
        SegmentationTarget(0)(out.flatten(1))
    with pytest.raises(GradCamError, match="segmentation mask is"):
        SegmentationTarget(0, torch.ones(5, 5))(out)


def test_the_wrapper_explains_out_under_the_models_own_layer_names():
    class DictSeg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = TinySeg()

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self.inner(x)
            return {"out": out, "aux": -out}

    torch.manual_seed(0)
    model = DictSeg().eval()
    net = OutputOf(model)
    x = images(1)
    assert "inner.backbone.3" in dict(net.named_modules())
    torch.testing.assert_close(net(x), model(x)["out"])
    assert [p is q for p, q in zip(net.parameters(), model.parameters())] == [True] * len(list(model.parameters()))


# ------------------------------------------------------------------------------------ the task


def tiny_task(model: nn.Module) -> SegmentationTask:
    return SegmentationTask(Segmenter(model, "onnx", Preprocessing.torchvision_imagenet(), None, "tiny"))


def test_scorecam_through_the_task_keeps_each_region_fixed():
    """``-label -1``: every class an image predicts, Score-CAM scoring its masked copies over the
    pixels the class holds in the unperturbed prediction (pytorch-grad-cam's fixed-mask target)."""
    model, x = tiny(), images(2, seed=3)
    task = tiny_task(model)
    task.count_outputs(SIZE)
    batch = task.explain(x, "backbone.3", task.targets(["-1"]), Methods(("scorecam", "gradcam++"), batch_size=8))
    with torch.no_grad():
        pred = model(x).argmax(1)
    for n, image in enumerate(batch.images):
        labels = [t.shown["label"] for t in image.targets]
        assert labels == sorted(c + 1 for c in torch.unique(pred).tolist() if bool((pred[n] == c).any()))
        assert sum(t.shown["pixels"] for t in image.targets) == SIZE * SIZE
        for target in image.targets:
            c, k = target.shown["label"] - 1, target.position(0)
            for method, cls in (("scorecam", "ScoreCAM"), ("gradcam++", "GradCAMPlusPlus")):
                ref = pgc_maps(model, model.backbone[3], x[n : n + 1], [c], cls)[0, 0]
                ours = batch.explanations[method].cam_raw[n, k].double().numpy()
                assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max(), (method, n, c)


def test_a_class_an_image_does_not_predict_is_skipped_with_a_line():
    model, x = tiny(), images(2)
    with torch.no_grad():
        pred = model(x).argmax(1)
    absent = [c for c in range(CLASSES) if not bool((pred[0] == c).any())]
    assert absent
    task = tiny_task(model)
    task.count_outputs(SIZE)
    batch = task.explain(x[:1], "backbone.3", task.targets([str(absent[0] + 1)], option="-label"), Methods())
    assert batch.images[0].targets == []
    assert batch.images[0].lines == [f"-label {absent[0] + 1}: not predicted in this image, skipped (no pixels to "
                                     "sum its logits over)"]
    with pytest.raises(GradCamError, match=r"^-label 5 is not one of this model's labels: 1 to 4"):
        task.targets(["5"], option="-label")
    with pytest.raises(GradCamError, match="no class names to look it up in"):
        task.targets(["cat"], option="-label")


def test_a_classifier_and_an_unknown_name_are_one_line():
    from gradcam_core.formats.synset import parse_synset

    classifier = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with pytest.raises(GradCamError, match=r"^cls.onnx is not a segmentation model: its output is \(1, 4\), not "):
        SegmentationTask(Segmenter(classifier, "onnx", Preprocessing.torchvision_imagenet(), None,
                                   "cls.onnx")).count_outputs(SIZE)
    task = tiny_task(tiny())
    task.names = parse_synset("background\ncat\ndog\nsky\n", "names.txt")
    task.count_outputs(SIZE)
    assert task.targets(["Dog", "-1", "2"], option="-label").labels == [3, -1, 2]
    with pytest.raises(GradCamError, match=r"^-label 'dgo': no class named 'dgo' in names.txt; close matches: 'dog'"):
        task.targets(["dgo"], option="-label")


def test_aug_smooth_mirrors_the_region_with_the_image():
    """A mirrored image with its mirrored mask gives the mirrored map (the mask flips with each
    mirrored copy of aug_smooth)."""
    model, x = tiny(), images(1)
    mask = torch.zeros(SIZE, SIZE)
    mask[5:20, 4:30] = 1
    one = explain(model, x, "backbone.3", [SegmentationTarget(2, mask)], guided=False, aug_smooth=True)
    mirrored = explain(model, x.flip(-1), "backbone.3", [SegmentationTarget(2, mask.flip(-1))], guided=False,
                       aug_smooth=True)
    assert float(one.cam_raw.abs().max()) > 0
    torch.testing.assert_close(mirrored.cam_raw, one.cam_raw.flip(-1), rtol=1e-4, atol=1e-5 * float(one.cam_raw.max()))


# ------------------------------------------------------------------------------ torchvision, slow


def calibrated(model: nn.Module, size: int) -> nn.Module:
    """BatchNorm statistics from random images (an untrained MobileNetV3's activations otherwise
    shrink to rounding noise), then eval mode, parameters frozen."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(5)))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "size"), [("deeplabv3_mobilenet_v3_large", 96), ("fcn_resnet50", 64)])
def test_gradcam_equals_pytorch_grad_cam_on_torchvision(arch, size):
    from gradcam_core.formats.torchvision import load_segmentation

    torch.manual_seed(0)
    net = OutputOf(calibrated(load_segmentation(arch, None), size))
    task = SegmentationTask(Segmenter(net, "torchvision", Preprocessing.torchvision_imagenet(), None, arch,
                                      backbone_layer="backbone.16" if "mobilenet" in arch else "backbone.layer4"))
    layer = task.default_layer(size)
    x = images(2, size)
    classes = present_in_all(net, x)
    assert classes
    ours = explain(net, x, layer, [SegmentationTarget(c) for c in classes], guided=False)
    h, w = ours.cam_raw.shape[-2:]
    assert_maps_close(ours.cam_raw, pgc_maps(net, dict(net.named_modules())[layer], x, classes), factor=h * w,
                      what=arch)


# ------------------------------------------------------------------------------ the command line


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model as ONNX (64 x 64 inputs), a 4-output classifier as ONNX, a 128 x 128 image (a
    mask of it on even pixels is exactly a 64 x 64 one), class names."""
    folder = tmp_path_factory.mktemp("seg")
    model = tiny()
    torch.onnx.export(model, torch.zeros(1, 3, 64, 64), folder / "tiny.onnx", dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    classifier = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    torch.onnx.export(classifier, torch.zeros(1, 3, 64, 64), folder / "classifier.onnx", dynamo=False)
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    coarse.resize((128, 128), Image.BILINEAR).save(folder / "image.png")
    (folder / "names.txt").write_text("background\ncat\ndog\nsky\n")
    return {"onnx": folder / "tiny.onnx", "classifier": folder / "classifier.onnx", "image": folder / "image.png",
            "names": folder / "names.txt", "model": model}  # type: ignore[dict-item]


def predicted_labels(files: dict, mask: torch.Tensor | None = None) -> list[int]:
    """The 1-based labels the tiny model predicts for the image as the command preprocesses it."""
    x = load_input(files["image"], 64, 64, Preprocessing.torchvision_imagenet())
    with torch.no_grad():
        pred = files["model"](x[None])[0].argmax(0)
    return sorted(int(c) + 1 for c in torch.unique(pred if mask is None else pred[mask]))


def segment(files: dict, out: Path, *args: str):
    model = [] if "-model_file" in args else ["-model_file", str(files["onnx"])]
    return cli_runner.shared().run("segmentation.py", *model, "-input_image_path", str(files["image"]),
                                   "-out_path", str(out), *args)


@pytest.mark.slow  # (an ONNX run takes seconds: onnx2torch's import; the quick set has one, below)
def test_the_command_writes_each_predicted_classs_files(files, tmp_path):
    result = segment(files, tmp_path / "out", "-label", "-1", "-save_overlay", "1")
    assert result.returncode == 0, result.stderr
    labels = predicted_labels(files)
    assert len(labels) >= 2
    kinds = ("gcam_hm", "gb", "gb_gcam", "overlay", "mask")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"segment_{kind}_{label}.png" for label in labels for kind in kinds)
    lines = result.stdout.splitlines()
    assert lines[1] == ("Grad-CAM layer: /backbone/backbone.3/Relu (the last feature map below the class scores; "
                        "-layer_name chooses another)")
    assert [line.split(":")[0] for line in lines[2:]] == [f"Label {label}" for label in labels]
    x = load_input(files["image"], 64, 64, Preprocessing.torchvision_imagenet())
    with torch.no_grad():
        pred = files["model"](x[None])[0].argmax(0)
    mask_png = np.asarray(Image.open(tmp_path / "out" / f"segment_mask_{labels[0]}.png"))
    assert np.array_equal(mask_png == 255, (pred == labels[0] - 1).numpy())


def test_the_command_names_classes_and_sums_over_a_mask(files, tmp_path):
    mask = np.zeros((128, 128), np.uint8)
    mask[20:80, 40:120] = 200
    Image.fromarray(mask).save(tmp_path / "mask.png")
    result = segment(files, tmp_path / "out", "-label", "dog,-1", "-mask", str(tmp_path / "mask.png"),
                     "-synset_file", str(files["names"]), "-save_overlay", "1", "-method", "gradcam,layercam")
    assert result.returncode == 0, result.stderr
    inside = torch.from_numpy(mask[::2, ::2] > 0)
    labels = list(dict.fromkeys([3, *predicted_labels(files, inside)]))
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {f"segment_mask_{label}.png" for label in labels} <= written
    assert {f"segment_layercam_hm_{label}.png" for label in labels} <= written
    assert "Label 3 (dog): " in result.stdout and "pixels predicted inside the mask" in result.stdout
    white = np.asarray(Image.open(tmp_path / "out" / "segment_mask_3.png")) == 255
    assert np.array_equal(white, mask[::2, ::2] > 0)


@pytest.mark.parametrize(("args", "line"), [
    pytest.param(("-label", "cat"), "-label 'cat': this model has no class names to look it up in; give a 1-based "
                 "label, or the names with -synset_file", marks=pytest.mark.slow),
    pytest.param(("-label", "bird", "-synset_file", "{names}"), "-label 'bird': no class named 'bird' in class names "
                 "file '{names}'", marks=pytest.mark.slow),
    pytest.param(("-label", "7"), "-label 7 is not one of this model's labels: 1 to 4 (1-based)",
                 marks=pytest.mark.slow),
    (("-mask", "{mask}"), "-mask {mask} is 30x20 but the image {image} is 128x128: a mask has its image's size"),
    (("-model_file", "{names}"), "-model_file {names} is not an ONNX model: a torchvision state_dict needs -arch "
                                 "(fcn_resnet50, deeplabv3_resnet50, ...)"),
    (("-model_file", "", "-arch", "fcn_resnet50"), "-arch fcn_resnet50 needs its weights: give its torchvision "
     "state_dict (a .pth file of model.state_dict()) with -model_file; nothing is downloaded"),
    pytest.param(("-arch", "deeplab", "-model_file", "{names}"), "unknown torchvision architecture 'deeplab': did "
                 "you mean deeplabv3_resnet50, deeplabv3_resnet101? the segmentation architectures are "
                 "deeplabv3_mobilenet_v3_large, deeplabv3_resnet101, deeplabv3_resnet50, fcn_resnet101, fcn_resnet50, "
                 "lraspp_mobilenet_v3_large", marks=pytest.mark.slow),
    pytest.param(("-model_file", "{classifier}"), "{classifier} is not a segmentation model: its output is (1, 4), "
                 "not (N, classes, H, W)", marks=pytest.mark.slow),
])
def test_bad_input_is_one_line_and_exit_2(files, tmp_path, args, line):
    """Each bad input's line (those before the model is loaded are quick; the rest load the ONNX file)."""
    Image.fromarray(np.full((20, 30), 255, np.uint8)).save(tmp_path / "small.png")
    names = {"mask": tmp_path / "small.png", "image": files["image"], "classifier": files["classifier"],
             "names": files["names"]}
    result = segment(files, tmp_path / "out", *(a.format(**names) for a in args))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"segmentation.py: error: {line.format(**names)}"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_command_runs_a_torchvision_state_dict(tmp_path):
    from gradcam_core.formats.torchvision import load_segmentation

    torch.manual_seed(0)
    torch.save(load_segmentation("lraspp_mobilenet_v3_large", None).state_dict(), tmp_path / "lraspp.pth")
    result = cli_runner.shared().run("segmentation.py", "-arch", "lraspp_mobilenet_v3_large", "-model_file",
                                     str(tmp_path / "lraspp.pth"), "-input_sz", "96", "-label", "-1",
                                     "-out_path", str(tmp_path / "out"), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Grad-CAM layer: backbone.16 (the backbone's output, which the heads read" in result.stdout
    labels = [line.split(":")[0].split()[1] for line in result.stdout.splitlines() if line.startswith("Label ")]
    assert labels and {f"segment_gcam_hm_{label}.png" for label in labels} <= {
        p.name for p in (tmp_path / "out").iterdir()}



# ------------------------------------------------------------------------------------ the web demo


def test_the_web_demo_explains_the_largest_class_and_shows_its_region(files):
    """A request's label '' is the class with the most pixels; its ``mask`` image is that class's
    predicted pixels, named as the command line names the file; a class the image does not predict is
    the task's one line."""
    import io

    from gradcam_core.web.demo import load_segmentation

    demo_task = load_segmentation(files["onnx"], input_sz=None)
    config = demo_task.config()
    assert config["enabled"] and config["input_sz"] == 64 and config["default_layer"] == "/backbone/backbone.3/Relu"
    x = load_input(files["image"], 64, 64, Preprocessing.torchvision_imagenet())
    with torch.no_grad():
        pred = files["model"](x[None])[0].argmax(0)
    counts = torch.bincount(pred.reshape(-1), minlength=CLASSES)
    largest = int(counts.argmax())
    result = demo_task.explain(files["image"], {"label": ""}, 10**6).to_json()
    assert result["target"] == {"label": largest + 1, "name": None, "pixels": int(counts[largest])}
    assert result["files"]["mask"] == f"segment_mask_{largest + 1}.png"
    png = result["images"]["mask"].removeprefix("data:image/png;base64,")
    import base64

    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))))
    assert np.array_equal(mask == 255, (pred == largest).numpy())
    assert [p["label"] for p in result["predictions"]] == [int(c) + 1 for c in counts.argsort(descending=True)
                                                           if counts[c] > 0][:5]
    absent = [c for c in range(CLASSES) if counts[c] == 0]
    if absent:
        with pytest.raises(GradCamError, match="not predicted in this image"):
            demo_task.explain(files["image"], {"label": str(absent[0] + 1)}, 10**6)
