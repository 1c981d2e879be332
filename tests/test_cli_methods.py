"""``-method`` and its modifiers in the three scripts, as a user runs them: every task and model format
(classification on a Caffe net, an ONNX net and a torchvision one; VQA; captioning) writes each
method's files under its token, the Grad-CAM files of a method list are byte for byte the default
run's, ``-counterfactual 1`` never overwrites the original's files, folders, batches and torchrun ranks
take a method list as they take one method, and every registered method runs on the VQA and captioning
fixtures.

The second method is a test-only one (``tests/mean_cam.py``: the mean activation, ``test-mean+``, token
``test-meanp``) registered in the script's process by a wrapper script, so these tests do not depend on
which methods the registry holds.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cli_runner
import numpy as np
import pytest
import torch
from conftest import DATA, FIXTURE_ARGS, ROOT, assert_png_close, assert_refused, read_png
from mean_cam import NAME, TOKEN, mean_map, wrapper_script

from gradcam_core.engine.methods import method_names

MODELS = DATA / "models"
SQUEEZE = ROOT / "models" / "squeezenet1_1"
IMAGE = ROOT / "images" / "cat_dog.jpg"
MINI_PROTO, MINI_MODEL = MODELS / "mini_vgg16_v1.prototxt", MODELS / "mini_vgg16_v1.caffemodel"
SCRIPTS = ("classification.py", "visual_question_answering.py", "captioning.py")


@pytest.fixture(scope="module")
def cli() -> cli_runner.PrewarmedCLI:
    return cli_runner.shared()


@pytest.fixture(scope="module")
def wrappers(tmp_path_factory) -> dict[str, str]:
    """Each entry script behind a wrapper that registers the test method first."""
    folder = tmp_path_factory.mktemp("wrappers")
    return {script: wrapper_script(folder, script) for script in SCRIPTS}


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    """The mini VGG-16 converted to ONNX (its Caffe layer names, preprocessing and size in the file)."""
    pytest.importorskip("onnx")
    from gradcam_core.convert import caffe_to_onnx

    return caffe_to_onnx(MINI_PROTO, MINI_MODEL, tmp_path_factory.mktemp("onnx") / "mini_vgg16.onnx")


def task_case(task: str, onnx_model: Path | None = None) -> tuple[str, list[str], str, str]:
    """(script, its model and target options, the files' prefix, the target's name in them)."""
    if task == "caffe":
        return "classification.py", [*FIXTURE_ARGS["classification.py"], "-label", "3"], "classify", "3"
    if task == "onnx":
        return "classification.py", ["-model_file", str(onnx_model), "-label", "3"], "classify", "3"
    if task == "torchvision":
        return ("classification.py", ["-arch", "squeezenet1_1", "-model_file", str(SQUEEZE / "squeezenet1_1.pth"),
                                      "-label", "243"], "classify", "243")
    if task == "vqa":
        return "visual_question_answering.py", [*FIXTURE_ARGS["visual_question_answering.py"], "-answer", "dog"], "vqa", "dog"
    return "captioning.py", [*FIXTURE_ARGS["captioning.py"], "-caption", "a dog"], "caption", "a dog"


def run(cli, script: str, out: Path, *args: str, image: Path = IMAGE, timeout: float = 300):
    return cli.run(script, "-input_image_path", str(image), *args, "-out_path", f"{out}/", timeout=timeout)


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def method_files(prefix: str, token: str, name: str, *, heatmap: bool = True) -> set[str]:
    """A method's own files for one target (guided backprop, shared, is not one of them)."""
    return {f"{prefix}_{token}_hm_{name}.png" if heatmap else f"{prefix}_{token}_{name}.png",
            f"{prefix}_gb_{token}_{name}.png"}


# ------------------------------------------------------------------------------------ every task


# one CLI run each (3-4 s for onnx, torchvision, vqa: slow; caffe and captioning stay quick, and the web
# tests give the VQA files of a method)
@pytest.mark.parametrize("task", ["caffe", pytest.param("onnx", marks=pytest.mark.slow),
                                  pytest.param("torchvision", marks=pytest.mark.slow),
                                  pytest.param("vqa", marks=pytest.mark.slow), "captioning"])
