"""ONNX in (gradcam_core.formats.onnx.load_onnx) and ONNX out (gradcam_core.convert).

ONNX in is checked against the torch model the file was exported from: Grad-CAM's raw maps and guided
backprop through the converted graph equal those of the torch model itself. ONNX out is checked
against onnxruntime running the written file, and against our Caffe net."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2torch")

from onnx import TensorProto, helper  # noqa: E402

from gradcam_core import explain  # noqa: E402
from gradcam_core.errors import GradCamError  # noqa: E402
from gradcam_core.formats.onnx import OnnxNet, load_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| relative to max |expected|."""
    scale = max(float(expected.abs().max()), 1e-30)
    return float((actual.double() - expected.double()).abs().max()) / scale


def export(model: nn.Module, path: Path, shape=(1, 3, 32, 32), **options) -> Path:
    """``model`` written with torch's legacy (TorchScript) exporter, input "input", a dynamic batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), torch.randn(*shape), str(path), dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
                          **options)
    return path


def node_named(path: Path, op_type: str, index: int = -1) -> tuple[str, str]:
    """(node name, output tensor name) of the index-th node of ``op_type`` in the file."""
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == op_type]
    return nodes[index].name, nodes[index].output[0]


class SmallCNN(nn.Module):
    """Conv/ReLU/pool/pad/BatchNorm/residual add/linear: the ops of common classifiers."""

    def __init__(self, classes: int = 5, softmax: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, classes)
        self.softmax = softmax
        with torch.no_grad():  # BatchNorm with non-trivial statistics
            self.bn1.running_mean.uniform_(-0.5, 0.5)
            self.bn1.running_var.uniform_(0.5, 2.0)
            self.bn1.weight.uniform_(0.5, 1.5)
            self.bn1.bias.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.relu(self.bn1(self.conv1(x))), 2)
        x = self.relu(self.conv2(F.pad(x, (1, 1, 1, 1))))
        x = self.relu(self.conv3(x) + x)
        x = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return torch.softmax(x, dim=1) if self.softmax else x


def compare_explanations(torch_model: nn.Module, torch_layer: str, net: OnnxNet, onnx_layer: str,
                         x: torch.Tensor, targets=(0, 3), rel: float = 1e-5, guided_alike: bool = True) -> None:
    """``guided_alike=False`` where the two differ by design: an activation the torch model has as a
    module (GELU: the guided rule applies) arrives in ONNX as elementary operators (plain backprop)."""
    expected = explain(torch_model, x, torch_layer, list(targets), torch7_ties=False)
    got = explain(net, x, onnx_layer, list(targets), torch7_ties=False)
    assert got.cam_raw.shape == expected.cam_raw.shape
    assert float(expected.cam_raw.abs().max()) > 0 and float(expected.guided.abs().max()) > 0
    assert rel_err(got.cam_raw, expected.cam_raw) <= rel, "cam_raw"
    if guided_alike:
        assert rel_err(got.guided, expected.guided) <= rel, "guided"
    assert rel_err(got.scores, expected.scores) <= rel, "scores"


# --------------------------------------------------------------------------------------------------
# ONNX in: equal to the torch model


@pytest.mark.parametrize("opset", [None, 13])
def test_small_cnn_explains_as_the_torch_model(tmp_path, opset):
    """At a layer named by node name and by tensor name; the default opset (newer than onnx2torch
    knows: its Pad needs the downgrade) and opset 13."""
    torch.manual_seed(0)
    model = SmallCNN().eval()
    path = export(model, tmp_path / "cnn.onnx", **({} if opset is None else {"opset_version": opset}))
    net = load_onnx(path)
    assert isinstance(net, OnnxNet) and not net.training and net.input_shape == (3, 32, 32)
    assert net.batch_size is None  # exported with a dynamic batch axis
    relus = [m for m in net.modules() if type(m) is nn.ReLU]
    assert len(relus) == 3  # Relu nodes become nn.ReLU modules: guided backprop sees them
    node, tensor = node_named(path, "Relu")  # the ReLU after the residual add
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    class Last(nn.Module):  # the torch model with its last ReLU addressable as a module
        def __init__(self) -> None:
            super().__init__()
            self.model, self.last = model, nn.ReLU()

        def forward(self, x):
            m = self.model
            x = F.max_pool2d(m.relu(m.bn1(m.conv1(x))), 2)
            x = m.relu(m.conv2(F.pad(x, (1, 1, 1, 1))))
            x = self.last(m.conv3(x) + x)
            return m.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    reference = Last().eval()
    compare_explanations(reference, "last", net, node, x)
    compare_explanations(reference, "last", net, tensor, x)
    assert net.resolve_layer(node) == net.resolve_layer(tensor)


@pytest.mark.slow  # ResNet-18 exported and explained three times; the small CNN above has BatchNorm
def test_resnet18_explains_as_the_torch_model(tmp_path):
    """torchvision's ResNet-18 (random weights, 64 x 64): torch's exporter folds the BatchNorms into
    the convolutions and feeds shared weights through Identity nodes (folded here)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    path = export(model, tmp_path / "resnet18.onnx", shape=(1, 3, 64, 64))
    assert "Identity" in {n.op_type for n in onnx.load(str(path)).graph.node}
    net = load_onnx(path)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    node = "/layer4/layer4.1/relu_1/Relu"  # the output of torch's layer4
    tensor = onnx_output(path, node)
    compare_explanations(model, "layer4", net, node, x, targets=(2, 7))
    compare_explanations(model, "layer4", net, tensor, x, targets=(2, 7))
    # an inner layer too: layer3's first block, whose ReLU torch applies twice (one module)
    compare_explanations(model, "layer3.1", net, "/layer3/layer3.1/relu_1/Relu", x, targets=(2,))


