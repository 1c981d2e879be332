"""gradcam_core.nets: the one layer registry, GraphNet as a graph (several bottoms and tops, lookups,
blob release), the shape plan against real forwards, and the per-model torch7_ties default."""
from __future__ import annotations

import contextlib
import gc
import time
import weakref

import pytest
import torch
from conftest import DATA, ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from gradcam_core import GradCamError, explain
from gradcam_core.caffe import load_caffe
from gradcam_core.cli.shapecheck import input_size_errors
from gradcam_core.formats.torch7 import load_t7
from gradcam_core.formats.torch7.modules import sequential_to_net
from gradcam_core.nets import registry
from gradcam_core.nets.graph import GraphNet, InputSizeError, InputSpec, Node
from gradcam_core.nets.modules import CaffePool2d, View

MODELS = DATA / "models"
VGG = (MODELS / "mini_vgg16_v1.prototxt", MODELS / "mini_vgg16_v1.caffemodel")
CAPTION_MODEL = DATA / "neuraltalk2" / "mini_caption_model.t7"


# --------------------------------------------------------------------------------------------------
# The registry


def test_one_registry_holds_both_formats_builders():
    caffe, torch7 = registry.types("caffe"), registry.types("torch7")
    assert {"Convolution", "Pooling", "InnerProduct", "ReLU", "Input", "Split"} <= set(caffe)
    assert {"nn.SpatialConvolution", "cudnn.SpatialConvolution", "nn.Linear", "nn.View"} <= set(torch7)
    # a family's builders of both formats live in one file
    conv = registry.lookup("caffe", "Convolution", "-")
    assert conv.__module__ == registry.lookup("torch7", "nn.SpatialConvolutionMM", "-").__module__
    assert conv.__module__ == "gradcam_core.nets.layers.conv"


def test_unknown_types_name_the_layer_and_the_formats_supported_types():
    with pytest.raises(GradCamError) as err:
        registry.lookup("caffe", "ArgMax", "layer 'fc' has type 'ArgMax'")
    message = str(err.value)
    assert message.startswith("layer 'fc' has type 'ArgMax', which is not supported (supported: ")
    assert "Convolution" in message and "Concat" in message and "nn.Linear" not in message
    with pytest.raises(GradCamError, match=r"module 3 is a nn\.Foo, which is not supported \(supported: .*nn\.Linear"):
        registry.lookup("torch7", "nn.Foo", "module 3 is a nn.Foo")


def test_a_type_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("caffe", "Convolution")(lambda layer, shapes: registry.Plan([]))


def test_builder_errors_carry_the_layers_location_in_both_formats(tmp_path):
    import caffe_writer as write

    from gradcam_core.formats.torch7.modules import convert_module
    from gradcam_core.formats.torch7.reader import T7Object, T7Table

    proto = tmp_path / "net.prototxt"
    proto.write_text('input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
                     'layer { name: "drop" type: "Dropout" bottom: "data" top: "data" dropout_param { dropout_ratio: 2 } }')
    model = write.write_caffemodel(tmp_path / "net.caffemodel", [])
    with pytest.raises(GradCamError, match=r"^layer 'drop' \(Dropout\): dropout_ratio must be between 0 and 1, is 2"):
        load_caffe(proto, model)
    with pytest.raises(GradCamError, match=r"^cnn module 2 \(nn.Dropout\): dropout probability p must be between"):
        convert_module(T7Object("nn.Dropout", T7Table({"p": 2.0})), "cnn module 2")


# --------------------------------------------------------------------------------------------------
# GraphNet as a graph


