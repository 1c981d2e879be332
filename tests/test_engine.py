"""The engine against an independent implementation (Captum) and against properties a user relies on."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gradcam_core import GradCamError, explain
from gradcam_core.engine import resolve_layer


def toy_cnn(inplace: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace),
        nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(inplace), nn.Linear(32, 5),
    ).double().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_matches_captum_gradcam_and_guided_backprop(images):
    captum_attr = pytest.importorskip("captum.attr")
    model = toy_cnn()
    targets = [1, 3, 2]
    expl = explain(model, images, "4", targets)
    for k, t in enumerate(targets):
        # Captum averages the gradients (1/Z); the original sums them: Z = 8 x 8 here.
        ref_cam = captum_attr.LayerGradCam(model, model[4]).attribute(images, target=t, relu_attributions=True)
        torch.testing.assert_close(expl.cam_raw[:, k], 64 * ref_cam[:, 0], rtol=1e-10, atol=1e-12)
        ref_gb = captum_attr.GuidedBackprop(model).attribute(images.clone().requires_grad_(), target=t)
        torch.testing.assert_close(expl.guided[:, k], ref_gb, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(expl.guided_cam[:, k], ref_gb * expl.cam[:, k, None])


def test_several_targets_equal_separate_runs(images):
    model = toy_cnn()
    together = explain(model, images, "4", [4, 0, 2])
    for k, t in enumerate([4, 0, 2]):
        alone = explain(model, images, "4", [t])
        torch.testing.assert_close(together.cam[:, k], alone.cam[:, 0])
        torch.testing.assert_close(together.guided[:, k], alone.guided[:, 0])


def test_batch_equals_one_image_at_a_time(images):
    model = toy_cnn()
    batch = explain(model, images, "4", [1, 2])
    for n in range(images.shape[0]):
        one = explain(model, images[n : n + 1], "4", [1, 2])
        torch.testing.assert_close(batch.cam[n], one.cam[0])
        torch.testing.assert_close(batch.guided[n], one.guided[0])


def test_gradcam_alone_gives_the_same_map(images):
    model = toy_cnn()
    full = explain(model, images, "4", [3])
    cam_only = explain(model, images, "4", [3], guided=False)
    torch.testing.assert_close(cam_only.cam, full.cam)
    assert cam_only.guided is None and cam_only.guided_cam is None


def test_inplace_relu_after_the_layer_acts_as_in_lua(images):
    """With an in-place ReLU after the chosen conv (as loadcaffe's nn.ReLU(true)), the conv's stored
    output is the rectified one, and its gradient is the ReLU's, masked where the output is 0."""
    plain, inplace = toy_cnn(False), toy_cnn(True)
    at_relu = explain(plain, images, "4", [2])
    for guided in (True, False):
        at_conv = explain(inplace, images, "3", [2], guided=guided)
        torch.testing.assert_close(at_conv.activations, at_relu.activations)
        x = images.clone().requires_grad_()
        a = plain[:5](x)
        (g,) = torch.autograd.grad(plain[5:](a)[:, 2].sum(), a)
        torch.testing.assert_close(at_conv.weights[:, 0], (g * (a > 0)).sum(dim=(-2, -1)))
        if guided:
            torch.testing.assert_close(at_conv.guided, at_relu.guided)


def test_predicted_class_target(images):
    from gradcam_core.engine import ClassTarget

    model = toy_cnn()
    expl = explain(model, images, "4", [ClassTarget(None)])
    pred = expl.scores.argmax(dim=1)
    for n in range(images.shape[0]):
        ref = explain(model, images[n : n + 1], "4", [int(pred[n])])
        torch.testing.assert_close(expl.cam[n, 0], ref.cam[0, 0])


def test_model_is_left_as_it_was_even_after_an_error(images):
    model = toy_cnn()
    before = [p.requires_grad for p in model.parameters()]

    def failing_target(_out):
        raise GradCamError("boom")

    with pytest.raises(GradCamError):
        explain(model, images, "4", [failing_target])
    explain(model, images, "4", [1])
    assert [p.requires_grad for p in model.parameters()] == before
    assert all(not m._forward_hooks and not m._backward_hooks and "forward" not in vars(m) for m in model.modules())


def test_out_of_range_class_is_a_clear_error(images):
    with pytest.raises(GradCamError, match="out of range: the model has 5 outputs"):
        explain(toy_cnn(), images, "4", [5])


def test_unknown_layer_lists_the_valid_names(images):
    with pytest.raises(GradCamError, match="valid names: 0, 1, 2"):
        resolve_layer(toy_cnn(), "conv9")


def test_non_convolutional_layer_is_refused(images):
    with pytest.raises(GradCamError, match=r"needs a convolutional layer"):
        explain(toy_cnn(), images, "6", [1])


def test_trained_model_looks_at_the_object():
    """A toy classifier trained to tell "bright square present" from noise: its Grad-CAM peak for the
    positive class lands on the square."""
    gen = torch.Generator().manual_seed(7)

    def batch(n):
        x = 0.3 * torch.randn(n, 3, 32, 32, generator=gen)
        y = torch.randint(0, 2, (n,), generator=gen)
        where = torch.randint(0, 24, (n, 2), generator=gen)
        for i in range(n):
            if y[i]:
                r, c = where[i].tolist()
                x[i, :, r : r + 8, c : c + 8] += 2.0
        return x, y, where

    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 2),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ops this small gain nothing from a second thread (and lose much on a busy machine)
    try:
        for _ in range(60):  # enough: accuracy and hits are 1.0 here and for other seeds
            x, y, _ = batch(32)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    x, y, where = batch(64)
    assert (model(x).argmax(1) == y).float().mean() > 0.9, "the toy model did not learn"
    pos = y.nonzero()[:, 0]
    expl = explain(model, x[pos], "6", [1])
    hits = 0
    for j, i in enumerate(pos.tolist()):
        peak = int(expl.cam[j, 0].argmax())
        r, c = divmod(peak, 32)
        r0, c0 = where[i].tolist()
        hits += (r0 - 2 <= r < r0 + 10) and (c0 - 2 <= c < c0 + 10)
    assert hits / len(pos) > 0.9, f"Grad-CAM peak on the object in only {hits}/{len(pos)} images"


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN is not in this torch build")
def test_flat_regions_break_pooling_ties_as_torch7_did(tmp_path):
    """A flat region (here a grey border) makes max-pooling windows tie exactly in exact arithmetic;
    Torch7's im2col convolution kept them bit-equal, so the gradient went to each window's first
    element. With ``torch7_ties`` (the default) the guided image equals one computed entirely on the
    im2col path; oneDNN's rounding breaks those ties differently and changes the image."""
    from conftest import DATA
    from PIL import Image

    from gradcam_core import image as imageops
    from gradcam_core.tasks.classify import load_classifier

    photo = Image.open(DATA.parent.parent / "images" / "cat_dog.jpg").convert("RGB")
    framed = Image.new("RGB", (photo.width + 300, photo.height + 300), (128, 128, 128))
    framed.paste(photo, (0, 0))
    framed.save(tmp_path / "framed.png")
    net = load_classifier(DATA / "models/mini_vgg16_v1.prototxt", DATA / "models/mini_vgg16_v1.caffemodel")
    image = imageops.preprocess(tmp_path / "framed.png", 224, 224)[None]

    def guided(**options):
        g = explain(net, image, "relu5_3", [4], **options).guided
        return imageops.to_display(g)

    ours, fast = guided(), guided(torch7_ties=False)
    torch.backends.mkldnn.enabled = False
    try:
        reference = guided()
    finally:
        torch.backends.mkldnn.enabled = True
    assert float((ours - reference).abs().max()) < 1e-5
    assert float((fast - reference).abs().max()) > 1e-2, "oneDNN no longer breaks the ties differently"


