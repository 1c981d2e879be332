"""ONNX models as users and hostile files give them: the default layer by an ONNX name, the file's own
metadata (preprocessing, input size, class names), bounded constant folding, models without
parameters, bad external data, symbolic links out of the model's folder, corrupt files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import cli_runner
import numpy as np
import onnx
import pytest
import torch
from conftest import ROOT, assert_refused
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from torch import nn

from gradcam_core.engine import resolve_layer
from gradcam_core.engine.layers import spatial_layers
from gradcam_core.errors import GradCamError
from gradcam_core.formats.onnx import fold_constants, load_onnx
from gradcam_core.image.preprocessing import Preprocessing
from gradcam_core.tasks.classify import InputOptions, default_classifier_layer, load_model

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run

SQUEEZE = ROOT / "models" / "squeezenet1_1"
IMAGE = ROOT / "images" / "cat_dog.jpg"
# The metadata keys the converter writes and the loader reads (a contract: spelled out here)
METADATA_PREPROCESSING = "gradcam_core.preprocessing"
METADATA_INPUT_SIZE = "gradcam_core.input_size"
METADATA_CLASS_NAMES = "gradcam_core.class_names"
CAFFE_PREP = {"channel_order": "bgr", "value_scale": 255.0, "mean": [103.939, 116.779, 123.68],
              "input_scale": 1.0, "std": None}


class TinyNet(nn.Module):
    """torchvision's classifier layout in small: features, then a 1x1 conv, ReLU, global pooling."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(), nn.Conv2d(8, classes, 1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def export(path: Path, size=(32, 32), dynamic_hw: bool = False, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    axes = {0: "n", 2: "h", 3: "w"} if dynamic_hw else {0: "n"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TinyNet().eval(), torch.zeros(1, 3, *size), str(path), dynamo=False,
                          input_names=["data"], output_names=["logits"],
                          dynamic_axes={"data": axes, "logits": {0: "n"}})
    return path


def with_metadata(source: Path, target: Path, props: dict[str, str]) -> Path:
    model = onnx.load(str(source))
    helper.set_model_props(model, props)
    onnx.save(model, str(target))
    return target


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def cli() -> cli_runner.PrewarmedCLI:
    return cli_runner.shared()


def run(cli, out: Path, *args: str, image: Path = IMAGE, **kw):
    return cli.run("classification.py", "-input_image_path", str(image), *args, "-out_path", f"{out}/",
                   timeout=180, **kw)


# ------------------------------------------------------------------------------ the default layer


def test_the_default_layer_is_an_onnx_name_the_net_resolves(tmp_path):
    path = export(tmp_path / "tiny.onnx", dynamic_hw=True)
    model = load_model(path)
    net = model.net
    probe = torch.zeros(1, 3, 32, 32)
    layer = default_classifier_layer(net, probe)
    last_relu = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Relu"][-1]
    assert layer == last_relu == "/classifier/classifier.2/Relu"
    assert resolve_layer(net, layer)[0] is net.resolve_layer(last_relu)[0]
    names = [name for name, _ in spatial_layers(net, probe)]
    assert names and all(name in net.nodes for name in names)  # what the web demo lists


def test_the_cli_explains_an_onnx_file_on_its_default_layer_and_takes_the_name_back(cli, tmp_path):
    path = export(tmp_path / "tiny.onnx", dynamic_hw=True)
    first = run(cli, tmp_path / "a", "-model_file", str(path), "-label", "2")
    assert first.returncode == 0, first.stderr
    assert "Grad-CAM layer: /classifier/classifier.2/Relu (the last layer" in first.stdout
    again = run(cli, tmp_path / "b", "-model_file", str(path), "-label", "2",
                "-layer_name", "/classifier/classifier.2/Relu_output_0")  # its output tensor's name
    assert again.returncode == 0, again.stderr
    for name in ("classify_gcam_hm_2.png", "classify_gb_2.png", "classify_gb_gcam_2.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_a_stderr_line_comes_after_the_stdout_lines_before_it(tmp_path):
    """In one file (``> log 2>&1``), what was printed before a line on stderr (an error, a skipped
    image) comes before it: stdout is block-buffered into a file, so without a flush it would land
    after it."""
    code = ("import sys\nfrom gradcam_core.run.batches import write_line\n"
            "print('Grad-CAM layer: relu_conv10')\nwrite_line(sys.stderr, 'skipping b.jpg: not an image')\n"
            "print('after')")
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as by default
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=60,
                       env=dict(env, PYTHONPATH=str(ROOT)), check=True)
    assert log.read_text().splitlines() == ["Grad-CAM layer: relu_conv10", "skipping b.jpg: not an image", "after"]


# ------------------------------------------------------------------- the file's metadata


