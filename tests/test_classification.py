"""classification.py against the original: every oracle case run with its exact command line."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import (
    CASES,
    DATA,
    ROOT,
    assert_png_close,
    assert_refused,
    assert_rel_close,
    case_ids,
    load_case,
    oracle_args,
    oracle_tensor,
    overriding,
    run_script,
)

V1_CASES = [c for c in case_ids("cls_") if not c.startswith("cls_v2_")]
# The CLI runs of these cases are in the slow set only; their tensors are compared in process below.
SLOW_CLI_CASES = {"cls_v1_tabby_pred_hm", "cls_v1_catdog_l8_conv5_3", "cls_v1_catdog_l1_relu4_3",
                  "cls_v1_bathroom_l10_raw"}
# loadcaffe dropped a V2 file's Softmax (and the script then removed fc8): the oracle's cls_v2_* cases
# record that bug. The same weights in V1 format give the right answer, which is what we produce.
V2_AS_V1 = {"cls_v2_catdog_pred_hm": "cls_v1_catdog_pred_hm", "cls_v2_catdog_l3_hm": "cls_v1_catdog_l3_hm"}

MINI = ["-proto_file", str(DATA / "models/mini_vgg16_v1.prototxt"),
        "-model_file", str(DATA / "models/mini_vgg16_v1.caffemodel")]


def oracle_pngs(case_id: str) -> list[Path]:
    return sorted((CASES / case_id).glob("*.png"))


def run_case(case_id: str, out: Path):
    script, args = oracle_args(case_id, out)
    assert script == "classification.py"
    return run_script(script, *args)


@pytest.mark.parametrize("case_id", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CLI_CASES else c
                                     for c in V1_CASES])
def test_oracle_case_gives_the_same_images(case_id, tmp_path):
    result = run_case(case_id, tmp_path)
    assert result.returncode == 0, result.stderr
    expected = oracle_pngs(case_id)
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in expected]
    for png in expected:
        assert_png_close(tmp_path / png.name, png)
    for line in load_case(case_id).get("stdout", []):
        if line.startswith("No label provided"):
            assert line.rstrip() in result.stdout.splitlines()


@pytest.mark.slow  # a fresh interpreter (2 s); the same oracle cases run quick through the prewarmed CLI
def test_a_fresh_interpreter_gives_the_oracle_images(tmp_path):
    """A command as a new user runs it (a new interpreter, relative paths from the checkout, -out_path
    with a trailing slash) on the mini VGG-16 fixture gives the l3 heatmap case's images. (README's
    first command, on the bundled SqueezeNet: tests/test_cli_formats.py.)"""
    result = run_script("classification.py", "-proto_file", "tests/data/models/mini_vgg16_v1.prototxt",
                        "-model_file", "tests/data/models/mini_vgg16_v1.caffemodel", "-label", "3",
                        "-out_path", f"{tmp_path}/", fresh=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    expected = oracle_pngs("cls_v1_catdog_l3_hm")
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in expected]
    for png in expected:
        assert_png_close(tmp_path / png.name, png)


@pytest.mark.parametrize("v2_case, v1_case", sorted(V2_AS_V1.items()))
def test_v2_files_give_what_the_same_v1_weights_give(v2_case, v1_case, tmp_path):
    result = run_case(v2_case, tmp_path)
    assert result.returncode == 0, result.stderr
    expected = oracle_pngs(v1_case)
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in expected]
    for png in expected:
        assert_png_close(tmp_path / png.name, png)


def _library_run(case_id: str):
    """The case through the library: (explanation, resolved labels) at the case's options."""
    from gradcam_core import image as imageops
    from gradcam_core.run.classification import label_classes
    from gradcam_core.tasks.classify import explain_classes, load_classifier

    _, args = oracle_args(case_id, Path("unused"))
    opt = dict(zip(args[::2], args[1::2]))
    net = load_classifier(Path(opt["-proto_file"]), Path(opt["-model_file"]))
    size = int(opt.get("-input_sz", 224))
    image = imageops.preprocess(opt["-input_image_path"], size, size)[None]
    expl, indices = explain_classes(net, image, opt.get("-layer_name", "relu5_3"), label_classes([int(opt["-label"])]))
    return expl, [[i + 1 for i in per_image] for per_image in indices]  # 1-based labels, as the oracle's