def test_batched_targets_give_the_single_run_maps_on_a_caffe_net():
    """Issue 5's promise for speed: a batch of images with several targets gives each image's maps
    as a one-image, one-target run does, within 1e-5 after min-max normalisation (float32 Caffe net,
    Torch7 convolution numerics on the forward, as the CLI runs it)."""
    from conftest import DATA

    from gradcam_core import image as imageops
    from gradcam_core.tasks.classify import load_classifier

    net = load_classifier(DATA / "models/mini_vgg16_v1.prototxt", DATA / "models/mini_vgg16_v1.caffemodel")
    photos = sorted((DATA.parent.parent / "images").glob("*.jpg"))[:2]
    images = torch.stack([imageops.preprocess(p, 224, 224) for p in photos])
    labels = [4, 7]
    batch = explain(net, images, "relu5_3", labels)
    for n in range(len(photos)):
        for k, label in enumerate(labels):
            one = explain(net, images[n : n + 1], "relu5_3", label)
            for field in ("cam", "guided", "guided_cam"):
                got = imageops.to_display(getattr(batch, field)[n, k])
                want = imageops.to_display(getattr(one, field)[0, 0])
                assert float((got - want).abs().max()) <= 1e-5, (photos[n].name, label, field)


def test_nonfinite_names_what_of_which_image_is_not_finite():
    import dataclasses

    from gradcam_core.engine import Explanation

    n, k = 3, 2
    e = Explanation(scores=torch.zeros(n, 5), target_scores=torch.zeros(n, k), activations=torch.zeros(n, 4, 2, 2),
                    weights=torch.zeros(n, k, 4), cam_raw=torch.zeros(n, k, 2, 2), cam=torch.zeros(n, k, 8, 8),
                    guided=torch.zeros(n, k, 3, 8, 8), guided_cam=torch.zeros(n, k, 3, 8, 8))
    assert [e.nonfinite(i) for i in range(n)] == ["", "", ""]
    e.scores[1, 4] = float("nan")
    e.cam_raw[2, 1, 0, 0] = float("inf")
    e.cam[2, 1, 0, 0] = float("inf")
    assert [e.nonfinite(i) for i in range(n)] == ["", "scores", "Grad-CAM map"]
    g = dataclasses.replace(e, scores=torch.zeros(n, 5), cam_raw=torch.zeros(n, k, 2, 2), cam=torch.zeros(n, k, 8, 8))
    g.guided[0, 0, 0, 0, 0] = float("-inf")
    assert [g.nonfinite(i) for i in range(n)] == ["guided backprop", "", ""]
