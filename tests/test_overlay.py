"""``-save_overlay 1``: one more file per target, ``<prefix>_overlay_<name>.png``, the colour heatmap of the
gcam file's map blended half and half over the image as the net saw it.

The overlay's pixels are checked against the formula computed here from the CLI's own heatmap file
(decoded back to [0, 1]) and the image before preprocessing (``load_rgb``, checked against the oracle's
preprocessed inputs elsewhere): ``trunc(255 * (0.5 * rgb + 0.5 * heatmap))``, within one grey level
(the heatmap file itself is truncated to bytes). With the option off the run's files are the same
bytes as before, and the batch loop hands the explainer the same input tensors either way.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURE_ARGS, ROOT, assert_refused, read_png, run_script

from gradcam_core.image.preprocessing import Preprocessing, load_input, load_rgb
from gradcam_core.run.batches import ImageOutput, explain_images
from gradcam_core.run.inputs import find_images

CLS = FIXTURE_ARGS["classification.py"]
VQA = FIXTURE_ARGS["visual_question_answering.py"]
CAP = FIXTURE_ARGS["captioning.py"]
CAT_DOG = ROOT / "images" / "cat_dog.jpg"
BATHROOM = ROOT / "images" / "bathroom.jpg"
KINDS = ("gcam_hm", "gb", "gb_gcam")


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def expected_overlay(image: Path, heatmap_png: Path, size: int = 224, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """The overlay by its formula: half the image (as the net saw it, before preprocessing), half the
    heatmap file's colours, truncated to bytes; (H, W, 3) int16."""
    rgb = load_rgb(image, size, size, dtype).permute(1, 2, 0).double().numpy()
    heat = read_png(heatmap_png).astype(np.float64) / 255
    assert heat.shape == rgb.shape, (heat.shape, rgb.shape)
    return np.floor(255 * (0.5 * rgb + 0.5 * heat)).astype(np.int16)


def assert_overlay(overlay_png: Path, image: Path, heatmap_png: Path, dtype: torch.dtype = torch.float32) -> None:
    got, want = read_png(overlay_png), expected_overlay(image, heatmap_png, dtype=dtype)
    assert got.shape == want.shape, (overlay_png.name, got.shape, want.shape)
    diff = np.abs(got - want)
    assert diff.max() <= 1, (overlay_png.name, int(diff.max()), float((diff > 1).mean()))