class Add(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class Halves(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, :2].clone(), x[:, 2:].clone()


def diamond() -> tuple[GraphNet, list[nn.Module]]:
    """data -> conv -> (lo, hi) = halves; out = add(lo, relu(hi)); then a 1x1 conv on out."""
    torch.manual_seed(0)
    modules = [nn.Conv2d(3, 4, 3), Halves(), nn.ReLU(), Add(), nn.Conv2d(2, 5, 1)]
    nodes = [Node("conv", "Convolution", ("data",), ("c",)), Node("split2", "Halves", ("c",), ("lo", "hi")),
             Node("relu", "ReLU", ("hi",), ("hi",)), Node("sum", "Add", ("lo", "hi"), ("s",)),
             Node("proj", "Convolution", ("s",), ("out",))]
    return GraphNet(nodes, modules, InputSpec("data", 3, None, None)), modules


def test_nodes_with_several_bottoms_and_tops():
    net, (conv, _, _, _, proj) = diamond()
    x = torch.randn(2, 3, 6, 6)
    c = conv(x)
    with torch.no_grad():
        torch.testing.assert_close(net(x), proj(c[:, :2] + c[:, 2:].relu()))


def test_lookup_by_name_blob_and_number():
    net, modules = diamond()
    assert net.index_of("sum") == net.index_of(4) == net.index_of("4") == 4
    assert net.index_of("hi") == 2 and net.index_of("s") == 4 and net.index_of("out") == 5  # blobs
    assert net.module_at("c") is modules[0]
    with pytest.raises(GradCamError, match=r"unknown layer 'nowhere': give a module number 1\.\.5"):
        net.index_of("nowhere")


def test_blobs_are_released_after_their_last_reader():
    """The conv's output is dead once its last reader (split2) has run; the input stays with the caller."""
    net, modules = diamond()
    seen: dict[str, weakref.ref] = {}
    alive_at_sum: list[bool] = []
    modules[0].register_forward_hook(lambda m, i, o: seen.update(c=weakref.ref(o)))

    def at_sum(module, inputs, output) -> None:
        gc.collect()
        alive_at_sum.append(seen["c"]() is not None)

    modules[3].register_forward_hook(at_sum)
    with torch.no_grad():
        net(torch.randn(1, 3, 6, 6))
    assert alive_at_sum == [False]


def test_resolve_layer_follows_in_place_relus_only_on_the_layers_output():
    net, modules = diamond()
    assert net.resolve_layer("conv") == (modules[0], modules[0])  # relu reads "hi", not conv's "c"
    vgg = load_caffe(*VGG)
    assert vgg.resolve_layer("conv5_3") == (vgg.module_at("conv5_3"), vgg.module_at("relu5_3"))
    assert vgg.resolve_layer("fc7") == (vgg.module_at("fc7"), vgg.module_at("relu7"))


# --------------------------------------------------------------------------------------------------
# The shape plan


def test_check_input_size_refuses_a_wrong_size_at_once_and_accepts_a_right_one():
    net = load_caffe(*VGG)
    started = time.perf_counter()
    with pytest.raises(InputSizeError) as err:
        net.check_input_size(3, 10000, 10000)
    assert time.perf_counter() - started < 0.05
    assert str(err.value) == "fc6 needs 784 inputs, a 10000x10000 image gives 16x313x313"
    assert err.value.reason == "fc6 needs 784 inputs, gets 16x313x313"
    with pytest.raises(InputSizeError, match=r"^conv1_1 needs 3 input channels, a 224x224 image gives 1x224x224$"):
        net.check_input_size(1, 224, 224)
    alexnet = load_caffe(MODELS / "mini_alexnet_v1.prototxt", MODELS / "mini_alexnet_v1.caffemodel")
    with pytest.raises(InputSizeError, match=r"^conv1 needs at least a 11x11 input, a 8x8 image gives 3x8x8$"):
        alexnet.check_input_size(3, 8, 8)
    assert net.check_input_size(3, 224, 224) == (10,)
    net.remove_last()  # the plan follows the modules
    assert net.check_input_size(3, 224, 224) == (10,)


def test_forward_refuses_a_wrong_size_before_running_anything():
    net = load_caffe(*VGG)
    ran = []
    net.module_at(1).register_forward_pre_hook(lambda m, i: ran.append(1))
    with pytest.raises(InputSizeError, match="fc6 needs 784 inputs"):
        net(torch.zeros(1, 3, 300, 300))
    assert ran == []
    with pytest.raises(GradCamError) as err:
        with input_size_errors(300):
            net(torch.zeros(1, 3, 300, 300))
    assert str(err.value) == "-input_sz 300: the network cannot take a 300x300 image (fc6 needs 784 inputs, gets 16x10x10)"


def forward_shape(net: GraphNet, size: int) -> tuple | None:
    """The output shape of a forward without the plan's check; None if torch refuses the input."""
    net.check_input_size = lambda *a: None  # instance attribute: only this object
    try:
        with torch.no_grad():
            return tuple(net(torch.zeros(1, 3, size, size)).shape[1:])
    except RuntimeError:
        return None
    finally:
        del net.check_input_size


def planned_shape(net: GraphNet, size: int) -> tuple | None:
    try:
        return net.check_input_size(3, size, size) or ()
    except InputSizeError:
        return None


@pytest.mark.parametrize("load", [
    lambda: load_caffe(*VGG),
    lambda: load_caffe(MODELS / "mini_alexnet_grouped.prototxt", MODELS / "mini_alexnet_grouped.caffemodel"),
    lambda: sequential_to_net(load_t7(CAPTION_MODEL)["protos"]["cnn"], "protos.cnn"),
], ids=["vgg16", "alexnet_grouped", "torch7_cnn"])
def test_the_plan_accepts_exactly_what_the_forward_takes(load):
    net = load()
    for size in (1, 31, 32, 100, 223, 224, 227, 256):
        assert planned_shape(net, size) == forward_shape(net, size), size
    # and a net whose output is sized by the input (no fully connected layer): every extent checked
    while not isinstance(net.module_at(len(net)), (nn.MaxPool2d, CaffePool2d)):
        net.remove_last()
    for size in range(1, 70, 4):
        assert planned_shape(net, size) == forward_shape(net, size), size


GEOMETRY = dict(n=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 3), p=st.integers(0, 3),
                d=st.integers(1, 2), ceil=st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["conv", "max", "avg", "caffe_max", "caffe_ave"]), **GEOMETRY)
