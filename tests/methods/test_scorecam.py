"""Score-CAM against pytorch-grad-cam's ScoreCAM and a hand-written channel loop; its forwards shared
by the targets, a constant channel's blank image scored once, batches within ``batch_size``."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import DATA, ROOT
from torch import nn

from gradcam_core import explain
from gradcam_core import image as imageops
from gradcam_core.engine import ClassTarget, resolve_layer
from gradcam_core.engine.methods import perturb

from .pert_common import (
    assert_unchanged,
    caffe_net,
    count_forwards,
    images,
    layer_map,
    rel_err,
    snapshot,
    torchvision_net,
)

grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import base_cam  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

TOL = 1e-4  # of the map's maximum


def reference(model: nn.Module, x: torch.Tensor, module: nn.Module, cls: int) -> torch.Tensor:
    """pytorch-grad-cam's ScoreCAM map for class ``cls`` (N, h, w), before its resize and min-max."""
    with layer_map(base_cam) as got, grad_cam.ScoreCAM(model, [module]) as cam:
        cam(x, [ClassifierOutputTarget(cls)] * x.shape[0])
    return got["map"]


def hand_scorecam(model: nn.Module, image: torch.Tensor, module: nn.Module, score) -> torch.Tensor:
    """Score-CAM of one image (1, C_in, H, W) written from the formula, a channel at a time:
    M = min-max of the corner-aligned bilinear upsampling (0 for a constant channel), weights the
    softmax of ``score(model(image * M))`` over channels. -> (h, w)."""
    acts = []
    handle = module.register_forward_hook(lambda _m, _i, out: acts.append(out.detach().clone()))
    with torch.no_grad():
        model(image)
    handle.remove()
    a = acts[0][0]
    scores = []
    for c in range(a.shape[0]):
        up = F.interpolate(a[c][None, None], size=image.shape[-2:], mode="bilinear", align_corners=True)[0, 0]
        if bool(a[c].max() == a[c].min()):
            mask = torch.zeros_like(up)
        else:
            mask = (up - up.min()) / (up.max() - up.min() + 1e-8)
        with torch.no_grad():
            scores.append(float(score(model(image * mask))))
    weights = torch.softmax(torch.tensor(scores, dtype=torch.float64), dim=0).to(a.dtype)
    return torch.relu((weights[:, None, None] * a).sum(dim=0))


@pytest.mark.parametrize(("arch", "layer", "seed"), [
    ("resnet18", "layer1", 0),
    pytest.param("vgg11", "features.1", 0, marks=pytest.mark.slow),  # the slowest net
    ("mobilenet_v3_small", "features.3", 3),  # a residual sum: negative activations too
])
def test_equals_pytorch_grad_cam_on_torchvision_nets(arch, layer, seed):
    model = torchvision_net(arch, seed=seed, dtype=torch.float32)
    x = images(1, 32, torch.float32)
    ours = explain(model, x, layer, [3], method="scorecam", guided=False)
    ref = reference(model, x, dict(model.named_modules())[layer], 3)
    assert float((ref > 0).double().mean()) > 0.1  # a map to compare, not one clipped to 0 by the ReLU
    assert ours.cam_raw.shape == (x.shape[0], 1, *ref.shape[1:])
    assert rel_err(ours.cam_raw[:, 0], ref) < TOL
    assert ours.weights is not None and torch.allclose(ours.weights.sum(dim=2), torch.ones(x.shape[0], 1))


def test_equals_pytorch_grad_cam_on_a_caffe_net(tmp_path):
    net = caffe_net(tmp_path, dtype=torch.float32)
    x = images(2, 16, torch.float32)
    ours = explain(net, x, "conv2", [ClassTarget(4)], method="scorecam")  # the map of relu2's in-place output
    ref = reference(net, x, resolve_layer(net, "conv2")[1], 4)
    assert float((ref > 0).double().mean()) > 0.1
    assert rel_err(ours.cam_raw[:, 0], ref) < TOL


