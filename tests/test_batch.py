"""Several targets and many images in one run: multi-target runs, folder and glob mode, batches,
torchrun shards, and the selection / sharding / naming rules of ``gradcam_core.batch``.

Folder and glob runs are compared with single-image runs of the same script (its ``main`` called in
this process, one image at a time): within one grey level in batches (BLAS rounds a batch's fully
connected layers differently), byte for byte with ``-batch_size 1``; a torchrun run equals the
one-process run byte for byte (every image falls in the same batch). Multi-target runs are compared with
the oracle's single-target files.
"""
from __future__ import annotations

import fcntl
import importlib.util
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable
from pathlib import Path, PurePath

import numpy as np
import pytest
import torch
from conftest import CASES, DATA, ROOT, assert_png_close, assert_refused, read_png, run_script

from gradcam_core import GradCamError
from gradcam_core.cli.options import as_int_list, as_str_list
from gradcam_core.run import inputs as batch
from gradcam_core.run.shards import Shard

MODELS = DATA / "models"
CLS = ["-proto_file", str(MODELS / "mini_vgg16_v1.prototxt"),
       "-model_file", str(MODELS / "mini_vgg16_v1.caffemodel")]
VQA = ["-proto_file", str(MODELS / "mini_vgg19_v1.prototxt"), "-model_file", str(MODELS / "mini_vgg19_v1.caffemodel"),
       "-model_path", str(DATA / "VQA_LSTM_CNN" / "lstm.t7"), "-vocab_file", str(DATA / "VQA_LSTM_CNN" / "data_prepro.json"),
       "-input_encoding_size", "6", "-rnn_size", "8", "-rnn_layers", "2", "-common_embedding_size", "16",
       "-num_output", "10"]
CAP = ["-model_path", str(DATA / "neuraltalk2" / "mini_caption_model.t7")]
CAT_DOG = str(ROOT / "images" / "cat_dog.jpg")


# ------------------------------------------------------------------------------------------- helpers