@pytest.mark.slow  # the quick run has the same comparison through the CLI (test_cli_formats.py)
def test_real_squeezenet_onnx_explains_as_torchvision(tmp_path):
    """The bundled ImageNet SqueezeNet 1.1 (torchvision form) exported to ONNX: the same Grad-CAM and
    guided backprop as torchvision's model at its last fire module, and a map that depends on the class."""
    torchvision = pytest.importorskip("torchvision")
    weights = ROOT / "models" / "squeezenet1_1" / "squeezenet1_1.pth"
    if not weights.exists():
        pytest.skip(f"the bundled SqueezeNet is not in {weights.parent}")
    model = torchvision.models.squeezenet1_1()
    model.load_state_dict(torch.load(weights, weights_only=True))
    path = export(model.eval(), tmp_path / "squeezenet.onnx", shape=(1, 3, 224, 224))
    net = load_onnx(path)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    compare_explanations(model, "features.12", net, "/features/features.12/Concat", x, targets=(242, 281))
    maps = explain(net, x, "/features/features.12/Concat", [242, 281], guided=False).cam_raw
    assert rel_err(maps[:, 0], maps[:, 1]) > 0.05  # boxer and tiger cat: different maps


def onnx_output(path: Path, node_name: str) -> str:
    return next(n.output[0] for n in onnx.load(str(path)).graph.node if n.name == node_name)


def test_activation_modules_and_guided_backprop(tmp_path):
    """ReLU6 (Clip 0..6), Sigmoid, Hardswish and a Clip(0, inf) ReLU: the modules onnx2torch makes,
    and guided backprop (whose rule applies to nn.ReLU modules) equal to the torch model's."""

    class Acts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2, self.c3, self.c4 = (nn.Conv2d(3 if i == 0 else 6, 6, 3, padding=1) for i in range(4))
            self.relu6, self.sig, self.hswish, self.relu = nn.ReLU6(), nn.Sigmoid(), nn.Hardswish(), nn.ReLU()
            self.fc = nn.Linear(6, 4)

        def forward(self, x):
            x = self.relu6(self.c1(x))
            x = self.c2(x) * self.sig(self.c2(x))
            x = self.hswish(self.c3(x))
            x = self.relu(self.c4(x))
            return self.fc(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = Acts().eval()
    path = export(model, tmp_path / "acts.onnx", shape=(1, 3, 16, 16), opset_version=17)
    net = load_onnx(path)
    kinds = {type(m) for m in net.net.children()}
    assert {nn.ReLU6, nn.Sigmoid, nn.Hardswish, nn.ReLU} <= kinds
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    compare_explanations(model, "relu", net, node_named(path, "Relu")[0], x, targets=(0, 1, 2, 3))


def test_strip_softmax_explains_the_logits(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(softmax=True).eval()
    path = export(model, tmp_path / "soft.onnx")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with_softmax, stripped = load_onnx(path), load_onnx(path, strip_softmax=True)
    model.softmax = False
    with torch.no_grad():
        logits = model(x)
        assert rel_err(with_softmax(x), torch.softmax(logits, 1)) <= 1e-5
        assert rel_err(stripped(x), logits) <= 1e-5
    assert "Softmax" not in {type(m).__name__ for m in stripped.modules()}
    assert stripped.output_name != with_softmax.output_name == "output"
    node = node_named(path, "Relu")[0]
    expected = explain(model, x, "relu", [1], guided=False)  # the last call of the shared ReLU
    got = explain(stripped, x, node, [1], guided=False)
    assert rel_err(got.target_scores, expected.target_scores) <= 1e-5
    # without stripping, Grad-CAM follows the probability instead: a different map
    assert rel_err(explain(with_softmax, x, node, [1], guided=False).cam_raw, got.cam_raw) > 1e-3


def test_constant_weights_are_folded(tmp_path):
    """A Conv whose weight comes from a Constant node through a Cast (as some exporters write it):
    onnx2torch reads weights from initializers only; folding makes them initializers."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float64)
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w64"], name="weights", value=onnx.numpy_helper.from_array(w)),
        helper.make_node("Cast", ["w64"], ["w"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["out"], name="gap"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, 1, 1])],
        [onnx.numpy_helper.from_array(b, "b")])
    path = tmp_path / "const.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    net = load_onnx(path)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = F.conv2d(x, torch.from_numpy(w.astype(np.float32)), torch.from_numpy(b), padding=1).relu()
    with torch.no_grad():
        assert rel_err(net(x), expected.mean(dim=(2, 3), keepdim=True)) <= 1e-6
    assert net.layer_names == ["conv", "relu", "gap"]  # the constants are gone, the layers keep their names
    assert net.resolve_layer("r")[0] is net.resolve_layer("relu")[0]


def test_opset_20_nodes_the_version_converter_cannot_take_back(tmp_path):
    """Pad-19 and ConstantOfShape-20 (computed from the input's shape, so not folded) have no adapter
    to opset 17 in onnx's version converter; used as at opset 17, they are kept as they are."""
    pads = onnx.numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 3, 0], np.int64), "pads")
    path = model_file(tmp_path, [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("ConstantOfShape", ["shape"], ["twos"], name="twos",
                         value=onnx.numpy_helper.from_array(np.array([2.0], np.float32))),
        helper.make_node("Mul", ["x", "twos"], ["doubled"], name="double"),
        helper.make_node("Pad", ["doubled", "pads"], ["y"], name="pad", mode="reflect"),
    ], [image_info("x", ("N", 3, 4, 4))], [image_info("y", ("N", 3, 8, 6))], [pads], opset=20)
    net = load_onnx(path)
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(net(x), F.pad(2 * x, (2, 0, 1, 3), mode="reflect"))