def test_four_targets_share_the_forwards_and_give_each_targets_map(tmp_path):
    model = caffe_net(tmp_path, dtype=torch.float32)
    x = images(2, 16, torch.float32)
    before = snapshot(model)
    sizes, handle = count_forwards(model)
    together = explain(model, x, "conv2", [ClassTarget(None), 1, 2, 7], method="scorecam")
    four = sum(sizes)
    sizes.clear()
    alone = [explain(model, x, "conv2", [t], method="scorecam") for t in (ClassTarget(None), 1, 2, 7)]
    handle.remove()
    assert four == sum(sizes) / 4  # the masked images of the four targets are forwarded once
    for k, one in enumerate(alone):
        assert rel_err(together.cam_raw[:, k], one.cam_raw[:, 0]) < 1e-5
        torch.testing.assert_close(together.guided[:, k], one.guided[:, 0])
    assert_unchanged(model, before)


class Flat(nn.Module):
    """conv (4 channels: 0 constant 0, 1 constant 0.5, 2 and 3 live) -> ReLU -> head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
        with torch.no_grad():
            self.conv.weight[:2] = 0
            self.conv.bias[:2] = torch.tensor([0.0, 0.5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(x)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_channels_share_one_blank_forward_and_give_no_nan(dtype):
    model = Flat().to(dtype).eval()
    x = images(2, 8, dtype)
    sizes, handle = count_forwards(model)
    ours = explain(model, x, "relu", [ClassTarget(None), 2], method="scorecam", guided=False)
    handle.remove()
    assert sum(sizes) == 2 * (1 + 1 + 2)  # per image: the engine's forward, one blank image, 2 live channels
    assert bool(torch.isfinite(ours.cam_raw).all()) and bool(torch.isfinite(ours.weights).all())
    for n in range(2):
        predicted = int(ours.scores[n].argmax())
        for k, cls in enumerate((predicted, 2)):
            hand = hand_scorecam(model, x[n : n + 1], model.relu, lambda out, c=cls: out[0, c])
            assert rel_err(ours.cam_raw[n, k], hand) < TOL
    assert torch.equal(ours.weights[:, :, 0], ours.weights[:, :, 1])  # the same blank image
    assert rel_err(ours.cam_raw[:, 1], reference(model, x, model.relu, 2)) < TOL


def test_batches_stay_within_batch_size(tmp_path):
    model = caffe_net(tmp_path, dtype=torch.float32)
    x = images(1, 16, torch.float32)
    live = int((explain(model, x, "conv2", [3]).activations[0].flatten(1).std(dim=1) > 0).sum())
    sizes, handle = count_forwards(model)
    capped = explain(model, x, "conv2", [3], method="scorecam", guided=False, batch_size=5)
    handle.remove()
    assert max(sizes[1:]) == 5 and sum(sizes[1:]) == live + (live < 16)  # one blank image for constant ones
    free = explain(model, x, "conv2", [3], method="scorecam", guided=False)
    assert rel_err(capped.cam_raw, free.cam_raw) < 1e-5


def test_memory_budget_follows_the_free_memory(monkeypatch):
    monkeypatch.setattr(perturb, "free_memory", lambda device: 400 << 20)
    assert perturb.memory_budget(torch.device("cpu")) == 100 << 20
    monkeypatch.setattr(perturb, "free_memory", lambda device: 64 << 30)
    assert perturb.memory_budget(torch.device("cpu")) == perturb.CPU_BATCH_BYTES
    monkeypatch.setattr(perturb, "free_memory", lambda device: None)
    assert perturb.memory_budget(torch.device("cpu")) == 256 << 20


def test_batch_size_rule(monkeypatch):
    monkeypatch.setattr(perturb, "memory_budget", lambda device: 1000)
    ctx = SimpleNamespace(image=torch.zeros(1), batch_size=None)
    assert perturb.batch_size(ctx, 10, 500, whole_model=False) == 100  # what the budget holds
    assert perturb.batch_size(ctx, 10, 500, whole_model=True) == perturb.CPU_BATCH_IMAGES
    assert perturb.batch_size(ctx, 10, 50, whole_model=False) == 50  # no more than there are
    assert perturb.batch_size(ctx, 5000, 50, whole_model=False) == 1  # at least one
    ctx.batch_size = 7
    assert perturb.batch_size(ctx, 10, 500, whole_model=False) == 7


def test_free_memory_reads_this_machine():
    free = perturb.free_memory(torch.device("cpu"))
    assert free is None or 0 < free
    assert perturb.free_memory(torch.device("meta")) is None


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("progress", "terminal", "shown"), [(True, True, True), (True, False, False),
                                                              (False, True, False)])
def test_progress_bar_only_when_asked_and_on_a_terminal(monkeypatch, progress, terminal, shown):
    monkeypatch.setattr("sys.stderr", _Terminal() if terminal else io.StringIO())

    class Ctx:
        pass

    ctx = Ctx()
    ctx.progress = progress  # type: ignore[attr-defined]
    with perturb.progress_bar(ctx, 10, "Score-CAM") as bar:  # type: ignore[arg-type]
        assert bar.disable is not shown
        if shown:
            assert bar.delay == 1  # and only once the forwards have taken a second


# ------------------------------------------------------------------ the language tasks: pinned targets


def sample_image(dtype: torch.dtype) -> torch.Tensor:
    return imageops.preprocess(ROOT / "images" / "cat_dog.jpg", 224, 224, dtype)[None]


def test_vqa_answers_against_a_hand_written_loop():
    from gradcam_core.tasks import vqa

    vqa_dir = DATA / "VQA_LSTM_CNN"
    vocab = vqa.load_vocabulary(vqa_dir / "data_prepro.json")
    sizes = vqa.VQASizes(input_encoding_size=6, rnn_size=8, rnn_layers=2, common_embedding_size=16, num_output=10)
    answerer = vqa.load_answerer(vqa_dir / "lstm.t7", vocab, sizes)
    image_net = vqa.load_image_net(DATA / "models" / "mini_vgg19_v1.prototxt",
                                   DATA / "models" / "mini_vgg19_v1.caffemodel")
    _, ids, length = answerer.encode("what animal is this")
    question = answerer.question_feature(torch.tensor([ids]), torch.tensor([length]))
    image = sample_image(vqa.DTYPE)
    net = answerer.answer_net
    targets = [vqa.AnswerTarget(net, question, None), vqa.AnswerTarget(net, question, vocab.answer_index("cat"))]
    before = snapshot(image_net)
    ours = explain(image_net, image, "relu5_4", targets, method="scorecam")
    assert_unchanged(image_net, before)
    with torch.no_grad():
        predicted = int(net(question, ours.scores).argmax())
    module = resolve_layer(image_net, "relu5_4")[1]
    for k, index in enumerate((predicted, vocab.answer_index("cat"))):
        hand = hand_scorecam(image_net, image, module, lambda f, i=index: net(question, f)[0, i])
        assert rel_err(ours.cam_raw[0, k], hand) < TOL


def test_captions_against_a_hand_written_loop():
    from gradcam_core.tasks.caption import CaptionTarget, load_checkpoint
    from gradcam_core.tasks.caption.target import caption_labels, caption_score, generate

    model = load_checkpoint(DATA / "neuraltalk2" / "mini_caption_model.t7")
    image = sample_image(torch.float32)
    given = "a cat and a dog"
    before = snapshot(model.cnn)
    ours = explain(model.cnn, image, "relu5_3", [CaptionTarget(model, None), CaptionTarget(model, given)],
                   method="scorecam", guided=False)
    assert_unchanged(model.cnn, before)
    generated = generate(model.lm, model.vocab, ours.scores)[0]
    module = resolve_layer(model.cnn, "relu5_3")[1]
    for k, caption in enumerate((generated, given)):
        labels = caption_labels(model.vocab, caption, model.lm.seq_length)[:, None]
        hand = hand_scorecam(model.cnn, image, module, lambda f, lab=labels: caption_score(model.lm, f, lab)[0])
        assert rel_err(ours.cam_raw[0, k], hand) < TOL
