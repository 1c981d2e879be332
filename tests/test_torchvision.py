"""torchvision classification models: loading a state_dict safely, the default Grad-CAM layer, Grad-CAM and
guided backprop against Captum's, and the real SqueezeNet explaining the two animals of cat_dog.jpg."""
from __future__ import annotations

import os

import pytest
import torch
from conftest import DATA, ROOT

from gradcam_core import GradCamError, explain
from gradcam_core.engine.layers import default_layer, spatial_layers
from gradcam_core.formats import torchvision as tv
from gradcam_core.image.decode import load_image, to_rgb
from gradcam_core.image.resize import scale

torchvision = pytest.importorskip("torchvision")
SQUEEZENET = ROOT / "models" / "squeezenet1_1"


def _resnet18(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """(state_dict, path of the file torch.save wrote it to)."""
    state = _resnet18().state_dict()
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(state, path)
    return state, path


# --- loading ---------------------------------------------------------------------------------------


def test_loads_a_state_dict_in_eval_mode(resnet18_file):
    state, path = resnet18_file
    model = tv.load_torchvision("resnet18", path)
    assert not model.training
    loaded = model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _resnet18()(x))


def test_checkpoint_wrappers_and_a_fine_tuned_head(tmp_path, resnet18_file):
    state, _ = resnet18_file
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "dp.pth")
    tuned = dict(state, **{"fc.weight": torch.randn(10, 512), "fc.bias": torch.randn(10)})
    torch.save(tuned, tmp_path / "tuned.pth")
    for name in ("ckpt", "dp"):
        assert torch.equal(tv.load_torchvision("resnet18", tmp_path / f"{name}.pth").conv1.weight, state["conv1.weight"])
    model = tv.load_torchvision("resnet18", tmp_path / "tuned.pth")
    assert model.fc.out_features == 10 and torch.equal(model.fc.bias, tuned["fc.bias"])


