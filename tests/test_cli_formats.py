"""classification.py on every model format, as a user runs it: the bundled real SqueezeNet as Caffe files,
as a torchvision state_dict and as ONNX; class names; the preprocessing options; bad model files."""
from __future__ import annotations

import re
from pathlib import Path

import cli_runner
import numpy as np
import pytest
from conftest import ROOT, assert_refused
from PIL import Image

SQUEEZE = ROOT / "models" / "squeezenet1_1"
IMAGE = str(ROOT / "images" / "cat_dog.jpg")
CAFFE = ["-proto_file", str(SQUEEZE / "deploy.prototxt"), "-model_file", str(SQUEEZE / "squeezenet1_1.caffemodel")]
TORCHVISION = ["-arch", "squeezenet1_1", "-model_file", str(SQUEEZE / "squeezenet1_1.pth")]


@pytest.fixture(scope="module")
def cli() -> cli_runner.PrewarmedCLI:
    return cli_runner.shared()


def run(cli, out: Path, *args: str, **kw):
    return cli.run("classification.py", "-input_image_path", IMAGE, *args, "-out_path", f"{out}/", timeout=180, **kw)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_torchvision_model_with_class_names(cli, tmp_path):
    result = run(cli, tmp_path, *TORCHVISION, "-label", "boxer,Tiger Cat")
    assert result.returncode == 0, result.stderr
    assert "Label 243: boxer" in result.stdout and "Label 283: tiger cat" in result.stdout
    assert re.search(r"Grad-CAM layer: \S+ \(the last layer with a spatial output", result.stdout)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"classify_{kind}_{label}.png" for kind in ("gcam_hm", "gb", "gb_gcam") for label in (243, 283))


@pytest.mark.slow  # a CLI run; the predicted-label line is also checked by the oracle runs
def test_predicted_class_prints_its_name(cli, tmp_path):
    result = run(cli, tmp_path, *TORCHVISION, "-layer_name", "features")
    assert result.returncode == 0, result.stderr
    assert "No label provided, using predicted label \t 283" in result.stdout  # the original's line
    assert "Label 283: tiger cat" in result.stdout


def test_an_ambiguous_class_name_lists_the_candidates(cli, tmp_path):
    out = tmp_path / "out"
    assert_refused(run(cli, out, *TORCHVISION, "-label", "crane"), out, r"-label 'crane': .*label 135.*label 518")


@pytest.mark.parametrize("args, message", [
    (["-preprocess", "opencv"], r"-preprocess opencv: expected one of"),
    (["-channel_order", "gbr"], r"-channel_order gbr: expected one of"),
    pytest.param(["-mean_value", "1,2"], r"mean", marks=pytest.mark.slow),  # these two take a CLI run of a second or more
    (["-mean_value", "a,b,c"], r"-mean_value 'a,b,c' must be numbers"),
    pytest.param(["-input_scale", "0"], r"input_scale must be a positive", marks=pytest.mark.slow),
    (["-arch", "resnet_9000"], r"resnet_9000"),
])
def test_bad_model_options_are_one_line(cli, tmp_path, args, message):
    out = tmp_path / "out"
    result = run(cli, out, *TORCHVISION, *args) if "-arch" not in args else run(
        cli, out, "-model_file", str(SQUEEZE / "squeezenet1_1.pth"), *args)
    assert_refused(result, out, message)


@pytest.mark.slow  # a CLI run; in process: test_torchvision.py
def test_a_pickled_module_is_refused(cli, tmp_path):
    import torch
    import torchvision

    pickled = tmp_path / "module.pth"
    torch.save(torchvision.models.squeezenet1_1(), pickled)
    out = tmp_path / "out"
    result = run(cli, out, "-arch", "squeezenet1_1", "-model_file", str(pickled))
    assert_refused(result, out, r"module.pth")
    assert "pickle" in result.stderr or "module" in result.stderr


@pytest.mark.slow  # a CLI run; in process: test_torchvision.py
def test_a_state_dict_of_another_architecture_names_the_first_key(cli, tmp_path):
    out = tmp_path / "out"
    result = run(cli, out, "-arch", "resnet18", "-model_file", str(SQUEEZE / "squeezenet1_1.pth"))
    assert_refused(result, out, r"squeezenet1_1.pth")