@pytest.mark.parametrize("case_id", V1_CASES)
def test_scores_and_raw_maps_match_the_original(case_id):
    expl, labels = _library_run(case_id)
    assert labels[0][0] == int(oracle_tensor(case_id, "grad_label")[0])
    assert_rel_close(expl.scores[0].numpy(), oracle_tensor(case_id, "scores"), what="scores")
    assert_rel_close(expl.cam_raw[0, 0].numpy(), oracle_tensor(case_id, "gcam_raw"), what="gcam_raw")
    full = {name: oracle_tensor(case_id, name) for name in ("gcam_scaled", "gb_rgb_raw", "gb_gcam_raw")}
    if full["gcam_scaled"] is not None:
        gb_rgb = expl.guided[0, 0].flip(0)
        assert_rel_close(expl.cam[0, 0].numpy(), full["gcam_scaled"], what="gcam_scaled")
        assert_rel_close(gb_rgb.numpy(), full["gb_rgb_raw"], what="gb_rgb_raw")
        assert_rel_close(expl.guided_cam[0, 0].flip(0).numpy(), full["gb_gcam_raw"], what="gb_gcam_raw")


def test_conv_layer_name_uses_the_rectified_activations_as_the_original():
    """-layer_name conv5_3: the original's in-place ReLU had overwritten conv5_3's output."""
    expl, _ = _library_run("cls_v1_catdog_l8_conv5_3")
    assert float(expl.activations.min()) >= 0.0


@pytest.mark.slow  # the same run as test_batch.py's label list
def test_several_labels_in_one_run_equal_single_runs(tmp_path):
    both = run_script("classification.py", *MINI, "-label", "3,5", "-out_path", str(tmp_path / "both"))
    assert both.returncode == 0, both.stderr
    for case in ("cls_v1_catdog_l3_hm", "cls_v1_catdog_pred_hm"):  # labels 3 and 5 at relu5_3
        for png in oracle_pngs(case):
            assert_png_close(tmp_path / "both" / png.name, png)
    assert len(list((tmp_path / "both").iterdir())) == 6


def test_grouped_convolutions_work(tmp_path):
    """The original (loadcaffe, nn backend) cut this net at the first grouped conv and crashed."""
    result = run_script(
        "classification.py", "-proto_file", str(DATA / "models/mini_alexnet_grouped.prototxt"),
        "-model_file", str(DATA / "models/mini_alexnet_grouped.caffemodel"), "-input_sz", "227",
        "-layer_name", "relu5", "-label", "2", "-out_path", str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "classify_gb_2.png", "classify_gb_gcam_2.png", "classify_gcam_hm_2.png"]