def test_a_pickled_module_is_refused_without_being_run(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(_resnet18(), path)
    with pytest.raises(GradCamError) as err:
        tv.load_torchvision("resnet18", path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "could run code" in msg and "torchvision.models.resnet.ResNet" in msg


class _Alarm:
    """Unpickling this object calls os.system: a weights_only load must never get that far."""

    def __reduce__(self):
        return (os.system, ("touch " + os.environ["GRADCAM_ALARM"],))


def test_a_file_that_would_run_code_does_not(tmp_path, monkeypatch):
    alarm = tmp_path / "ran"
    monkeypatch.setenv("GRADCAM_ALARM", str(alarm))
    torch.save({"conv1.weight": _Alarm()}, tmp_path / "evil.pth")
    with pytest.raises(GradCamError, match="could run code"):
        tv.load_torchvision("resnet18", tmp_path / "evil.pth")
    assert not alarm.exists()


@pytest.mark.parametrize("change, expected", [
    (lambda s: s.pop("bn1.running_mean"), "the file has no 'bn1.running_mean'"),
    (lambda s: s.__setitem__("head.weight", torch.zeros(1)), "the model has no 'head.weight'"),
    (lambda s: s.__setitem__("layer1.0.conv1.weight", torch.zeros(32, 64, 3, 3)),
     "'layer1.0.conv1.weight' is (32, 64, 3, 3) in the file, (64, 64, 3, 3) in the model"),
    (lambda s: s.__setitem__("fc.bias", s["fc.bias"].to_sparse()),
     "'fc.bias' is a sparse (sparse_coo) tensor in the file; the model takes dense tensors"),
    (lambda s: s.__setitem__("fc.weight", s["fc.weight"].to_sparse_csr()),
     "'fc.weight' is a sparse (sparse_csr) tensor in the file"),
], ids=["missing", "unexpected", "shape", "sparse", "sparse_csr"])
def test_a_state_dict_that_does_not_fit_names_the_first_difference(tmp_path, resnet18_file, change, expected):
    state = dict(resnet18_file[0])
    change(state)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(GradCamError) as err:
        tv.load_torchvision("resnet18", tmp_path / "bad.pth")
    assert expected in str(err.value) and "do not fit resnet18" in str(err.value) and "\n" not in str(err.value)


def test_another_architectures_weights_do_not_fit(resnet18_file):
    with pytest.raises(GradCamError, match=r"do not fit resnet34: the file has no 'layer1\.2\.conv1\.weight'"):
        tv.load_torchvision("resnet34", resnet18_file[1])


@pytest.mark.parametrize("content, expected", [
    (b"", "it is empty"),
    (b"hello, this is text\n", "not a torch file"),
    (b"\x80\x02" + bytes(range(100)), "not a readable torch file"),
    (None, "not a readable torch file"),  # a truncated torch file
], ids=["empty", "text", "corrupt_pickle", "truncated"])
def test_a_file_that_is_not_a_torch_file(tmp_path, resnet18_file, content, expected):
    path = tmp_path / "weights.pth"
    path.write_bytes(resnet18_file[1].read_bytes()[:5000] if content is None else content)
    with pytest.raises(GradCamError) as err:
        tv.load_torchvision("resnet18", path)
    assert expected in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_not_a_state_dict_and_not_a_regular_file(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(GradCamError, match="hold a list, not a state_dict"):
        tv.load_torchvision("resnet18", tmp_path / "list.pth")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(GradCamError, match="not a regular file"):
        tv.load_torchvision("resnet18", fifo)  # returns at once: a FIFO is never opened for a blocking read
    with pytest.raises(GradCamError, match="cannot read torchvision weights .*missing.pth"):
        tv.load_torchvision("resnet18", tmp_path / "missing.pth")


def test_an_unknown_architecture_lists_close_matches_and_the_valid_ones():
    with pytest.raises(GradCamError) as err:
        tv.load_torchvision("resnet5", None)
    msg = str(err.value)
    assert "did you mean resnet50" in msg and "mobilenet_v3_small" in msg and "\n" not in msg
    with pytest.raises(GradCamError, match="unknown torchvision architecture 'fasterrcnn_resnet50_fpn'"):
        tv.load_torchvision("fasterrcnn_resnet50_fpn", None)  # detection is not classification
    assert "resnet50" in tv.architectures() and "fasterrcnn_resnet50_fpn" not in tv.architectures()


@pytest.mark.slow  # a DenseNet-121 built, saved and loaded
def test_old_densenet_keys_are_renamed(tmp_path):
    torch.manual_seed(0)
    state = torchvision.models.densenet121(weights=None).state_dict()
    old = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in state.items()}
    assert old.keys() != state.keys()
    torch.save(old, tmp_path / "densenet121.pth")
    model = tv.load_torchvision("densenet121", tmp_path / "densenet121.pth")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_imagenet_categories_and_preprocessing_constants():
    names = tv.imagenet_categories()
    assert len(names) == 1000 and names[0] == "tench" and names[242] == "boxer" and names[282] == "tiger cat"
    assert tv.categories("mobilenet_v3_small") == names
    assert (tv.CHANNEL_ORDER, tv.VALUE_RANGE, tv.MEAN, tv.STD) == ("rgb", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    synsets = SQUEEZENET / "synset_words.txt"
    if synsets.exists():  # Caffe's order of the same 1000 classes
        first = [line.split(" ", 1)[1].split(",")[0].strip() for line in synsets.read_text().splitlines()]
        assert first[242] == names[242] and first[282] == names[282] and len(first) == 1000


# --- the default Grad-CAM layer --------------------------------------------------------------------


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_default_layer_is_the_last_spatial_map():
    model = _resnet18()
    x = torch.randn(1, 3, 64, 64)
    assert default_layer(model, x) == "layer4"  # (1, 512, 2, 2); avgpool gives 1 x 1
    found = dict(spatial_layers(model, x))
    assert found["layer4"] == (1, 512, 2, 2) and "avgpool" not in found and "fc" not in found
    assert _hook_count(model) == 0
    with pytest.raises(RuntimeError):  # 4 channels: the forward fails, the hooks go anyway
        default_layer(model, torch.randn(1, 4, 64, 64))
    assert _hook_count(model) == 0
    assert default_layer(model, torch.randn(1, 3, 32, 32)) == "layer3"  # layer4 is 1 x 1 here
    mlp = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 2), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with pytest.raises(GradCamError, match="no layer of the model gives a spatial map"):
        default_layer(mlp, torch.randn(1, 3, 2, 2))  # the convolution's output is 1 x 1
    mobilenet = tv.load_torchvision("mobilenet_v3_small", None)
    assert default_layer(mobilenet, torch.randn(1, 3, 64, 64)) == "features"


def test_default_layer_of_a_caffe_net_is_a_caffe_layer_name():
    from gradcam_core.caffe import load_caffe

    net = load_caffe(DATA / "models" / "mini_vgg16_v1.prototxt", DATA / "models" / "mini_vgg16_v1.caffemodel")
    assert default_layer(net, torch.randn(1, 3, 224, 224)) == "pool5"


# --- against Captum ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch, layer", [("resnet18", "layer4"),
                                         pytest.param("resnet18", "layer3.1.conv1", marks=pytest.mark.slow),
                                         pytest.param("mobilenet_v3_small", "features", marks=pytest.mark.slow)])