def test_shape_rules_agree_with_the_modules(kind, n, k, s, p, d, ceil):
    """Each rule gives the forward's shape where the forward runs, and refuses only where it fails."""
    if kind == "conv":
        module = nn.Conv2d(2, 3, k, s, p, d)
    elif kind in ("max", "avg"):
        if p > k // 2:
            return
        module = nn.MaxPool2d(k, s, p, ceil_mode=ceil) if kind == "max" else nn.AvgPool2d(k, s, p, ceil_mode=ceil)
    else:
        if p >= k:
            return
        module = CaffePool2d(kind[6:].upper(), (k, k), (s, s), (p, p), ceil)
    try:
        with torch.no_grad():
            expected = [tuple(module(torch.ones(1, 2, n, n + 1)).shape[1:])]
    except RuntimeError:
        expected = None
    try:
        got = registry.output_shapes(module, [(2, n, n + 1)])
    except registry.LayerError:
        got = None
    assert got == expected, (module, n)


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), size=st.lists(st.integers(-1, 8), min_size=1, max_size=3),
       dims=st.one_of(st.none(), st.integers(1, 3)))
@settings(max_examples=300, deadline=None)
def test_view_and_flatten_rules_agree_with_the_modules(shape, size, dims):
    for module in (View(tuple(size), dims), nn.Flatten(1), nn.Flatten(min(len(shape), 2))):
        try:
            expected = [tuple(module(torch.zeros(2, *shape)).shape[1:])]
        except RuntimeError:
            expected = None
        try:
            got = registry.output_shapes(module, [tuple(shape)])
        except registry.LayerError:
            got = None
        if got is not None or expected is None:  # a rule may leave an odd case unknown, never wrong
            assert got == expected, (module, shape)


def test_input_sz_300_on_the_mini_vgg_is_one_line_naming_the_option(tmp_path):
    from conftest import run_script

    out = tmp_path / "out"
    result = run_script("classification.py", "-proto_file", str(VGG[0]), "-model_file", str(VGG[1]),
                        "-input_image_path", str(ROOT / "images" / "cat_dog.jpg"), "-input_sz", "300",
                        "-out_path", f"{out}/")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "classification.py: error: -input_sz 300: the network cannot take a 300x300 image "
        "(fc6 needs 784 inputs, gets 16x10x10)"]
    assert not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------------------------------
# torch7_ties belongs to the model


@pytest.fixture
def torch7_path_calls(monkeypatch) -> list:
    """Records every model explain would run Torch7's convolution path for (and skips the path)."""
    from gradcam_core.engine import core

    calls = []

    def spy(model):
        calls.append(model)
        return contextlib.nullcontext()

    monkeypatch.setattr(core, "torch7_conv_forward", spy)
    return calls


def test_a_plain_torch_model_does_not_get_the_torch7_path_by_default(torch7_path_calls):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    explain(model, x, "3", [1])
    assert torch7_path_calls == []
    explain(model, x, "3", [1], torch7_ties=True)  # still there when asked for
    assert torch7_path_calls == [model]


def test_loaded_nets_and_wrappers_of_them_get_the_torch7_path(torch7_path_calls):
    class Wrapper(nn.Module):  # as the VQA image net wraps its GraphNet
        def __init__(self, net: GraphNet) -> None:
            super().__init__()
            self.cnn = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.cnn(x)

        def resolve_layer(self, layer):
            return self.cnn.resolve_layer(layer)

    net = load_caffe(*VGG)
    cnn = sequential_to_net(load_t7(CAPTION_MODEL)["protos"]["cnn"], "protos.cnn")
    wrapped = Wrapper(net)
    x = torch.randn(1, 3, 224, 224)
    for model in (net, cnn, wrapped):
        explain(model, x, 3, [1])
    assert torch7_path_calls == [net, cnn, wrapped]
    explain(net, x, 3, [1], torch7_ties=False)
    wrapped.torch7_ties = False  # the wrapper's own attribute wins
    explain(wrapped, x, 3, [1])
    assert len(torch7_path_calls) == 3
    hand_made = GraphNet.from_modules([("conv", "Convolution", nn.Conv2d(3, 2, 3))], InputSpec("data", 3, None, None))
    explain(hand_made, x, 1, [0])
    assert len(torch7_path_calls) == 3 and not hand_made.torch7_ties