def test_names_torch_cannot_use_as_module_names(tmp_path):
    """Node names with dots, empty names, repeated names, names that collide once dots become
    slashes, and names of torch module attributes ("forward", "training") all stay addressable."""
    names = ["a.b", "a/b", "a/b_1", "", "", "forward", "training", "a.b"]
    nodes, prev = [], "x"
    for i, name in enumerate(names):
        nodes.append(helper.make_node("Neg", [prev], [f"t{i}"], name=name))
        prev = f"t{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 2, 3, 3])])
    path = tmp_path / "names.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    net = load_onnx(path)
    x = torch.randn(1, 2, 3, 3)
    with torch.no_grad():
        assert torch.equal(net(x), x)  # eight Negs
    modules = {net.resolve_layer(f"t{i}")[0] for i in range(len(names))}
    assert len(modules) == len(names)  # one module per node, none overwritten by a name clash
    for name in ("a.b", "a/b", "a/b_1", "forward", "training"):
        assert net.resolve_layer(name)[0] in modules
    assert len(net.layer_names) == len(names) == len(set(net.layer_names))


# --------------------------------------------------------------------------------------------------
# ONNX in: bad input, one line each


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def test_unknown_layer_lists_the_node_and_tensor_names(tmp_path):
    torch.manual_seed(0)
    path = export(SmallCNN(), tmp_path / "cnn.onnx")
    net = load_onnx(path)
    with pytest.raises(GradCamError) as err:
        explain(net, torch.randn(1, 3, 32, 32), "conv9", [0])
    message = one_line(err)
    assert "'conv9'" in message and "cnn.onnx" in message
    for name in net.layer_names:
        assert name in message
    node, tensor = node_named(path, "Relu")
    assert node in message and tensor in message
    with pytest.raises(GradCamError, match="is the input"):
        net.resolve_layer("input")