def test_grad_cam_equals_captums(arch, layer):
    """Our channel weights are the SUM of the gradients over the map, Captum's the mean: ours / (h * w)."""
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    targets = [3, 7]
    ours = explain(model, x, layer=layer, targets=targets, guided=False).cam_raw
    module = dict(model.named_modules())[layer]
    for k, t in enumerate(targets):
        theirs = LayerGradCam(model, module).attribute(x, target=t, relu_attributions=True)[:, 0]
        mine = ours[:, k] / (theirs.shape[-1] * theirs.shape[-2])
        assert theirs.abs().max() > 0
        assert (mine - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_guided_backprop_equals_captums_on_resnet18():
    from captum.attr import GuidedBackprop

    model = _resnet18(1)
    x = torch.randn(2, 3, 64, 64)
    ours = explain(model, x, layer="layer4", targets=[3, 7], torch7_ties=False).guided
    for k, t in enumerate([3, 7]):
        with pytest.warns(UserWarning):  # Captum's notes on its hooks
            theirs = GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=t)
        assert (ours[:, k] - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    assert _hook_count(model) == 0 and not any("forward" in vars(m) for m in model.modules())


def _reference_guided(model: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Guided backprop written independently: on a copy of the model with out-of-place activations,
    full backward hooks replace each activation's input gradient by f'(x) * max(dy, 0), f' from the
    activation's definition and x kept by a forward pre-hook."""
    import copy

    slopes = {
        torch.nn.ReLU: lambda a: (a > 0).to(a.dtype),
        torch.nn.ReLU6: lambda a: ((a > 0) & (a < 6)).to(a.dtype),
        torch.nn.Hardswish: lambda a: torch.where(a < -3, 0.0, torch.where(a <= 3, a / 3 + 0.5, 1.0)),
    }
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if type(m) in slopes:
            m.inplace = False
            m.register_forward_pre_hook(lambda mod, inputs: setattr(mod, "seen", inputs[0].detach()))
            m.register_full_backward_hook(
                lambda mod, grad_in, grad_out: (slopes[type(mod)](mod.seen) * grad_out[0].clamp_min(0),))
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(twin(leaf)[:, target].sum(), leaf)
    return g


@pytest.mark.slow  # two real architectures; the rules, in place and beside gates, on small nets: test_guided.py
@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_small"])
def test_guided_backprop_through_relu6_and_hardswish_equals_the_reference(arch):
    """In-place ReLU6 (MobileNetV2) and Hardswish and ReLU beside Hardsigmoid gates (MobileNetV3) against
    :func:`_reference_guided`; the model is left as it was."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 64, 64)
    ours = explain(model, x, layer="features", targets=[5], torch7_ties=False).guided[:, 0]
    theirs = _reference_guided(model, x, 5)
    assert theirs.abs().max() > 0
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not any("forward" in vars(m) for m in model.modules())


# --- the real model -----------------------------------------------------------------------------------


def _imagenet_input(path) -> torch.Tensor:
    """(1, 3, 224, 224): the whole image scaled to 224 x 224 (image.scale, no crop), RGB 0..1,
    normalised as torchvision's ImageNet models take it."""
    img = scale(to_rgb(load_image(path)), 224, 224)
    mean, std = torch.tensor(tv.MEAN).view(3, 1, 1), torch.tensor(tv.STD).view(3, 1, 1)
    return ((img - mean) / std)[None]


@pytest.fixture(scope="module")
def squeezenet():
    weights = SQUEEZENET / "squeezenet1_1.pth"
    if not weights.exists():
        pytest.skip(f"the real SqueezeNet is not bundled here ({weights} is absent)")
    return tv.load_torchvision("squeezenet1_1", weights)


def test_real_squeezenet_sees_the_tiger_cat(squeezenet):
    with torch.no_grad():
        scores = squeezenet(_imagenet_input(ROOT / "images" / "cat_dog.jpg"))[0]
    assert int(scores.argmax()) == 282 and tv.imagenet_categories()[282] == "tiger cat"
    assert 242 in scores.topk(5).indices.tolist()  # boxer is among the five


def test_real_squeezenet_maps_depend_on_the_class(squeezenet):
    """cat_dog.jpg: the dog sits in the upper half, the cat lies in the lower half. The boxer map (242)
    peaks on the dog and keeps most of its weight in the upper half; the tiger-cat map (282) moves its
    weight down to the cat. Two maps that ignored the class would be equal."""
    x = _imagenet_input(ROOT / "images" / "cat_dog.jpg")
    e = explain(squeezenet, x, layer="features", targets=[242, 282], guided=False)
    boxer, cat = e.cam[0]  # (224, 224) each
    upper = [float(m[:112].sum() / m.sum()) for m in (boxer, cat)]
    assert upper[0] > 0.65 and upper[1] < 0.5, upper
    assert divmod(int(boxer.argmax()), 224)[0] < 112  # the boxer map's peak is on the dog
    assert int(boxer.argmax()) != int(cat.argmax())
    assert default_layer(squeezenet, x) == "classifier.2"  # the class-score map of the last convolution