@pytest.mark.slow  # two CLI runs; the options in process: test_preprocessing.py
def test_the_caffe_preprocessing_options_change_the_input(cli, tmp_path):
    """-mean_value, -input_scale and -channel_order reach the network: other values, other maps (the
    default keeps the original's VGG preprocessing, tested against the oracle elsewhere)."""
    base = run(cli, tmp_path / "a", *TORCHVISION, "-label", "283", "-preprocess", "caffe")
    other = run(cli, tmp_path / "b", *TORCHVISION, "-label", "283", "-preprocess", "caffe",
                "-mean_value", "50,50,50", "-input_scale", "0.5", "-channel_order", "rgb")
    assert base.returncode == 0 and other.returncode == 0, (base.stderr, other.stderr)
    a, b = (pixels(tmp_path / d / "classify_gb_283.png") for d in ("a", "b"))
    assert np.abs(a - b).max() > 10


@pytest.fixture(scope="module")
def squeezenet_onnx(tmp_path_factory) -> Path:
    """The bundled torchvision SqueezeNet exported to ONNX (dynamic batch), as a user would."""
    import torch
    import torchvision

    net = torchvision.models.squeezenet1_1()
    net.load_state_dict(torch.load(SQUEEZE / "squeezenet1_1.pth", weights_only=True))
    path = tmp_path_factory.mktemp("onnx") / "squeezenet1_1.onnx"
    torch.onnx.export(net.eval(), torch.zeros(1, 3, 224, 224), str(path), dynamo=False, input_names=["data"],
                      output_names=["logits"], dynamic_axes={"data": {0: "n"}, "logits": {0: "n"}})
    return path


@pytest.mark.slow  # an export and a CLI run (4 s); ONNX through the CLI stays quick in test_onnx_defects.py
def test_an_onnx_model_explains_as_its_torchvision_twin(cli, tmp_path, squeezenet_onnx):
    """The same weights through ONNX (torchvision's preprocessing by default for ONNX) give the same
    PNGs as the torchvision model, at the same layer (the ReLU after the last fire module)."""
    layers = {"onnx": "/features/features.12/expand3x3_activation/Relu", "tv": "features.12.expand3x3_activation"}
    onnx_run = run(cli, tmp_path / "onnx", "-model_file", str(squeezenet_onnx), "-label", "tiger cat",
                   "-synset_file", str(SQUEEZE / "synset_words.txt"), "-layer_name", layers["onnx"])
    tv_run = run(cli, tmp_path / "tv", *TORCHVISION, "-label", "283", "-layer_name", layers["tv"])
    assert onnx_run.returncode == 0 and tv_run.returncode == 0, (onnx_run.stderr, tv_run.stderr)
    assert "Label 283: tiger cat" in onnx_run.stdout
    for name in ("classify_gcam_hm_283.png", "classify_gb_283.png", "classify_gb_gcam_283.png"):
        assert np.abs(pixels(tmp_path / "onnx" / name) - pixels(tmp_path / "tv" / name)).max() <= 1, name


def test_the_caffe_and_torchvision_squeezenets_give_the_same_logits():
    """PROVENANCE.md: torchvision's normalisation is folded into conv1 of the caffemodel, so the two
    files, each with its own preprocessing, give the same logits on the same pixels."""
    import torch

    from gradcam_core.tasks.classify import load_model

    caffe = load_model(SQUEEZE / "squeezenet1_1.caffemodel", proto_file=SQUEEZE / "deploy.prototxt")
    tv = load_model(SQUEEZE / "squeezenet1_1.pth", arch="squeezenet1_1")
    assert (caffe.fmt, tv.fmt) == ("caffe", "torchvision")
    from gradcam_core.image.preprocessing import load_input

    for image in sorted((ROOT / "images").glob("*.jpg")):
        with torch.no_grad():
            a = caffe.net(load_input(image, 224, 224, caffe.preprocessing)[None]).reshape(-1)
            b = tv.net(load_input(image, 224, 224, tv.preprocessing)[None]).reshape(-1)
        assert float((a - b).abs().max() / b.abs().max()) < 1e-5, image.name
    assert caffe.names.name(282) == tv.names.name(282) == "tiger cat"