def _bad_files(tmp: Path) -> dict[str, Path]:
    """Broken model files made from the mini VGG-16."""
    proto = (DATA / "models/mini_vgg16_v1.prototxt").read_text()
    model = (DATA / "models/mini_vgg16_v1.caffemodel").read_bytes()
    files = {
        "truncated": model[: len(model) // 3],
        "syntax": proto.replace('name: "conv1_2"', 'name: "conv1_2', 1),
        "unknown_type": proto.replace("type: RELU", "type: WARP", 1),
        "shape": proto.replace("num_output: 4", "num_output: 5", 1),
        "garbage": bytes(range(256)) * 40,
    }
    out = {}
    for name, content in files.items():
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        out[name] = path
    (tmp / "not_an_image.jpg").write_text("this is text, not a JPEG\n")
    out["image"] = tmp / "not_an_image.jpg"
    return out


BAD = {
    "missing proto": (lambda f: ["-proto_file", "/nonexistent/x.prototxt"], r"-proto_file: /nonexistent/x.prototxt not found"),
    "missing default model": (lambda f: [], r"not found; run scripts/download_models.sh"),
    "truncated caffemodel": (lambda f: ["-model_file", str(f["truncated"])], r"truncated"),
    "garbage caffemodel": (lambda f: ["-model_file", str(f["garbage"])], r"garbage"),
    "prototxt syntax": (lambda f: ["-proto_file", str(f["syntax"])], r"syntax:\d+:"),
    "unknown layer type": (lambda f: ["-proto_file", str(f["unknown_type"])], r"relu1_1.*WARP"),
    "blob shape": (lambda f: ["-proto_file", str(f["shape"])], r"conv1_1.*expected.*got"),
    "unknown layer name": (lambda f: ["-layer_name", "relu9_9"], r"unknown layer 'relu9_9'.*30=relu5_3"),
    "label out of range": (lambda f: ["-label", "11"], r"-label 11 .*out of range: the model has 10 outputs"),
    "label zero": (lambda f: ["-label", "0"], r"labels are 1-based"),
    "not an image": (lambda f: ["-input_image_path", str(f["image"])], r"not_an_image.jpg"),
    "no gpu": (lambda f: ["-gpuid", "0"], r"-gpuid 0 asks for a GPU, but CUDA is not available"),
    "unknown option": (lambda f: ["-lable", "3"], r"unknown option -lable"),
    "bad number": (lambda f: ["-input_sz", "big"], r"-input_sz must be a number"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path):
    if case == "no gpu" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if case == "missing default model" and (ROOT / "models/VGG_ILSVRC_16_layers.caffemodel").exists():
        pytest.skip("the real models are installed")
    make_args, pattern = BAD[case]
    args = make_args(_bad_files(tmp_path))
    base = [] if case == "missing default model" else MINI
    out = tmp_path / "out"
    result = run_script("classification.py", *overriding(*base, *args, "-out_path", str(out)), cwd=tmp_path)
    assert_refused(result, out, pattern)


def test_help_lists_the_lua_options():
    result = run_script("classification.py", "--help")
    assert result.returncode == 0
    for option in ("proto_file", "model_file", "input_sz", "backend", "layer_name", "input_image_path",
                   "output_image_name", "label", "save_as_heatmap", "seed", "gpuid", "out_path"):
        assert f"--{option}" in result.stdout + result.stderr  # fire shows help on stderr


def test_defaults_are_the_original_ones():
    import importlib.util
    import inspect

    spec = importlib.util.spec_from_file_location("classification_entry", ROOT / "classification.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    defaults = {k: v.default for k, v in inspect.signature(module.main).parameters.items()}
    assert defaults == {
        "proto_file": "models/VGG_ILSVRC_16_layers_deploy.prototxt",
        "model_file": "models/VGG_ILSVRC_16_layers.caffemodel",
        "input_sz": 224, "backend": "nn", "layer_name": "relu5_3",
        "input_image_path": "images/cat_dog.jpg", "output_image_name": "", "label": -1,
        "save_as_heatmap": 1, "seed": 123, "gpuid": -1, "out_path": "output/",
        "batch_size": 8,  # ours (folder and glob mode), after the Lua options
        # ours: the model's format, class names and preprocessing ("" = the format's own)
        "arch": "", "synset_file": "", "preprocess": "", "mean_value": "", "mean_file": "",
        "input_scale": "", "channel_order": "",
        "save_overlay": 0,  # ours: the original's three files by default
        "method": "gradcam", "counterfactual": 0, "aug_smooth": 0, "eigen_smooth": 0,  # ours: the original's method
        "layer_layout": "auto",  # ours: the layer's layout recognised from its shape
    }