def test_a_method_list_adds_each_methods_files_and_keeps_gradcams_bytes(cli, wrappers, onnx_model, tmp_path, task):
    script, args, prefix, name = task_case(task, onnx_model)
    default = run(cli, script, tmp_path / "default", *args)
    assert default.returncode == 0, default.stderr
    listed = run(cli, wrappers[script], tmp_path / "listed", *args, "-method", f"gradcam,{NAME}")
    assert listed.returncode == 0, listed.stderr
    want, got = files(tmp_path / "default"), files(tmp_path / "listed")
    assert sorted(want) == sorted(f"{prefix}_{kind}_{name}.png" for kind in ("gcam_hm", "gb", "gb_gcam"))
    assert set(got) == set(want) | method_files(prefix, TOKEN, name)
    assert {k: got[k] for k in want} == want  # Grad-CAM's files: the default run's, byte for byte
    assert listed.stdout == default.stdout  # the lines do not depend on the methods
    # the test method's heatmap is not Grad-CAM's, and its guided map is guided backprop x its own map
    assert got[f"{prefix}_{TOKEN}_hm_{name}.png"] != got[f"{prefix}_gcam_hm_{name}.png"]


def test_the_methods_map_is_the_one_written(cli, wrappers, tmp_path):
    """The test method's file is the mean activation at relu5_3, computed here from a plain forward of
    the net (scaled and rendered as the scripts render a map): the method's map reaches its own file."""
    from gradcam_core import image as imageops
    from gradcam_core.image.resize import scale
    from gradcam_core.run.outputs import render_map
    from gradcam_core.tasks.classify import load_classifier

    script, args, prefix, name = task_case("caffe")
    result = run(cli, wrappers[script], tmp_path, *args, "-method", NAME)
    assert result.returncode == 0, result.stderr
    net = load_classifier(MINI_PROTO, MINI_MODEL)
    seen = {}
    handle = net.resolve_layer("relu5_3")[1].register_forward_hook(lambda m, i, o: seen.setdefault("a", o.detach()))
    try:
        with torch.no_grad():
            net(imageops.preprocess(str(IMAGE), 224, 224)[None])
    finally:
        handle.remove()
    cam = scale(mean_map(seen["a"], 1), 224, 224)[0, 0]
    (tmp_path / "expected.png").write_bytes(render_map(prefix, TOKEN, name, cam).png)
    assert_png_close(tmp_path / f"{prefix}_{TOKEN}_hm_{name}.png", tmp_path / "expected.png", max_diff=1)
    assert sorted(p.name for p in tmp_path.glob(f"{prefix}_*")) == sorted(
        {f"{prefix}_gb_{name}.png"} | method_files(prefix, TOKEN, name))


def test_the_grey_map_and_the_overlay_of_another_method(cli, wrappers, tmp_path):
    script, args, prefix, name = task_case("caffe")
    result = run(cli, wrappers[script], tmp_path, *args, "-method", f"{NAME},gradcam", "-save_as_heatmap", "0",
                 "-save_overlay", "1")
    assert result.returncode == 0, result.stderr
    assert set(files(tmp_path)) == {
        f"{prefix}_gcam_{name}.png", f"{prefix}_gb_{name}.png", f"{prefix}_gb_gcam_{name}.png",
        f"{prefix}_overlay_{name}.png", *method_files(prefix, TOKEN, name, heatmap=False),
        f"{prefix}_overlay_{TOKEN}_{name}.png"}