@pytest.mark.slow  # two CLI runs; the same logits in process above
def test_the_caffe_and_torchvision_squeezenets_give_the_same_gradcam_through_the_cli(cli, tmp_path):
    """The same class at the same layer (the last fire module's concatenated output) in both forms: the
    same Grad-CAM heatmap. (Guided backprop is a gradient w.r.t. each form's own input, which the two
    preprocessings scale differently per channel, so its pictures differ.)"""
    caffe = run(cli, tmp_path / "caffe", *CAFFE, "-label", "243,283", "-layer_name", "fire9/concat")
    tv = run(cli, tmp_path / "tv", *TORCHVISION, "-label", "243,283", "-layer_name", "features")
    assert caffe.returncode == 0 and tv.returncode == 0, (caffe.stderr, tv.stderr)
    for label in (243, 283):
        name = f"classify_gcam_hm_{label}.png"
        assert np.abs(pixels(tmp_path / "caffe" / name) - pixels(tmp_path / "tv" / name)).max() <= 2, name


@pytest.mark.slow  # a fresh interpreter; the class-dependent maps in process: test_torchvision.py
def test_the_readme_command_explains_each_class_where_it_is(tmp_path):
    """README's first command, as a new user runs it (a new interpreter, relative paths from the
    checkout), on the real SqueezeNet: the boxer map and the tiger-cat map differ; the boxer map sits
    in the upper half (the dog's head), the tiger-cat map also covers the lower half, where the cat
    lies, which the boxer map leaves cold."""
    from conftest import run_script

    result = run_script("classification.py", "-proto_file", "models/squeezenet1_1/deploy.prototxt",
                        "-model_file", "models/squeezenet1_1/squeezenet1_1.caffemodel",
                        "-input_image_path", "images/cat_dog.jpg", "-label", "243,283",
                        "-out_path", f"{tmp_path}/", fresh=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "Label 243: boxer" in result.stdout and "Label 283: tiger cat" in result.stdout
    boxer, cat = (pixels(tmp_path / f"classify_gcam_hm_{label}.png").astype(float) for label in (243, 283))
    heat = {k: (m[..., 0] - m[..., 2]) for k, m in (("boxer", boxer), ("cat", cat))}  # red - blue: hot - cold
    assert np.abs(heat["boxer"] - heat["cat"]).mean() > 20  # the maps differ
    top = heat["boxer"].shape[0] // 2
    assert heat["boxer"][:top].mean() > heat["boxer"][top:].mean()
    assert heat["cat"][top:].mean() > heat["boxer"][top:].mean() + 20


@pytest.mark.slow  # three CLI runs; mean files in process: test_meanfile.py
def test_a_mean_file_reaches_the_network(cli, tmp_path):
    """-mean_file with a constant mean image (B, G, R) = (100, 110, 120), at another size than the input
    (it is scaled to -input_sz): the files of -mean_value 100,110,120 (a grey level at most: the mean
    image goes through image.scale's float32 weights)."""
    from caffe_writer import write_binary

    from gradcam_core.formats.caffe.schema import MESSAGES

    mean = np.stack([np.full((32, 48), v, dtype=np.float32) for v in (100.0, 110.0, 120.0)])
    path = write_binary(tmp_path / "mean.binaryproto", {"num": 1, "channels": 3, "height": 32, "width": 48,
                                                         "data": mean.reshape(-1)}, MESSAGES["BlobProto"])
    by_file = run(cli, tmp_path / "file", *TORCHVISION, "-label", "283", "-preprocess", "caffe", "-mean_file", str(path))
    by_value = run(cli, tmp_path / "value", *TORCHVISION, "-label", "283", "-preprocess", "caffe",
                   "-mean_value", "100,110,120")
    assert by_file.returncode == 0 and by_value.returncode == 0, (by_file.stderr, by_value.stderr)
    for name in ("classify_gcam_hm_283.png", "classify_gb_283.png"):
        assert np.abs(pixels(tmp_path / "file" / name) - pixels(tmp_path / "value" / name)).max() <= 1, name
    two = write_binary(tmp_path / "two.binaryproto", {"num": 1, "channels": 2, "height": 4, "width": 4,
                                                       "data": np.zeros(32, dtype=np.float32)}, MESSAGES["BlobProto"])
    out = tmp_path / "out"
    assert_refused(run(cli, out, *TORCHVISION, "-mean_file", str(two)), out, r"two.binaryproto.*channel")