@pytest.fixture(scope="module")
def converted_squeezenet(tmp_path_factory) -> Path:
    """``python -m gradcam_core.convert`` of the bundled SqueezeNet, with the metadata the converter
    writes (set here: preprocessing, input size and class names of the Caffe files)."""
    folder = tmp_path_factory.mktemp("converted")
    out = folder / "sq.onnx"
    done = subprocess.run([sys.executable, "-m", "gradcam_core.convert", str(SQUEEZE / "deploy.prototxt"),
                           str(SQUEEZE / "squeezenet1_1.caffemodel"), str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    return with_metadata(out, out, {METADATA_PREPROCESSING: json.dumps(CAFFE_PREP), METADATA_INPUT_SIZE: "227x227",
                                    METADATA_CLASS_NAMES: (SQUEEZE / "synset_words.txt").read_text()})


def test_converted_squeezenet_explains_as_the_caffe_files_without_options(cli, tmp_path, converted_squeezenet):
    """``--help``'s example on the converter's output: its own class names, preprocessing, input size
    and default layer give the Caffe run's files at that size."""
    onnx_run = run(cli, tmp_path / "onnx", "-model_file", str(converted_squeezenet), "-label", "tiger cat")
    caffe_run = run(cli, tmp_path / "caffe", "-proto_file", str(SQUEEZE / "deploy.prototxt"), "-model_file",
                    str(SQUEEZE / "squeezenet1_1.caffemodel"), "-label", "283", "-input_sz", "227")
    assert onnx_run.returncode == 0 and caffe_run.returncode == 0, (onnx_run.stderr, caffe_run.stderr)
    assert "Grad-CAM layer: relu_conv10 " in onnx_run.stdout and "Label 283: tiger cat" in onnx_run.stdout
    for name in ("classify_gcam_hm_283.png", "classify_gb_283.png", "classify_gb_gcam_283.png"):
        a, b = (np.asarray(Image.open(tmp_path / d / name), dtype=np.int16) for d in ("onnx", "caffe"))
        assert a.shape == b.shape == (227, 227, 3) and np.abs(a - b).max() <= 1, name


def test_metadata_preprocessing_is_the_base_and_the_options_override_it(tmp_path):
    plain = export(tmp_path / "plain.onnx", dynamic_hw=True)
    own = {"channel_order": "rgb", "value_scale": 2.0, "mean": [0.1, 0.2, 0.3], "input_scale": 0.5,
           "std": [0.4, 0.5, 0.6]}
    path = with_metadata(plain, tmp_path / "meta.onnx", {METADATA_PREPROCESSING: json.dumps(own)})
    expected = Preprocessing("rgb", 2.0, (0.1, 0.2, 0.3), input_scale=0.5, std=(0.4, 0.5, 0.6))
    assert load_model(path).preprocessing == expected
    assert load_model(path, inputs=InputOptions(input_scale=3.0)).preprocessing == Preprocessing(
        "rgb", 2.0, (0.1, 0.2, 0.3), input_scale=3.0, std=(0.4, 0.5, 0.6))
    assert load_model(path, inputs=InputOptions(preprocess="caffe")).preprocessing == Preprocessing.caffe_vgg()
    assert load_model(plain).preprocessing == Preprocessing.torchvision_imagenet()  # no metadata: as before


def test_class_names_come_from_the_option_then_the_metadata_then_beside_the_file(tmp_path):
    plain = export(tmp_path / "plain.onnx", dynamic_hw=True)
    folder = tmp_path / "m"
    folder.mkdir()
    path = with_metadata(plain, folder / "net.onnx", {METADATA_CLASS_NAMES: "\n".join(f"own {i}" for i in range(5))})
    (folder / "synset_words.txt").write_text("\n".join(f"beside {i}" for i in range(5)))
    option = tmp_path / "names.txt"
    option.write_text("\n".join(f"option {i}" for i in range(5)))
    assert load_model(path, synset_file=option).names.name(3) == "option 3"
    assert load_model(path).names.name(3) == "own 3"
    assert load_model(with_metadata(plain, folder / "bare.onnx", {})).names.name(3) == "beside 3"


def test_the_input_size_is_the_metadatas_then_the_graphs_then_224(tmp_path):
    dynamic = export(tmp_path / "dynamic.onnx", dynamic_hw=True)
    fixed = export(tmp_path / "fixed.onnx", size=(48, 48))
    assert load_model(dynamic).square_input_size(None) == 224
    assert load_model(dynamic).square_input_size(100) == 100
    assert load_model(with_metadata(dynamic, tmp_path / "m.onnx", {METADATA_INPUT_SIZE: "64x64"})
                      ).square_input_size(None) == 64
    assert load_model(fixed).square_input_size(None) == 48
    assert load_model(fixed).square_input_size(48) == 48
    with pytest.raises(GradCamError) as err:
        load_model(fixed).square_input_size(300)
    assert one_line(err) == f"-input_sz 300: {fixed} takes only 48x48 inputs"
    with pytest.raises(GradCamError, match=r"takes 32x48 inputs, but -input_sz explains square images only"):
        load_model(export(tmp_path / "wide.onnx", size=(32, 48))).square_input_size(None)
    with pytest.raises(GradCamError, match=r"metadata asks for 64x64 inputs, but the graph takes only 48x48"):
        load_model(with_metadata(fixed, tmp_path / "f.onnx", {METADATA_INPUT_SIZE: "64x64"})).square_input_size(None)


def test_the_cli_explains_a_fixed_size_model_at_its_size_and_refuses_another(cli, tmp_path):
    fixed = export(tmp_path / "fixed.onnx", size=(48, 48))
    done = run(cli, tmp_path / "ok", "-model_file", str(fixed), "-label", "1", "-save_overlay", "1")
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "ok" / "classify_overlay_1.png").size == (48, 48)
    out = tmp_path / "refused"
    assert_refused(run(cli, out, "-model_file", str(fixed), "-input_sz", "224"), out,
                   rf"^classification.py: error: -input_sz 224: {fixed} takes only 48x48 inputs$")


BAD_METADATA = [
    (METADATA_PREPROCESSING, "{"),
    (METADATA_PREPROCESSING, "[1, 2, 3]"),
    (METADATA_PREPROCESSING, json.dumps(CAFFE_PREP | {"channel_order": "gbr"})),
    (METADATA_PREPROCESSING, json.dumps(CAFFE_PREP | {"value_scale": "255"})),
    (METADATA_PREPROCESSING, json.dumps(CAFFE_PREP | {"value_scale": True})),
    (METADATA_PREPROCESSING, json.dumps(CAFFE_PREP).replace("255.0", "NaN")),
    (METADATA_PREPROCESSING, json.dumps(CAFFE_PREP).replace("255.0", "1e999")),
    (METADATA_PREPROCESSING, json.dumps(CAFFE_PREP | {"mean": [1, 2]})),
    (METADATA_PREPROCESSING, json.dumps(CAFFE_PREP | {"std": [1, 0, 1]})),
    (METADATA_PREPROCESSING, json.dumps(CAFFE_PREP | {"scale": 1})),
    (METADATA_PREPROCESSING, "[" * 2000 + "]" * 2000),
    (METADATA_PREPROCESSING, "1" * 5000),
    (METADATA_INPUT_SIZE, "224"),
    (METADATA_INPUT_SIZE, "0x0"),
    (METADATA_INPUT_SIZE, "-5x5"),
    (METADATA_INPUT_SIZE, "9" * 100),
    (METADATA_CLASS_NAMES, "a\n\nb"),
    (METADATA_CLASS_NAMES, "x" * (17 << 20)),
]


@pytest.mark.parametrize("key, value", BAD_METADATA, ids=[f"{k.split('.')[1]}-{i}" for i, (k, _) in
                                                          enumerate(BAD_METADATA)])
def test_malformed_metadata_is_one_line_naming_the_file_and_the_key(tmp_path, key, value):
    path = with_metadata(export(tmp_path / "plain.onnx", dynamic_hw=True), tmp_path / "bad.onnx", {key: value})
    with pytest.raises(GradCamError) as err:
        load_model(path)
    message = one_line(err)
    assert str(path) in message and key in message, message


# ------------------------------------------------------------------------- hostile files


def bomb(path: Path, op: str) -> Path:
    """A file of a few hundred bytes whose constant folding would make an 18 GB tensor (or 80 GB)."""
    inits = [numpy_helper.from_array(np.array([1, 3, 40000, 40000], np.int64), "shape"),
             numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "one"),
             numpy_helper.from_array(np.array(0, np.int64), "start"),
             numpy_helper.from_array(np.array(10**10, np.int64), "limit"),
             numpy_helper.from_array(np.array(1, np.int64), "delta")]
    make = {
        "ConstantOfShape": lambda: helper.make_node("ConstantOfShape", ["shape"], ["big"], name="bomb",
                                                    value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        "Expand": lambda: helper.make_node("Expand", ["one", "shape"], ["big"], name="bomb"),
        "Tile": lambda: helper.make_node("Tile", ["one", "shape"], ["big"], name="bomb"),
        "Range": lambda: helper.make_node("Range", ["start", "limit", "delta"], ["big"], name="bomb"),
    }
    nodes = [make[op](), helper.make_node("Cast", ["big"], ["bigf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["bigf"], ["s"], name="sum", keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


BOMBS = ["ConstantOfShape", "Expand", "Tile", "Range"]


def test_a_tiny_file_folding_to_a_huge_constant_is_refused_fast_in_bounded_memory(tmp_path):
    """Each file is refused with one line naming it and the node, in a process that may map only 3 GB
    more than torch and onnx take (the constants would take 18 GB, Range's 80 GB)."""
    paths = [bomb(tmp_path / f"{op}.onnx", op) for op in BOMBS]
    assert all(p.stat().st_size < 1000 for p in paths)
    code = textwrap.dedent(f"""
        import resource, sys
        from gradcam_core.errors import GradCamError
        from gradcam_core.formats.onnx import load_onnx
        import onnx, onnx.reference, onnx2torch
        mapped = next(int(l.split()[1]) << 10 for l in open("/proc/self/status") if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (mapped + (3 << 30), mapped + (3 << 30)))  # 3 GB more
        for path in {[str(p) for p in paths]!r}:
            try:
                load_onnx(path)
                print("loaded", path)
            except GradCamError as err:
                print(err)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr[-2000:])
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(BOMBS), lines
    for path, op, line in zip(paths, BOMBS, lines):
        assert line.startswith(f"{path}: node 'bomb' ({op}): its outputs would take ") and "allowed" in line, line


def test_folded_constants_are_bounded_together(tmp_path):
    """Each node under the limit, all of them together over it: refused at the node that crosses it."""
    inits = [numpy_helper.from_array(np.array([100], np.int64), "shape")]
    nodes = [helper.make_node("ConstantOfShape", ["shape"], [f"c{i}"], name=f"c{i}") for i in range(3)]
    nodes += [helper.make_node("Sum", ["x", "c0", "c1", "c2"], ["y"], name="sum")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [100])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [100])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    fold_constants(model, "m.onnx", limit=2000)  # 3 x 400 bytes: folded
    assert [n.op_type for n in model.graph.node] == ["Sum"]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(GradCamError, match=r"^m.onnx: node 'c2' \(ConstantOfShape\): the constants folded up to "
                                           r"it would take 1,200 bytes"):
        fold_constants(model, "m.onnx", limit=1000)


def test_a_model_without_parameters_is_explained(cli, tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["y"], name="flat")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    path = tmp_path / "noparams.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    assert not list(load_onnx(path).parameters())
    result = run(cli, tmp_path / "out", "-model_file", str(path), "-label", "1")
    assert result.returncode == 0, result.stderr
    assert "Grad-CAM layer: pool " in result.stdout
    assert len(list((tmp_path / "out").iterdir())) == 3


def external(tmp_path: Path) -> tuple[Path, Path]:
    """A model whose weights are in ``folder/w.bin``; returns (model, weights)."""
    inline = export(tmp_path / "inline.onnx", dynamic_hw=True)
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(onnx.load(str(inline)), str(folder / "net.onnx"), save_as_external_data=True, location="w.bin",
              size_threshold=0)
    return folder / "net.onnx", folder / "w.bin"


@pytest.mark.parametrize("key, value", [("offset", "-5"), ("length", "-3"), ("offset", "abc"),
                                        ("length", str(10**30)), ("offset", str(2**70))])
def test_bad_external_data_offsets_and_lengths_are_one_line(tmp_path, key, value):
    path, _ = external(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    tensor = model.graph.initializer[0]
    entry = next((e for e in tensor.external_data if e.key == key), None) or tensor.external_data.add()
    entry.key, entry.value = key, value
    onnx.save(model, str(path))
    with pytest.raises(GradCamError) as err:
        load_onnx(path)
    message = one_line(err)
    assert message.startswith(f"{path}: tensor '{tensor.name}'"), message


def test_a_symlink_out_of_the_model_folder_is_refused(tmp_path):
    path, weights = external(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    expected = load_onnx(path)(torch.ones(1, 3, 16, 16))
    os.replace(weights, elsewhere / "w.bin")
    os.symlink(elsewhere / "w.bin", weights)
    with pytest.raises(GradCamError) as err:
        load_onnx(path)
    assert one_line(err).endswith("external data 'w.bin' is a symbolic link leading outside the model's folder")
    weights.unlink()  # a link that stays inside the folder is fine
    os.replace(elsewhere / "w.bin", path.parent / "real.bin")
    os.symlink("real.bin", weights)
    with torch.no_grad():
        assert torch.equal(load_onnx(path)(torch.ones(1, 3, 16, 16)), expected)


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_a_corrupt_onnx_file_is_an_onnx_error_not_a_missing_prototxt(cli, tmp_path, content):
    full = export(tmp_path / "full.onnx").read_bytes()
    path = tmp_path / "x.onnx"
    path.write_bytes(os.urandom(500) if content == "garbage" else full[: len(full) // 2])
    out = tmp_path / "out"
    assert_refused(run(cli, out, "-model_file", str(path), cwd=tmp_path), out,
                   rf"^classification.py: error: {path}: not a valid ONNX model \(")