def run_ok(script: str, *args: str) -> str:
    result = run_script(script, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


# ------------------------------------------------------------------------------------ classification


def test_classification_writes_one_overlay_per_target_equal_to_its_formula(tmp_path):
    out = tmp_path / "out"
    run_ok("classification.py", *CLS, "-input_image_path", str(CAT_DOG), "-label", "3", "-save_overlay", "1",
           "-out_path", str(out))
    assert sorted(files(out)) == sorted([f"classify_{kind}_3.png" for kind in KINDS] + ["classify_overlay_3.png"])
    assert_overlay(out / "classify_overlay_3.png", CAT_DOG, out / "classify_gcam_hm_3.png")


@pytest.mark.slow  # three CLI runs; the default run's bytes are the oracle tests'
def test_without_the_option_no_overlay_and_the_other_files_are_the_same_bytes(tmp_path):
    common = [*CLS, "-input_image_path", str(CAT_DOG), "-label", "3,-1"]
    run_ok("classification.py", *common, "-out_path", str(tmp_path / "default"))
    run_ok("classification.py", *common, "-save_overlay", "0", "-out_path", str(tmp_path / "zero"))
    run_ok("classification.py", *common, "-save_overlay", "1", "-out_path", str(tmp_path / "overlay"))
    default, zero, overlay = (files(tmp_path / name) for name in ("default", "zero", "overlay"))
    assert not any("overlay" in name for name in default)
    assert zero == default
    extra = {name: data for name, data in overlay.items() if name not in default}
    assert sorted(extra) == ["classify_overlay_3.png", "classify_overlay_5.png"]  # 5: the fixture's prediction
    assert {name: overlay[name] for name in default} == default


@pytest.mark.slow  # a CLI run; one overlay per target: the VQA and captioning tests below
def test_several_labels_give_one_overlay_each_from_its_own_map(tmp_path):
    out = tmp_path / "out"
    run_ok("classification.py", *CLS, "-input_image_path", str(CAT_DOG), "-label", "1,2", "-save_overlay", "1",
           "-out_path", str(out))
    assert sorted(n for n in files(out) if "overlay" in n) == ["classify_overlay_1.png", "classify_overlay_2.png"]
    for label in (1, 2):
        assert_overlay(out / f"classify_overlay_{label}.png", CAT_DOG, out / f"classify_gcam_hm_{label}.png")
    assert files(out)["classify_overlay_1.png"] != files(out)["classify_overlay_2.png"]


@pytest.mark.slow  # two CLI runs
def test_the_overlay_is_the_colour_heatmap_with_save_as_heatmap_0_too(tmp_path):
    common = [*CLS, "-input_image_path", str(CAT_DOG), "-label", "3", "-save_overlay", "1"]
    run_ok("classification.py", *common, "-save_as_heatmap", "0", "-out_path", str(tmp_path / "grey"))
    run_ok("classification.py", *common, "-out_path", str(tmp_path / "colour"))
    grey, colour = files(tmp_path / "grey"), files(tmp_path / "colour")
    assert sorted(grey) == sorted(["classify_gcam_3.png", "classify_gb_3.png", "classify_gb_gcam_3.png",
                                   "classify_overlay_3.png"])
    assert grey["classify_overlay_3.png"] == colour["classify_overlay_3.png"]


def test_folder_mode_gives_each_image_its_own_overlay(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    images = {"cat_dog.jpg": CAT_DOG, "bathroom.jpg": BATHROOM}
    for name, source in images.items():
        shutil.copy(source, folder / name)
    out = tmp_path / "out"
    # both images in one batch: each overlay must be drawn on its own image
    run_ok("classification.py", *CLS, "-input_image_path", str(folder), "-label", "3", "-batch_size", "2",
           "-save_overlay", "1", "-out_path", str(out))
    for name, source in images.items():
        assert sorted(files(out / name)) == sorted([f"classify_{k}_3.png" for k in KINDS] + ["classify_overlay_3.png"])
        assert_overlay(out / name / "classify_overlay_3.png", source, out / name / "classify_gcam_hm_3.png")


@pytest.mark.parametrize("script,args,value", [
    *(("classification.py", CLS, value) for value in ("2", "abc", "-1", "0.5")),
    ("visual_question_answering.py", VQA, "2"), ("captioning.py", CAP, "abc")])
def test_a_bad_save_overlay_is_one_line_exit_2(tmp_path, script, args, value):
    out = tmp_path / "out"
    result = run_script(script, *args, "-input_image_path", str(CAT_DOG), "-save_overlay", value,
                        "-out_path", str(out))
    assert_refused(result, out, r"-save_overlay")


# ------------------------------------------------------------------------------------- VQA, captioning


def test_vqa_writes_an_overlay_per_answer_named_by_it(tmp_path):
    out = tmp_path / "out"
    stdout = run_ok("visual_question_answering.py", *VQA, "-input_image_path", str(CAT_DOG), "-question",
                    "What animal?", "-answer", "dog,", "-save_overlay", "1", "-out_path", str(out))
    answers = re.findall(r"^Grad-CAM answer: \t(.*)$", stdout, re.M)
    assert answers == ["dog"]
    assert sorted(files(out)) == sorted(f"vqa_{kind}_dog.png" for kind in (*KINDS, "overlay"))
    assert_overlay(out / "vqa_overlay_dog.png", CAT_DOG, out / "vqa_gcam_hm_dog.png", torch.float64)


def test_captioning_writes_an_overlay_per_caption_named_by_it(tmp_path):
    out = tmp_path / "out"
    stdout = run_ok("captioning.py", *CAP, "-input_image_path", str(CAT_DOG), "-caption", '["a dog", ""]',
                    "-save_overlay", "1", "-out_path", str(out))
    captions = re.findall(r"^Grad-CAM caption: \t(.*)$", stdout, re.M)
    assert len(captions) == 2 and captions[0] == "a dog", captions
    assert sorted(n for n in files(out) if "overlay" in n) == sorted(f"caption_overlay_{c}.png" for c in set(captions))
    for caption in captions:
        assert_overlay(out / f"caption_overlay_{caption}.png", CAT_DOG, out / f"caption_gcam_hm_{caption}.png")


# ------------------------------------------------------------------------------------- the batch loop


@pytest.mark.parametrize("prep,dtype", [(None, torch.float32), (Preprocessing.torchvision_imagenet(), torch.float32),
                                        (None, torch.float64)])
def test_the_batch_loop_gives_the_same_inputs_with_or_without_the_rgbs(tmp_path, prep, dtype):
    folder = tmp_path / "photos"
    folder.mkdir()
    for source in (CAT_DOG, BATHROOM):
        shutil.copy(source, folder / source.name)
    seen: dict[bool, list] = {}
    for keep in (False, True):
        inputs = find_images("input_image_path", str(folder), tmp_path / f"out_{keep}")
        calls = seen.setdefault(keep, [])

        def explain_batch(images, rgbs, calls=calls):
            calls.append((images, rgbs))
            return [ImageOutput([], []) for _ in range(images.shape[0])]

        explain_images(inputs, 2, 32, explain_batch, dtype=dtype, preprocessing=prep, keep_rgb=keep, log=lambda s: None)
    (plain, none), = seen[False]
    (images, rgbs), = seen[True]
    assert none is None
    assert torch.equal(plain, images) and images.dtype == dtype
    ordered = sorted([BATHROOM.name, CAT_DOG.name])
    for n, name in enumerate(ordered):  # each rgb is its own image's, and preprocesses to its input
        assert torch.equal(rgbs[n], load_rgb(folder / name, 32, 32, dtype))
        assert torch.equal(images[n], load_input(folder / name, 32, 32, prep, dtype))