def test_counterfactual_files_never_overwrite_the_originals(cli, wrappers, tmp_path):
    """``-counterfactual 1``: Grad-CAM's token is gradcam_cf and guided backprop gb_cf (both are of the
    negated score); the files are the library's explain(counterfactual=True) rendered."""
    from gradcam_core import image as imageops
    from gradcam_core.engine import explain
    from gradcam_core.run.outputs import render_guided, render_map
    from gradcam_core.tasks.classify import load_classifier

    script, args, prefix, name = task_case("caffe")
    out = tmp_path / "out"
    result = run(cli, wrappers[script], out, *args, "-counterfactual", "1", "-save_overlay", "1",
                 "-method", f"gradcam,{NAME}")
    assert result.returncode == 0, result.stderr
    got = files(out)
    assert set(got) == {f"{prefix}_gradcam_cf_hm_{name}.png", f"{prefix}_gb_cf_{name}.png",
                        f"{prefix}_gb_gradcam_cf_{name}.png", f"{prefix}_overlay_gradcam_cf_{name}.png",
                        *method_files(prefix, f"{TOKEN}_cf", name), f"{prefix}_overlay_{TOKEN}_cf_{name}.png"}
    net = load_classifier(MINI_PROTO, MINI_MODEL)
    expl = explain(net, imageops.preprocess(str(IMAGE), 224, 224)[None], "relu5_3", [2], counterfactual=True)
    assert got[f"{prefix}_gradcam_cf_hm_{name}.png"] == render_map(prefix, "gradcam_cf", name, expl.cam[0, 0]).png
    assert got[f"{prefix}_gb_cf_{name}.png"] == render_guided(prefix, "gb_cf", name, expl.guided[0, 0]).png
    plain = run(cli, script, tmp_path / "plain", *args)
    assert plain.returncode == 0, plain.stderr
    assert files(tmp_path / "plain")[f"{prefix}_gb_{name}.png"] != got[f"{prefix}_gb_cf_{name}.png"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_unknown_method_is_one_line_naming_the_known_ones(cli, tmp_path, script):
    out = tmp_path / "out"
    result = run(cli, script, out, *FIXTURE_ARGS[script], "-method", "gradcam,nope")
    known = ", ".join(method_names())
    assert_refused(result, out, rf"-method 'nope': unknown CAM method 'nope'; the methods are: {re.escape(known)}$")


@pytest.mark.parametrize("switch", ["counterfactual", "aug_smooth", "eigen_smooth"])
def test_a_modifier_is_a_0_1_switch(cli, tmp_path, switch):
    out = tmp_path / "out"
    assert_refused(run(cli, "captioning.py", out, *FIXTURE_ARGS["captioning.py"], f"-{switch}", "2"), out,
                   rf"-{switch} 2: expected 0 or 1")


def test_help_lists_every_method_with_its_summary(cli, wrappers):
    from gradcam_core.engine.methods import lookup

    for script in SCRIPTS:
        shown = cli.run(script, "--help", timeout=120)
        text = shown.stdout + shown.stderr  # fire shows the help on stderr when it is not a terminal
        assert shown.returncode == 0 and "{cam_methods}" not in text, script
        for method in method_names():
            assert f"    {method}: {lookup(method).summary}" in text, (script, method)
        assert "--method=METHOD" in text and "--counterfactual=COUNTERFACTUAL" in text
    shown = cli.run(wrappers["captioning.py"], "--help", timeout=120)
    assert f"{NAME}: Mean activation" in shown.stdout + shown.stderr


# ------------------------------------------------------------------------- folders, batches, ranks


def folder_of_images(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for name, where in (("cat_dog.jpg", ""), ("tabbycat_dog.jpg", ""), ("firehydrants.jpg", "more")):
        shutil.copy(ROOT / "images" / name, folder / where / name)
    return folder


@pytest.mark.parametrize("task", ["caffe", "captioning"])
def test_a_folder_in_batches_with_a_method_list(cli, wrappers, tmp_path, task):
    """Three images, two to a batch: each image's folder holds both methods' files, and its Grad-CAM
    files are those of the default run with the same batches."""
    script, args, prefix, name = task_case(task)
    folder = folder_of_images(tmp_path)
    default = run(cli, script, tmp_path / "default", *args, "-batch_size", "2", image=folder)
    listed = run(cli, wrappers[script], tmp_path / "listed", *args, "-batch_size", "2",
                 "-method", f"{NAME},gradcam", image=folder)
    assert default.returncode == 0 and listed.returncode == 0, (default.stderr, listed.stderr)
    want, got = files(tmp_path / "default"), files(tmp_path / "listed")
    images = ("cat_dog.jpg", "tabbycat_dog.jpg", "more/firehydrants.jpg")
    assert sorted(want) == sorted(f"{image}/{prefix}_{kind}_{name}.png" for image in images
                                  for kind in ("gcam_hm", "gb", "gb_gcam"))
    assert set(got) == set(want) | {f"{image}/{f}" for image in images for f in method_files(prefix, TOKEN, name)}
    assert {k: got[k] for k in want} == want
    assert listed.stdout == default.stdout


@pytest.mark.slow
def test_torchrun_ranks_with_a_method_list_give_the_single_process_files(wrappers, tmp_path):
    """Two CPU ranks against one process (both with OMP_NUM_THREADS=1, what torchrun gives a rank),
    the test method and Grad-CAM from one forward per batch, byte for byte."""
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    folder = folder_of_images(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script, args, prefix, name = task_case("caffe")
    args = [*args, "-input_image_path", str(folder), "-batch_size", "1", "-method", f"gradcam,{NAME}"]
    ranks = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         wrappers[script], *args, "-out_path", str(tmp_path / "ranks")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    if re.search(r"DistNetworkError|RendezvousConnectionError|Address already in use|Connection refused", ranks.stderr):
        pytest.skip(f"torchrun cannot rendezvous on this machine: {ranks.stderr.strip().splitlines()[-1]}")
    assert ranks.returncode == 0 and "Traceback" not in ranks.stderr, ranks.stderr
    one = subprocess.run([sys.executable, wrappers[script], *args, "-out_path", str(tmp_path / "one")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr
    want = files(tmp_path / "one")
    assert len(want) == 3 * 5 and files(tmp_path / "ranks") == want


# ---------------------------------------------------------------------------- every registered method


# VQA: slow (2 s); captioning keeps every method on a Torch7 task in the quick run
@pytest.mark.parametrize("task", [pytest.param("vqa", marks=pytest.mark.slow), "captioning"])
def test_every_registered_method_runs_on_the_fixture(cli, tmp_path, task):
    """All the registry's methods in one run (one forward), with the predicted answer or the generated
    caption: each writes its map and guided map (finite, or the image would be skipped with a line);
    Grad-CAM's is no flat image. (Another method's map may be all zero on these random fixtures, e.g.
    Ablation-CAM's where every channel's removal raises the score.)"""
    script, args, prefix, name = task_case(task)
    args = [a for a in args if a not in ("-answer", "dog", "-caption", "a dog")]
    names = method_names()
    result = run(cli, script, tmp_path, *args, "-method", ",".join(names), "-batch_size", "16")
    assert result.returncode == 0, result.stderr
    target = {"vqa": r"Grad-CAM answer: \t(.+)", "captioning": r"Grad-CAM caption: \t(.+)"}[task]
    explained = re.search(target, result.stdout).group(1)
    written = set(files(tmp_path))
    from gradcam_core.run.task import method_token

    for method in names:
        token = method_token(method)
        for file in (f"{prefix}_{token}_hm_{explained}.png", f"{prefix}_gb_{token}_{explained}.png"):
            assert file in written, (method, sorted(written))
            pixels = read_png(tmp_path / file)
            assert pixels.shape[:2] == (224, 224), (method, file)
            assert np.ptp(pixels) > 0 or method != "gradcam", file


def test_the_registrys_methods_by_their_tokens_are_the_librarys_maps(cli, tmp_path):
    """Grad-CAM++, element-wise Grad-CAM and Eigen-CAM (a map without a target) with Grad-CAM, for two
    labels: each method's files carry its token (``+`` as ``p``), and their pixels are the library's
    explain(method=[...]) rendered."""
    from gradcam_core import image as imageops
    from gradcam_core.engine import explain
    from gradcam_core.run.outputs import render_guided_map, render_map
    from gradcam_core.run.task import method_token
    from gradcam_core.tasks.classify import load_classifier

    names = [n for n in ("gradcam++", "gradcam-elementwise", "eigencam") if n in method_names()]
    if not names:
        pytest.skip("none of these methods is registered")
    assert method_token("gradcam++") == "gradcampp" and method_token("gradcam-elementwise") == "gradcam-elementwise"
    script, args, prefix, _ = task_case("caffe")
    args = [a for a in args if a not in ("-label", "3")]
    result = run(cli, script, tmp_path, *args, "-label", "3,5", "-method", ",".join(["gradcam", *names]))
    assert result.returncode == 0, result.stderr
    got = files(tmp_path)
    net = load_classifier(MINI_PROTO, MINI_MODEL)
    expls = explain(net, imageops.preprocess(str(IMAGE), 224, 224)[None], "relu5_3", [2, 4],
                    method=["gradcam", *names])
    assert set(got) == {f"{prefix}_{kind}_{label}.png" for kind in ("gcam_hm", "gb", "gb_gcam") for label in (3, 5)} | {
        f for n in names for label in (3, 5) for f in method_files(prefix, method_token(n), str(label))}
    for n in names:
        token, expl = method_token(n), expls[n]
        for k, label in enumerate(("3", "5")):
            assert got[f"{prefix}_{token}_hm_{label}.png"] == render_map(prefix, token, label, expl.cam[0, k]).png, n
            assert got[f"{prefix}_gb_{token}_{label}.png"] == render_guided_map(
                prefix, token, label, expl.guided[0, k], expl.cam[0, k]).png, n