def test_unknown_layer_list_is_capped(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    path = export(torchvision.models.resnet18(num_classes=3), tmp_path / "r.onnx", shape=(1, 3, 32, 32))
    net = load_onnx(path)
    with pytest.raises(GradCamError) as err:
        net.resolve_layer("nope")
    message = one_line(err)
    assert "/layer4/layer4.1/relu_1/Relu" in message and "/conv1/Conv" in message  # the last and first
    assert "/layer2/layer2.1/conv1/Conv," not in message and "more) ..." in message
    assert len(message) < 3000


def model_file(tmp_path: Path, nodes, inputs, outputs, initializers=(), opset: int = 13, name="m.onnx") -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def image_info(name: str, shape=(1, 3, 4, 4)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def test_unsupported_operator_names_the_op_and_the_node(tmp_path):
    """Hardmax and Det have no onnx2torch converter."""
    path = model_file(tmp_path, [
        helper.make_node("Relu", ["x"], ["r"], name="first_relu"),
        helper.make_node("Hardmax", ["r"], ["h"], name="my_hardmax", axis=1),
        helper.make_node("Det", ["h"], ["y"], name="my_det"),
    ], [image_info("x")], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    with pytest.raises(GradCamError) as err:
        load_onnx(path)
    message = one_line(err)
    assert "Hardmax" in message and "'my_hardmax'" in message and "m.onnx" in message
    assert "1 more" in message


def test_an_operator_newer_than_onnx2torch_names_the_op_and_the_node(tmp_path):
    """Mish exists from opset 18; onnx2torch knows it at no opset and it has no older form."""
    path = model_file(tmp_path, [helper.make_node("Relu", ["x"], ["r"], name="relu"),
                                 helper.make_node("Mish", ["r"], ["y"], name="my_mish")],
                      [image_info("x")], [image_info("y")], opset=18)
    with pytest.raises(GradCamError) as err:
        load_onnx(path)
    message = one_line(err)
    assert "Mish" in message and "'my_mish'" in message and "opset 17" in message


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_of_opset_20_is_written_out(tmp_path, approximate):
    """torch exports nn.GELU as one Gelu node at opset 20 (no onnx2torch converter): written out in
    the operators of its older export, it computes and explains as torch's GELU."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
            self.gelu, self.relu, self.fc = nn.GELU(approximate=approximate), nn.ReLU(), nn.Linear(6, 4)

        def forward(self, x):
            return self.fc(self.relu(self.conv2(self.gelu(self.conv1(x)))).mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = Net().eval()
    path = export(model, tmp_path / "gelu.onnx", shape=(1, 3, 12, 12), opset_version=20)
    gelu = node_named(path, "Gelu")[0]
    net = load_onnx(path)
    assert gelu in net.layer_names
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    compare_explanations(model, "gelu", net, gelu, x, targets=(0, 1, 2, 3), rel=1e-5, guided_alike=False)
    compare_explanations(model, "relu", net, node_named(path, "Relu")[0], x, targets=(0, 1, 2, 3), rel=1e-5,
                         guided_alike=False)
    plain = explain(model, x, "relu", [0], torch7_ties=False, guided=True)  # the GELU's guided rule
    written_out = explain(net, x, node_named(path, "Relu")[0], [0], torch7_ties=False, guided=True)
    assert rel_err(written_out.guided, plain.guided) > 1e-3  # differ: docs/models.md (guided backprop) says why


def test_operator_a_converter_refuses_names_the_op_and_the_node(tmp_path):
    """A Clip whose bound is computed at run time: onnx2torch's Clip converter refuses it."""
    path = model_file(tmp_path, [
        helper.make_node("ReduceMax", ["x"], ["m"], name="peak", keepdims=0),
        helper.make_node("Clip", ["x", "", "m"], ["y"], name="dynamic_clip"),
    ], [image_info("x")], [image_info("y")])
    with pytest.raises(GradCamError) as err:
        load_onnx(path)
    message = one_line(err)
    assert "Clip" in message and "'dynamic_clip'" in message


def test_several_inputs_are_refused(tmp_path):
    path = model_file(tmp_path, [helper.make_node("Add", ["a", "b"], ["y"], name="add")],
                      [image_info("a"), image_info("b")], [image_info("y")])
    with pytest.raises(GradCamError) as err:
        load_onnx(path)
    message = one_line(err)
    assert "2 inputs" in message and "'a'" in message and "'b'" in message


def test_several_outputs_are_refused(tmp_path):
    path = model_file(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="r"),
                                 helper.make_node("Neg", ["x"], ["z"], name="n")],
                      [image_info("x")], [image_info("y"), image_info("z")])
    with pytest.raises(GradCamError, match="2 outputs"):
        load_onnx(path)


@pytest.mark.parametrize("content", [b"name: \"not onnx\"\nlayer { type: \"Convolution\" }\n", b"\x00" * 100,
                                     b"", os.urandom(2000)])
def test_a_file_that_is_not_onnx(tmp_path, content):
    path = tmp_path / "net.onnx"
    path.write_bytes(content)
    with pytest.raises(GradCamError) as err:
        load_onnx(path)
    message = one_line(err)
    assert "net.onnx" in message and "ONNX" in message


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_a_truncated_onnx_file(tmp_path, keep):
    full = export(SmallCNN(), tmp_path / "full.onnx")
    data = full.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(GradCamError) as err:
        load_onnx(path)
    assert "cut.onnx" in one_line(err)


def test_missing_files_directories_and_pipes(tmp_path):
    for path, what in ((tmp_path / "absent.onnx", "No such file"), (tmp_path, "directory")):
        with pytest.raises(GradCamError) as err:
            load_onnx(path)
        assert what in one_line(err) and str(path) in str(err.value)
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    with pytest.raises(GradCamError, match="not a regular file"):
        load_onnx(fifo)  # refused at once, not blocked waiting for a writer


def test_external_data_is_read_and_confined_to_the_folder(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    inline = export(model, tmp_path / "inline.onnx")
    proto = onnx.load(str(inline))
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save(proto, str(folder / "net.onnx"), save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_onnx(folder / "net.onnx")(x), load_onnx(inline)(x))
    (folder / "weights.bin").unlink()
    os.mkfifo(folder / "weights.bin")
    with pytest.raises(GradCamError, match="weights.bin.*not a regular file"):
        load_onnx(folder / "net.onnx")
    # a location outside the model's folder is refused before anything is opened
    tensor = proto.graph.initializer[0]
    del tensor.external_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../outside.bin"
    tensor.ClearField("raw_data")
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)
    onnx.save(proto, str(folder / "escape.onnx"))
    with pytest.raises(GradCamError) as err:
        load_onnx(folder / "escape.onnx")
    assert "outside" in one_line(err)


def test_a_fixed_batch_size_is_reported(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SmallCNN().eval(), torch.randn(1, 3, 32, 32), str(path), dynamo=False)
    net = load_onnx(path)
    assert net.batch_size == 1 and net.input_shape == (3, 32, 32)


def test_dtype_and_device(tmp_path):
    net = load_onnx(export(SmallCNN(), tmp_path / "cnn.onnx"), "cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in net.parameters())
    out = explain(net, torch.randn(1, 3, 32, 32), node_named(tmp_path / "cnn.onnx", "Relu")[0], [0],
                  torch7_ties=False)
    assert out.cam_raw.dtype == torch.float64


# --------------------------------------------------------------------------------------------------
# ONNX out: gradcam_core.convert


MODELS = DATA / "models"
PROTOTXTS = DATA / "prototxts"
SQUEEZENET = ROOT / "models" / "squeezenet1_1"


def caffe_input(net, batch: int = 2, seed: int = 0) -> torch.Tensor:
    spec = net.input_spec
    return 50 * torch.randn(batch, spec.channels, spec.height, spec.width, generator=torch.Generator().manual_seed(seed))


def onnxruntime_output(path: Path, x: torch.Tensor) -> torch.Tensor:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["data"]
    return torch.from_numpy(session.run(None, {"data": x.numpy()})[0])


def without_softmax(path: Path) -> Path:
    """A copy of the ONNX file whose output is the final Softmax's input (the logits)."""
    model = onnx.load(str(path))
    last = model.graph.node[-1]
    assert last.op_type == "Softmax" and last.output[0] == model.graph.output[0].name
    model.graph.node.remove(last)
    model.graph.output[0].name = last.input[0]
    out = path.with_name(path.stem + "_logits.onnx")
    onnx.save(model, str(out))
    return out


def check_conversion(proto: Path, weights: Path, out: Path, layer: str, *, targets=(1, 3), **options) -> None:
    """onnxruntime on the written file == our Caffe net (probabilities and logits); load_onnx of it
    gives the same logits and explains as the Caffe net (on the logits, as the classifier does)."""
    from gradcam_core.caffe import load_caffe
    from gradcam_core.convert import caffe_to_onnx

    net = load_caffe(proto, weights)
    assert caffe_to_onnx(proto, weights, out, **options) == out
    x = caffe_input(net)
    with torch.no_grad():
        probabilities = net(x)
    assert rel_err(onnxruntime_output(out, x), probabilities) <= 1e-5
    model = onnx.load(str(out))
    assert model.graph.output[0].name == net.names[-1]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a dynamic batch axis
    assert isinstance(net.remove_last(), nn.Softmax)
    with torch.no_grad():
        logits = net(x)
    assert rel_err(onnxruntime_output(without_softmax(out), x), logits) <= 1e-5
    back = load_onnx(out, strip_softmax=True)
    assert layer in back.layer_names and layer in back.tensors  # the Caffe layer names, both kinds
    with torch.no_grad():
        assert rel_err(back(x), logits) <= 1e-5
    want = explain(net, x, layer, list(targets), torch7_ties=False)
    got = explain(back, x, layer, list(targets), torch7_ties=False)
    assert float(want.cam_raw.abs().max()) > 0 and float(want.guided.abs().max()) > 0
    assert rel_err(got.cam_raw, want.cam_raw) <= 1e-5 and rel_err(got.guided, want.guided) <= 1e-5


@pytest.mark.slow  # the quick run converts the pooling net below through the same checks
@pytest.mark.parametrize("name, layer", [("mini_vgg16_v1", "relu5_3"), ("mini_vgg16_v2", "relu5_3"),
                                         ("mini_alexnet_grouped", "relu5")])
def test_fixture_nets_convert_exactly(tmp_path, name, layer):
    check_conversion(MODELS / f"{name}.prototxt", MODELS / f"{name}.caffemodel", tmp_path / f"{name}.onnx", layer)


def test_alexnet_lrn_is_one_onnx_node(tmp_path):
    from gradcam_core.convert import caffe_to_onnx

    out = caffe_to_onnx(MODELS / "mini_alexnet_grouped.prototxt", MODELS / "mini_alexnet_grouped.caffemodel",
                        tmp_path / "a.onnx")
    nodes = {n.name: n.op_type for n in onnx.load(str(out)).graph.node}
    assert nodes["norm1"] == nodes["norm2"] == "LRN" and "If" not in nodes.values()
    assert nodes["conv2"] == "Conv" and nodes["prob"] == "Softmax"


# The blob shapes of the BVLC AlexNet and CaffeNet deploy files (227 x 227 input, groups of 2).
_BVLC_BLOBS = {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
               "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216),
               "fc7": (4096, 4096), "fc8": (1000, 4096)}


def random_caffemodel(path: Path, blobs: dict[str, tuple[int, ...]], seed: int = 0) -> Path:
    """A caffemodel with He-normal weights of the given shapes and small random biases."""
    import caffe_writer as write

    rng = np.random.default_rng(seed)
    layers = []
    for name, shape in blobs.items():
        weight = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
        layers.append({"name": name, "type": "Convolution" if len(shape) == 4 else "InnerProduct",
                       "blobs": [weight, rng.uniform(-0.1, 0.1, shape[0]).astype(np.float32)]})
    return write.write_caffemodel(path, layers)


@pytest.mark.slow
@pytest.mark.parametrize("prototxt", ["bvlc_alexnet_deploy.prototxt", "bvlc_reference_caffenet_deploy.prototxt"])
def test_shared_topologies_convert_exactly(tmp_path, prototxt):
    weights = random_caffemodel(tmp_path / "random.caffemodel", _BVLC_BLOBS)
    check_conversion(PROTOTXTS / prototxt, weights, tmp_path / "net.onnx", "relu5", targets=(3, 281))


def test_pooling_padding_ceil_and_average_divisor_convert_exactly(tmp_path):
    """CaffePool2d's explicit padding (-inf for MAX), ceil overhang, AVE divisor and global pooling:
    the export path gives onnxruntime the same values."""
    import caffe_writer as write

    rng = np.random.default_rng(0)

    def conv(name: str, bottom: str, cin: int, cout: int, k: int, pad: int = 0) -> dict:
        w = rng.standard_normal((cout, cin, k, k)).astype(np.float32) / np.float32(k * np.sqrt(cin))
        return {"name": name, "type": "Convolution", "bottom": [bottom], "top": [name],
                "convolution_param": {"num_output": cout, "kernel_size": k, "pad": pad},
                "blobs": [w, rng.uniform(-0.1, 0.1, cout).astype(np.float32)]}

    def layer(name: str, type_: str, bottom: str, top: str | None = None, **params) -> dict:
        return {"name": name, "type": type_, "bottom": [bottom], "top": [top or name], **params}

    layers = [
        conv("conv1", "data", 3, 6, 3, pad=1), layer("relu1", "ReLU", "conv1", "conv1"),
        layer("pool1", "Pooling", "conv1", pooling_param={"pool": "MAX", "kernel_size": 3, "stride": 2, "pad": 1}),
        conv("conv2", "pool1", 6, 6, 3), layer("relu2", "ReLU", "conv2", "conv2"),
        layer("pool2", "Pooling", "conv2", pooling_param={"pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 2}),
        layer("norm2", "LRN", "pool2", lrn_param={"local_size": 3, "alpha": 0.5, "beta": 0.75,
                                                  "norm_region": "WITHIN_CHANNEL"}),
        conv("conv3", "norm2", 6, 8, 1), layer("relu3", "ReLU", "conv3", "conv3"),
        layer("pool3", "Pooling", "conv3", pooling_param={"pool": "AVE", "global_pooling": True}),
        {"name": "fc", "type": "InnerProduct", "bottom": ["pool3"], "top": ["fc"],
         "inner_product_param": {"num_output": 5},
         "blobs": [rng.standard_normal((5, 8)).astype(np.float32), np.zeros(5, np.float32)]},
        layer("prob", "Softmax", "fc"),
    ]
    proto = write.write_prototxt(tmp_path / "pools.prototxt", layers, input_shape=(1, 3, 23, 18))
    weights = write.write_caffemodel(tmp_path / "pools.caffemodel", layers)
    check_conversion(proto, weights, tmp_path / "pools.onnx", "relu3", targets=(0, 2, 4))


@pytest.mark.slow  # the quick run converts the pooling net above through the same checks
def test_real_squeezenet_converts_exactly(tmp_path):
    proto, weights = SQUEEZENET / "deploy.prototxt", SQUEEZENET / "squeezenet1_1.caffemodel"
    if not proto.exists() or not weights.exists():
        pytest.skip(f"the bundled SqueezeNet is not in {SQUEEZENET}")
    from gradcam_core.caffe import load_caffe

    try:
        load_caffe(proto, weights)
    except GradCamError as err:
        pytest.skip(f"the Caffe loader cannot build SqueezeNet yet: {err}")
    check_conversion(proto, weights, tmp_path / "squeezenet.onnx", "fire9/concat", targets=(242, 281))


def metadata(path: Path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def declared(path: Path) -> list:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def test_input_size_option_and_default(tmp_path):
    """A net that takes any size is written with dynamic H, W (explained at 224x224 or --input-size);
    one with an InnerProduct at the prototxt's size (else 224x224, or --input-size)."""
    import caffe_writer as write

    from gradcam_core.convert import caffe_to_onnx

    conv = ('layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
            'convolution_param { num_output: 2 kernel_size: 3 } }\n')
    fc = 'layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 4 } }\n'
    conv_blob = {"name": "conv", "type": "Convolution", "blobs": [np.ones((2, 3, 3, 3), np.float32), np.zeros(2, np.float32)]}
    shape = 'input: "data" input_shape { dim: 1 dim: 3 dim: 20 dim: 16 }\n'
    proto, weights = tmp_path / "conv.prototxt", write.write_caffemodel(tmp_path / "conv.caffemodel", [conv_blob])
    proto.write_text(shape + conv)
    a = caffe_to_onnx(proto, weights, tmp_path / "a.onnx")
    assert declared(a) == ["N", 3, "H", "W"] and metadata(a)["gradcam_core.input_size"] == "224x224"
    b = caffe_to_onnx(proto, weights, tmp_path / "b.onnx", input_size=(40, 30))
    assert declared(b) == ["N", 3, "H", "W"] and metadata(b)["gradcam_core.input_size"] == "40x30"

    fc_blob = {"name": "fc", "type": "InnerProduct", "blobs": [np.ones((4, 2 * 18 * 14), np.float32), np.zeros(4, np.float32)]}
    proto.write_text(shape + conv + fc)
    weights = write.write_caffemodel(tmp_path / "fc.caffemodel", [conv_blob, fc_blob])
    c = caffe_to_onnx(proto, weights, tmp_path / "c.onnx")
    assert declared(c) == ["N", 3, 20, 16] and metadata(c)["gradcam_core.input_size"] == "20x16"
    proto.write_text('input: "data"\n' + conv + fc)  # no declared shape
    fc_blob["blobs"][0] = np.ones((4, 2 * 222 * 222), np.float32)
    weights = write.write_caffemodel(tmp_path / "fc224.caffemodel", [conv_blob, fc_blob])
    d = caffe_to_onnx(proto, weights, tmp_path / "d.onnx")
    assert declared(d) == ["N", 3, 224, 224] and metadata(d)["gradcam_core.input_size"] == "224x224"


def test_a_size_generic_export_runs_at_other_sizes_as_caffe(tmp_path):
    """Ceil-mode MAX and AVE pooling with padding and a global pooling: the file written once gives
    the Caffe net's output at sizes it was not traced at (onnxruntime and load_onnx)."""
    import caffe_writer as write

    from gradcam_core.caffe import load_caffe
    from gradcam_core.convert import caffe_to_onnx

    rng = np.random.default_rng(1)

    def conv(name, bottom, cin, cout):
        return {"name": name, "type": "Convolution", "bottom": [bottom], "top": [name],
                "convolution_param": {"num_output": cout, "kernel_size": 3, "pad": 1},
                "blobs": [rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) / 3, np.zeros(cout, np.float32)]}

    layers = [conv("conv1", "data", 3, 4),
              {"name": "pool1", "type": "Pooling", "bottom": ["conv1"], "top": ["pool1"],
               "pooling_param": {"pool": "MAX", "kernel_size": 3, "stride": 2, "pad": 1}},
              conv("conv2", "pool1", 4, 4),
              {"name": "pool2", "type": "Pooling", "bottom": ["conv2"], "top": ["pool2"],
               "pooling_param": {"pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1}},
              {"name": "pool3", "type": "Pooling", "bottom": ["pool2"], "top": ["pool3"],
               "pooling_param": {"pool": "AVE", "global_pooling": True}}]
    proto = write.write_prototxt(tmp_path / "p.prototxt", layers, input_shape=(1, 3, 23, 18))
    weights = write.write_caffemodel(tmp_path / "p.caffemodel", layers)
    out = caffe_to_onnx(proto, weights, tmp_path / "p.onnx")
    assert declared(out) == ["N", 3, "H", "W"]
    ops = {n.name: n.op_type for n in onnx.load(str(out)).graph.node}
    assert ops["pool1"] == "MaxPool" and ops["pool2"] == "AveragePool" and ops["pool3"] == "GlobalAveragePool"
    net, back = load_caffe(proto, weights), load_onnx(out)
    for height, width in [(23, 18), (30, 41), (17, 17)]:
        x = 50 * torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.no_grad():
            want = net(x)
            assert rel_err(back(x), want) <= 1e-5
        assert rel_err(onnxruntime_output(out, x), want) <= 1e-5


def test_a_pooling_onnx_cannot_express_keeps_the_size_fixed(tmp_path):
    """A pad over half the kernel (Caffe allows it, ONNX pooling does not): written at the traced size."""
    import caffe_writer as write

    from gradcam_core.convert import caffe_to_onnx

    layers = [{"name": "conv", "type": "Convolution", "bottom": ["data"], "top": ["conv"],
               "convolution_param": {"num_output": 2, "kernel_size": 1},
               "blobs": [np.ones((2, 3, 1, 1), np.float32), np.zeros(2, np.float32)]},
              {"name": "pool", "type": "Pooling", "bottom": ["conv"], "top": ["pool"],
               "pooling_param": {"pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 2}}]
    proto = write.write_prototxt(tmp_path / "p.prototxt", layers, input_shape=(1, 3, 21, 19))
    weights = write.write_caffemodel(tmp_path / "p.caffemodel", layers)
    out = caffe_to_onnx(proto, weights, tmp_path / "p.onnx")
    assert declared(out) == ["N", 3, 21, 19] and metadata(out)["gradcam_core.input_size"] == "21x19"


def test_metadata_preprocessing_and_class_names(tmp_path, capsys):
    """The default metadata is Caffe's preprocessing and the synset_words.txt beside the weights;
    --mean-value, --input-scale, --channel-order, --synset-file and --input-size change it."""
    import json

    from gradcam_core.convert import main

    def run(*args: str) -> subprocess.CompletedProcess:
        code = main([str(proto), str(weights), *args])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    src = MODELS / "mini_vgg16_v1"
    proto, weights = tmp_path / "n.prototxt", tmp_path / "n.caffemodel"
    proto.write_bytes(src.with_suffix(".prototxt").read_bytes())
    weights.write_bytes(src.with_suffix(".caffemodel").read_bytes())
    names = "".join(f"n{k:08d} class {k}\n" for k in range(1000))
    (tmp_path / "synset_words.txt").write_text(names)
    result = run(str(tmp_path / "a.onnx"))
    assert result.returncode == 0, result.stderr
    meta = metadata(tmp_path / "a.onnx")
    assert meta["gradcam_core.preprocessing"] == ('{"channel_order": "bgr", "value_scale": 255.0, '
                                                  '"mean": [103.939, 116.779, 123.68], "input_scale": 1.0, "std": null}')
    assert meta["gradcam_core.class_names"] == names and meta["gradcam_core.input_size"] == "224x224"
    other = tmp_path / "mine.txt"
    other.write_text("".join(f"thing {k}\n" for k in range(1000)))
    result = run(str(tmp_path / "b.onnx"), "--mean-value", "1,2,3",
                         "--input-scale", "0.5", "--channel-order", "rgb", "--synset-file", str(other))
    assert result.returncode == 0, result.stderr
    meta = metadata(tmp_path / "b.onnx")
    assert json.loads(meta["gradcam_core.preprocessing"]) == {"channel_order": "rgb", "value_scale": 255.0,
                                                             "mean": [1.0, 2.0, 3.0], "input_scale": 0.5, "std": None}
    assert meta["gradcam_core.class_names"] == other.read_text()
    (tmp_path / "synset_words.txt").unlink()
    result = run(str(tmp_path / "c.onnx"))
    assert result.returncode == 0 and "gradcam_core.class_names" not in metadata(tmp_path / "c.onnx")
    other.write_text("a\n\nb\n")  # an empty line between names: not a class-names file
    result = run(str(tmp_path / "d.onnx"), "--synset-file", str(other))
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and "mine.txt" in result.stderr
    assert not (tmp_path / "d.onnx").exists() and not list(tmp_path.glob(".*.tmp"))


def run_convert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradcam_core.convert", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_command_line_writes_the_file(tmp_path):
    out = tmp_path / "vgg.onnx"
    result = run_convert(str(MODELS / "mini_vgg16_v1.prototxt"), str(MODELS / "mini_vgg16_v1.caffemodel"), str(out),
                         "--input-size", "224")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and str(out) in result.stdout
    assert onnx.load(str(out)).graph.output[0].name == "prob"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "garbage", "size", "outdir"])
def test_command_line_errors_are_one_line_and_write_nothing(tmp_path, case):
    proto, weights = str(MODELS / "mini_vgg16_v1.prototxt"), str(MODELS / "mini_vgg16_v1.caffemodel")
    out = tmp_path / "out.onnx"
    extra = []
    if case == "missing":
        weights = str(tmp_path / "absent.caffemodel")
    elif case == "garbage":
        (tmp_path / "bad.prototxt").write_text("layer { name: \n")
        proto = str(tmp_path / "bad.prototxt")
    elif case == "size":
        extra = ["--input-size", "100x100"]  # fc6 wants 7 x 7 pool5 maps
    else:
        out = tmp_path / "no" / "such" / "folder" / "out.onnx"
    result = run_convert(proto, weights, str(out), *extra)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("python -m gradcam_core.convert: error: ")
    assert not out.exists() and not list(tmp_path.glob("**/*.tmp"))


@pytest.mark.slow  # a subprocess per run: in the full suite, not the quick one
def test_convert_then_explain_gives_the_caffe_runs_files(tmp_path):
    """The bundled SqueezeNet converted with no option, then explained with only -model_file and
    -label: the ONNX file carries the preprocessing, the size and the class names, so the three PNGs
    are the Caffe run's (both run PyTorch's kernels: SqueezeNet is a DAG)."""
    from conftest import read_png, run_script

    proto, weights = SQUEEZENET / "deploy.prototxt", SQUEEZENET / "squeezenet1_1.caffemodel"
    if not weights.exists():
        pytest.skip(f"the bundled SqueezeNet is not in {SQUEEZENET}")
    out = tmp_path / "sq.onnx"
    result = run_convert(str(proto), str(weights), str(out))
    assert result.returncode == 0, result.stderr
    meta = metadata(out)  # the writing side: checked without the reader
    assert meta["gradcam_core.preprocessing"] == ('{"channel_order": "bgr", "value_scale": 255.0, '
                                                  '"mean": [103.939, 116.779, 123.68], "input_scale": 1.0, "std": null}')
    assert meta["gradcam_core.input_size"] == "224x224"
    assert meta["gradcam_core.class_names"] == (SQUEEZENET / "synset_words.txt").read_text()
    assert declared(out) == ["N", 3, "H", "W"]

    caffe = run_script("classification.py", "-proto_file", str(proto), "-model_file", str(weights),
                       "-label", "243", "-out_path", str(tmp_path / "caffe"))
    assert caffe.returncode == 0, caffe.stderr
    # The reading side (formats/onnx.py + tasks/classify.py read the metadata, the default layer of
    # an ONNX model): these assertions fail until that lands with this branch.
    converted = run_script("classification.py", "-model_file", str(out), "-label", "243",
                           "-out_path", str(tmp_path / "onnx"))
    assert converted.returncode == 0, converted.stderr
    assert "Label 243: boxer" in caffe.stdout and "Label 243: boxer" in converted.stdout
    names = sorted(p.name for p in (tmp_path / "caffe").iterdir())
    assert len(names) == 3 and names == sorted(p.name for p in (tmp_path / "onnx").iterdir())
    for name in names:
        assert np.array_equal(read_png(tmp_path / "onnx" / name), read_png(tmp_path / "caffe" / name)), name


# The converter's output path, sizes and opsets: checked before anything is written.

def convert_main(capsys, *args: str) -> tuple[int, list[str]]:
    from gradcam_core.convert import main

    code = main([str(MODELS / "mini_vgg16_v1.prototxt"), str(MODELS / "mini_vgg16_v1.caffemodel"), *args])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


def assert_one_line(code: int, lines: list[str], *words: str) -> None:
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("python -m gradcam_core.convert: error: ") and "Traceback" not in lines[0], lines
    for word in words:
        assert word in lines[0], lines


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "socket", "symlink"])
def test_a_non_regular_target_is_refused_and_left_alone(tmp_path, capsys, kind):
    import socket
    import stat

    target = tmp_path / "out.onnx"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        try:
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("mknod of a character device needs privileges")
    elif kind == "directory":
        target.mkdir()
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(str(target))
        except OSError:
            pytest.skip("the temporary folder's path is too long for a socket")
        sock.close()
    else:
        (tmp_path / "real.onnx").write_bytes(b"keep")
        target.symlink_to(tmp_path / "real.onnx")
    before = os.lstat(target)
    for force in ([], ["--force"]):
        code, lines = convert_main(capsys, str(target), *force)
        assert_one_line(code, lines, str(target))
        after = os.lstat(target)
        assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    assert not list(tmp_path.glob(".*.tmp"))
    if kind == "symlink":
        assert (tmp_path / "real.onnx").read_bytes() == b"keep"


def test_an_existing_file_needs_force_which_keeps_its_mode(tmp_path, capsys):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"old")
    target.chmod(0o600)
    code, lines = convert_main(capsys, str(target))
    assert_one_line(code, lines, str(target), "--force")
    assert target.read_bytes() == b"old"
    code, lines = convert_main(capsys, str(target), "-f")
    assert code == 0 and lines == []
    assert onnx.load(str(target)).graph.output[0].name == "prob"
    assert target.stat().st_mode & 0o777 == 0o600 and not list(tmp_path.glob(".*.tmp"))
    target.unlink()
    assert convert_main(capsys, str(target))[0] == 0 and target.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("args, words", [
    (["--opset", "1"], ["10 to 17"]), (["--opset", "6"], ["10 to 17"]), (["--opset", "9"], ["10 to 17"]),
    (["--opset", "99"], ["10 to 17"]), (["--opset", "x"], ["10 to 17"]),
    (["--input-size", "0"], ["0x0", "at least 1x1"]),
    (["--input-size", "100000"], ["100000x100000", "2 GiB"]),
    (["--input-size", "20000"], ["20000x20000", "'data'", "2 GiB"]),  # 4.5 GiB input: the shape plan
    (["--input-size", "12500"], ["'conv1_1'", "2 GiB"]),  # a 1.7 GiB input, 4 channels after conv1_1
    (["--mean-value", "1,x,3"], ["--mean-value"]), (["--input-scale", "inf"], ["--input-scale"]),
    (["--channel-order", "gbr"], ["--channel-order"]),
    (["--synset-file", "absent.txt"], ["absent.txt"]),
])
def test_bad_sizes_opsets_and_options_are_one_line(tmp_path, capsys, args, words):
    target = tmp_path / "out.onnx"
    code, lines = convert_main(capsys, str(target), *args)
    assert_one_line(code, lines, *words)
    assert not list(tmp_path.iterdir())


def test_a_name_too_long_is_one_line(tmp_path, capsys):
    for target in (tmp_path / ("a" * 300 + ".onnx"), tmp_path / ("b" * 256) / "out.onnx"):
        code, lines = convert_main(capsys, str(target))
        assert_one_line(code, lines, "255")
    for target in (tmp_path / ("c" * 250 + ".onnx"), tmp_path / ("é" * 125 + ".onnx")):  # 255 bytes: written
        assert convert_main(capsys, str(target))[0] == 0 and target.is_file()  # (its temporary name is shorter)


@pytest.mark.slow  # a subprocess per run: in the full suite, not the quick one
def test_sigterm_during_the_conversion_removes_the_temporary_file(tmp_path):
    """SIGTERM once the temporary file exists: exit 143, one line, no temporary file left."""
    import signal
    import time

    import caffe_writer as write

    rng = np.random.default_rng(0)
    layers = [{"name": "conv", "type": "Convolution", "bottom": ["data"], "top": ["conv"],
               "convolution_param": {"num_output": 4, "kernel_size": 3, "pad": 1},
               "blobs": [rng.standard_normal((4, 3, 3, 3), dtype=np.float32), np.zeros(4, np.float32)]},
              {"name": "fc", "type": "InnerProduct", "bottom": ["conv"], "top": ["fc"],
               "inner_product_param": {"num_output": 4096},
               "blobs": [rng.standard_normal((4096, 4096), dtype=np.float32), np.zeros(4096, np.float32)]}]
    proto = write.write_prototxt(tmp_path / "big.prototxt", layers, input_shape=(1, 3, 32, 32))
    weights = write.write_caffemodel(tmp_path / "big.caffemodel", layers)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "gradcam_core.convert", str(proto), str(weights),
                                str(out_dir / "big.onnx")], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out_dir.glob(".*.tmp")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert list(out_dir.glob(".*.tmp")), "the converter ended before its temporary file was seen"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, err
    assert err.strip().splitlines() == ["python -m gradcam_core.convert: error: interrupted (SIGTERM)"]
    assert list(out_dir.iterdir()) == []