def script_main(script: str) -> Callable[..., None]:
    """The ``main`` of an entry script (what fire calls), for single-image reference runs in-process."""
    spec = importlib.util.spec_from_file_location(script.replace(".py", "_entry"), ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def single_runs(script: str, options: list[str], images: dict[str, Path], out: Path) -> None:
    """Run ``script`` on each image alone, writing into ``out/<relative path>/`` (what folder mode
    should reproduce)."""
    main = script_main(script)
    kwargs = dict(zip((o.lstrip("-") for o in options[::2]), options[1::2]))
    for rel, path in images.items():
        main(**kwargs, input_image_path=str(path), out_path=str(out / rel))


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_tree(actual: Path, expected: Path) -> None:
    got, want = tree(actual), tree(expected)
    assert sorted(got) == sorted(want)
    differing = [name for name in want if got[name] != want[name]]
    assert not differing, f"PNGs differing from single-image runs: {differing}"


def assert_close_tree(actual: Path, expected: Path) -> None:
    """The same files, each PNG within one grey level (BLAS rounds a batch's fully connected layers
    differently from a single image's) and at most 0.5% of its values off at all."""
    got, want = tree(actual), tree(expected)
    assert sorted(got) == sorted(want)
    for name in want:
        a, e = read_png(actual / name), read_png(expected / name)
        diff = np.abs(a - e)
        assert diff.max() <= 1 and (diff > 0).mean() <= 0.005, (name, diff.max(), (diff > 0).mean())


def photo_folder(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """The four project images in a folder (one in a subfolder, with an upper-case extension), plus a
    text file posing as a JPEG and a truncated JPEG. Returns (folder, good images by relative path)."""
    folder = tmp_path / "photos"
    (folder / "indoor").mkdir(parents=True)
    good = {
        "cat_dog.jpg": folder / "cat_dog.jpg",
        "firehydrants.jpg": folder / "firehydrants.jpg",
        "indoor/Bathroom.JPG": folder / "indoor" / "Bathroom.JPG",
        "tabbycat_dog.jpg": folder / "tabbycat_dog.jpg",
    }
    for rel, path in good.items():
        shutil.copy(ROOT / "images" / Path(rel).name.lower(), path)
    (folder / "broken.jpg").write_text("this is text, not a JPEG\n")
    jpeg = (ROOT / "images" / "cat_dog.jpg").read_bytes()
    (folder / "indoor" / "truncated.jpeg").write_bytes(jpeg[: len(jpeg) // 2])
    return folder, good


def oracle(case: str, name: str) -> Path:
    return CASES / case / name


# --------------------------------------------------------------------------- several targets, one run


def test_label_list_from_fire_equals_the_single_label_oracles(tmp_path):
    out = tmp_path / "out"
    result = run_script("classification.py", *CLS, "--label=[3, 5]", "-out_path", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"classify_{kind}_{label}.png" for kind in ("gcam_hm", "gb", "gb_gcam") for label in (3, 5))
    for case, label in (("cls_v1_catdog_l3_hm", 3), ("cls_v1_catdog_pred_hm", 5)):  # relu5_3, heatmaps
        for kind in ("gcam_hm", "gb", "gb_gcam"):
            name = f"classify_{kind}_{label}.png"
            assert_png_close(out / name, oracle(case, name))


def test_several_answers_equal_the_single_answer_oracles(tmp_path):
    out = tmp_path / "out"
    result = run_script("visual_question_answering.py", *VQA, "-input_image_path", CAT_DOG,
                        "-question", "What animal?", "-answer", "dog, cat", "-out_path", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("Grad-CAM answer")] == [
        "Grad-CAM answer: \tdog", "Grad-CAM answer: \tcat"]
    assert len(list(out.iterdir())) == 6
    for name in ("vqa_gcam_hm_dog.png", "vqa_gb_dog.png", "vqa_gb_gcam_dog.png"):
        assert_png_close(out / name, oracle("vqa_catdog_animal_dog", name))
    for name in ("vqa_gb_cat.png", "vqa_gb_gcam_cat.png"):  # the cat case was run with -save_as_heatmap 0
        assert_png_close(out / name, oracle("vqa_catdog_animal_cat_raw", name))


def test_several_captions_equal_the_single_caption_oracles(tmp_path):
    """A list literal: captions keep their commas; '' is the generated caption."""
    out = tmp_path / "out"
    captions = '["a dog and a cat posing for a picture", "", "A zebra, and a dog!"]'
    result = run_script("captioning.py", *CAP, "-input_image_path", CAT_DOG, "-caption", captions,
                        "-out_path", str(out))
    assert result.returncode == 0, result.stderr
    generated = "picture sitting fire picture picture to fire toilet dog white"
    assert result.stdout.splitlines() == [
        "No caption provided, using generated caption for Grad-CAM.",
        f"Generated caption: \t{generated}",
        "Grad-CAM caption: \ta dog and a cat posing for a picture",
        f"Grad-CAM caption: \t{generated}",
        "Grad-CAM caption: \tA zebra, and a dog!",
    ]
    assert len(list(out.iterdir())) == 9
    for case in ("cap_catdog_default", "cap_catdog_generated", "cap_catdog_unk_punct"):
        for png in (CASES / case).glob("*.png"):
            assert_png_close(out / png.name, png)


# ------------------------------------------------------------------------- folders, globs, batches


@pytest.mark.slow
def test_folder_run_equals_single_image_runs_and_skips_bad_images(tmp_path):
    folder, good = photo_folder(tmp_path)
    out = tmp_path / "out"
    result = run_script("classification.py", *CLS, "-label", "3,-1", "-input_image_path", str(folder),
                        "-batch_size", "3", "-out_path", str(out))
    assert result.returncode == 2, result.stderr
    errors = result.stderr.splitlines()
    assert len(errors) == 3 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith(f"skipping {folder / 'broken.jpg'}: ") and "not a JPEG or PNG" in errors[0]
    assert errors[1].startswith(f"skipping {folder / 'indoor/truncated.jpeg'}: ") and "truncated" in errors[1]
    assert errors[2] == "classification.py: error: skipped 2 of 6 images (see the 'skipping' lines above)"
    per_image = [line for line in result.stdout.splitlines() if "predicted label" in line]
    assert [line.split(": ")[0] for line in per_image] == [str(folder / rel) for rel in sorted(good)]

    single_runs("classification.py", [*CLS, "-label", "3,-1"], good, tmp_path / "single")
    assert_close_tree(out, tmp_path / "single")  # out/indoor/Bathroom.JPG/classify_gb_3.png, ...

    # batch size 1 (every image alone), stderr on a terminal: the single runs' bytes, and a progress bar
    out1 = tmp_path / "out1"
    code, terminal = run_with_terminal_stderr(
        [sys.executable, str(ROOT / "classification.py"), *CLS, "-label", "3,-1", "-input_image_path", str(folder),
         "-batch_size", "1", "-out_path", str(out1)])
    assert code == 2
    assert "6/6" in terminal and "img" in terminal, terminal  # tqdm's bar
    assert_same_tree(out1, tmp_path / "single")


def run_with_terminal_stderr(command: list[str]) -> tuple[int, str]:
    """Run ``command`` with stderr on a pseudo-terminal; (exit code, what it wrote there)."""
    primary, replica = pty.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns for the bar
    chunks: list[bytes] = []

    def drain() -> None:  # read while it runs: a full terminal buffer would block the child
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child side is closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=replica, timeout=300)
    finally:
        os.close(replica)
        reader.join(timeout=10)
        os.close(primary)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_vqa_folder_run_equals_single_image_runs(tmp_path):
    folder, good = photo_folder(tmp_path)
    (folder / "broken.jpg").unlink()
    (folder / "indoor" / "truncated.jpeg").unlink()
    out = tmp_path / "out"
    options = [*VQA, "-question", "What animal?", "-answer", "dog,"]  # '' after the comma is dropped
    result = run_script("visual_question_answering.py", *options, "-input_image_path", str(folder),
                        "-batch_size", "3", "-out_path", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar: stderr is not a terminal
    answers = [line for line in result.stdout.splitlines() if "Grad-CAM answer" in line]
    assert answers == [f"{folder / rel}: Grad-CAM answer: \tdog" for rel in sorted(good)]
    single_runs("visual_question_answering.py", [*options[:-1], "dog"], good, tmp_path / "single")
    assert_close_tree(out, tmp_path / "single")


@pytest.mark.slow
def test_captioning_glob_run_equals_single_image_runs(tmp_path):
    folder, good = photo_folder(tmp_path)
    out = tmp_path / "out"
    captions = "a dog | A zebra, and a dog!"
    pattern = str(folder / "**" / "*.jpg")  # recursive; case-sensitive: not Bathroom.JPG nor truncated.jpeg
    result = run_script("captioning.py", *CAP, "-caption", captions, "-input_image_path", pattern,
                        "-batch_size", "2", "-out_path", str(out))
    assert result.returncode == 2  # broken.jpg
    summary = "captioning.py: error: skipped 1 of 4 images (see the 'skipping' lines above)"
    assert result.stderr.splitlines()[-1] == summary
    chosen = {rel: path for rel, path in good.items() if rel.endswith(".jpg")}
    explained = [line.split(": ")[0] for line in result.stdout.splitlines() if "Generated caption" in line]
    assert explained == [str(folder / rel) for rel in sorted(chosen)]
    assert (out / "cat_dog.jpg" / "caption_gb_A zebra, and a dog!.png").is_file()
    single_runs("captioning.py", [*CAP, "-caption", captions], chosen, tmp_path / "single")
    assert_close_tree(out, tmp_path / "single")


@pytest.mark.parametrize("what", ["empty folder", "glob matching nothing"])
def test_nothing_to_explain_is_one_line_exit_2(tmp_path, what):
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    (tmp_path / "empty" / ".hidden" / "x.jpg").write_bytes(b"")
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    value, pattern = {
        "empty folder": (str(tmp_path / "empty"), r"-input_image_path: no \.jpg, \.jpeg or \.png file in the folder"),
        "glob matching nothing": (str(tmp_path / "empty" / "*.png"), r"matches no \.jpg, \.jpeg or \.png file"),
    }[what]
    out = tmp_path / "out"
    result = run_script("classification.py", *CLS, "-input_image_path", value, "-out_path", str(out))
    assert_refused(result, out, pattern)


# ------------------------------------------------------------------------------------------ torchrun


@pytest.mark.slow
def test_torchrun_shards_give_the_single_process_files(tmp_path):
    """Two CPU ranks (gloo rendezvous for the final count only) against one process, byte for byte.

    Both runs use OMP_NUM_THREADS=1, what torchrun gives each rank: the BLAS matrix-vector products of
    the fully connected layers split their sums across threads, so results depend on the thread count
    (by one grey level in a few pixels), not on the sharding.
    """
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    folder, good = photo_folder(tmp_path)
    (folder / "indoor" / "truncated.jpeg").unlink()  # 5 files: 4 images and broken.jpg
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*CLS, "-input_image_path", str(folder), "-batch_size", "2"]
    ranks = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "classification.py"), *args, "-out_path", str(tmp_path / "ranks")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    if re.search(r"DistNetworkError|RendezvousConnectionError|Address already in use|Connection refused", ranks.stderr):
        pytest.skip(f"torchrun cannot rendezvous on this machine: {ranks.stderr.strip().splitlines()[-1]}")
    one = subprocess.run([sys.executable, str(ROOT / "classification.py"), *args, "-out_path", str(tmp_path / "one")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert one.returncode == 2, one.stderr
    # torchrun would turn a rank's exit code 2 into its own traceback and exit code 1: the ranks exit 0
    # and rank 0's last line counts the skipped images over all ranks
    assert ranks.returncode == 0 and "Traceback" not in ranks.stderr, ranks.stderr
    assert ranks.stderr.strip().splitlines()[-1] == (
        "classification.py: warning: skipped 1 of 5 images over 2 ranks (see the 'skipping' lines above); "
        "exit code 0, as torchrun cannot pass on exit code 2")
    # rank 0 took chunks 0 and 2: files 0, 1 and 4 (broken.jpg, cat_dog.jpg, tabbycat_dog.jpg)
    assert [line for line in ranks.stderr.splitlines() if line.startswith("skipping")] == [
        f"skipping {folder / 'broken.jpg'}: cannot load image '{folder / 'broken.jpg'}': not a JPEG or PNG image"]
    assert len(tree(tmp_path / "one")) == 12
    assert_same_tree(tmp_path / "ranks", tmp_path / "one")


# -------------------------------------------------------------------- selection, shards and names


def _touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """A folder with every kind of entry folder mode must handle."""
    root = tmp_path / "in"
    for rel in ("a.jpg", "B.JPG", "c.Jpeg", "d.png", "e.PNG", "sub/deep/f.jpg", "dir.jpg/g.png",
                "notes.txt", "h.gif", "i.jpg.txt", ".hidden.jpg", ".git/j.jpg", "sub/.k.png"):
        _touch(root / rel)
    _touch(tmp_path / "outside" / "o.jpg")
    (root / "linked_dir").symlink_to(tmp_path / "outside", target_is_directory=True)  # not followed
    (root / "linked.jpg").symlink_to(tmp_path / "outside" / "o.jpg")  # a file: read
    (root / "dangling.png").symlink_to(tmp_path / "gone.png")  # kept: reported unreadable later
    (root / "loop").symlink_to(root, target_is_directory=True)  # would recurse forever if followed
    os.mkfifo(root / "fifo.jpg")  # reading it would block: not an image file
    return root


def test_folder_selection_rules(messy, tmp_path):
    inputs = batch.find_images("input_image_path", str(messy), tmp_path / "out")
    rels = [Path(job.path).relative_to(messy).as_posix() for job in inputs.jobs]
    assert rels == ["B.JPG", "a.jpg", "c.Jpeg", "d.png", "dangling.png", "dir.jpg/g.png", "e.PNG",
                    "linked.jpg", "sub/deep/f.jpg"]  # sorted by relative path, as strings
    assert inputs.many
    job = inputs.jobs[-1]
    assert job.out_dir == tmp_path / "out" / "sub" / "deep" / "f.jpg" and job.shown == str(messy / "sub/deep/f.jpg")


@pytest.mark.parametrize("pattern, expected", [
    ("*.jpg", ["a.jpg", "linked.jpg"]),  # one level, case-sensitive pattern
    ("*.[jJ]*", ["B.JPG", "a.jpg", "c.Jpeg", "linked.jpg"]),  # no i.jpg.txt: not an image suffix
    ("**/*.jpg", ["a.jpg", "linked.jpg", "sub/deep/f.jpg"]),  # any depth, not through symlinks
    ("sub/**/*", ["deep/f.jpg"]),  # relative to the fixed prefix "in/sub"
    (".*", [".hidden.jpg"]),  # hidden names only when asked for
    ("*/g.png", ["dir.jpg/g.png"]),
])
def test_glob_selection_rules(messy, tmp_path, pattern, expected):
    inputs = batch.find_images("input_image_path", str(messy / pattern), tmp_path / "out")
    root = messy / pattern.split("*")[0].rstrip("/") if pattern.startswith("sub/") else messy
    assert [Path(job.path).relative_to(root).as_posix() for job in inputs.jobs] == expected
    assert [job.out_dir for job in inputs.jobs] == [tmp_path / "out" / rel for rel in expected]


def test_prefix_of_a_glob():
    assert batch.split_pattern("photos/*/x?.jpg") == (Path("photos"), ("*", "x?.jpg"))
    assert batch.split_pattern("*.png") == (Path("."), ("*.png",))
    assert batch.split_pattern("/data/[ab]/**/*.jpg") == (Path("/data"), ("[ab]", "**", "*.jpg"))


def test_is_multi_image(tmp_path):
    _touch(tmp_path / "odd[1].jpg")
    assert batch.is_multi_image(str(tmp_path)) and batch.is_multi_image(str(tmp_path / "*.jpg"))
    assert not batch.is_multi_image(str(tmp_path / "odd[1].jpg"))  # an existing file, brackets and all
    assert not batch.is_multi_image(str(tmp_path / "missing.jpg"))


def test_nothing_selected_and_clashing_out_path_are_clear_errors(messy, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GradCamError, match=r"-input_image_path: no \.jpg, \.jpeg or \.png file in the folder"):
        batch.find_images("input_image_path", str(tmp_path / "empty"), tmp_path / "out")
    with pytest.raises(GradCamError, match=r"matches no \.jpg, \.jpeg or \.png file"):
        batch.find_images("input_image_path", str(messy / "*.webp"), tmp_path / "out")
    with pytest.raises(GradCamError, match="is the folder the images are read from"):
        batch.find_images("input_image_path", str(messy), messy)


def test_out_path_inside_the_folder_is_not_searched(tmp_path):
    _touch(tmp_path / "in" / "a.jpg")
    _touch(tmp_path / "in" / "out" / "a.jpg" / "old.png")  # a previous run's output
    inputs = batch.find_images("input_image_path", str(tmp_path / "in"), tmp_path / "in" / "out")
    assert [job.path for job in inputs.jobs] == [tmp_path / "in" / "a.jpg"]


@pytest.mark.parametrize("rel", ["../x.jpg", "a/../../x.jpg", "/etc/x.jpg", "", "."])
def test_output_folders_never_leave_out_path(tmp_path, rel):
    with pytest.raises(GradCamError, match="refusing output folder"):
        batch.output_folder(tmp_path, PurePath(rel))


def test_output_folder_naming(tmp_path):
    assert batch.output_folder(tmp_path, PurePath("cats/tabby.jpg")) == tmp_path / "cats" / "tabby.jpg"


def test_shards_take_every_world_th_chunk_of_the_sorted_list():
    items = list(range(7))
    shards = [Shard(rank, 3) for rank in range(3)]
    assert [s.take(items) for s in shards] == [[[0], [3], [6]], [[1], [4]], [[2], [5]]]
    assert [s.take(items, 2) for s in shards] == [[[0, 1], [6]], [[2, 3]], [[4, 5]]]
    one = Shard().take(items, 2)  # one process: the same chunks, so the same batches
    assert sorted(c for s in shards for c in s.take(items, 2)) == one == [[0, 1], [2, 3], [4, 5], [6]]
    assert Shard(1, 8).take(["only"]) == []


def test_shard_from_the_torchrun_environment():
    assert Shard.from_env({}) == Shard(0, 1, 0)
    assert Shard.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Shard(3, 4, 1)
    with pytest.raises(GradCamError, match="do not fit"):
        Shard.from_env({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(GradCamError, match="RANK='x' is not a whole number"):
        Shard.from_env({"WORLD_SIZE": "2", "RANK": "x"})


# ------------------------------------------------------------------------------- option values


def test_target_lists():
    assert as_int_list("label", "[243, 283]") == [243, 283] == as_int_list("label", "243,283")
    assert as_str_list("caption", "a dog | a cat|", "|") == ["a dog", "a cat"]
    assert as_str_list("caption", '["a, b", ""]', "|") == ["a, b", ""]
    assert as_str_list("caption", "A zebra, and a dog!", "|") == ["A zebra, and a dog!"]
    assert as_str_list("caption", "", "|") == [""]
    assert as_str_list("caption", "[not a list literal]", "|") == ["[not a list literal]"]
    with pytest.raises(GradCamError, match="-caption needs at least one value"):
        as_str_list("caption", " | ", "|")


def test_an_answer_with_a_comma_is_one_answer():
    from gradcam_core.cli.vqa import expand_answers
    from gradcam_core.tasks.vqa import Vocabulary

    vocab = Vocabulary({1: "UNK"}, ("dog", "cat", "yes, it is"))
    assert expand_answers(["yes, it is"], vocab) == ["yes, it is"]
    assert expand_answers(["dog,cat"], vocab) == ["dog", "cat"]
    assert expand_answers(["dog, purple"], vocab) == ["dog", "purple"]  # purple: the predicted one, as before
    assert expand_answers([""], vocab) == [""]
    assert expand_answers(['["cat", ""]'], vocab) == ["cat", ""]
