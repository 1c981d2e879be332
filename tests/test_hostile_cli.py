"""Error paths of the three CLIs, run as processes: ONE line on stderr, exit code 2, no traceback,
nothing written - for inputs that could otherwise end in a traceback, an "internal error", a hang or
unbounded memory (the plain bad-input cases are in test_classification/vqa/captioning). Then
interruptions: a run stopped while writing leaves no partial PNG and no temporary file, and
``--debug`` shows the traceback."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cli_runner
import pytest
from conftest import FIXTURE_ARGS, MINI_MODEL, ROOT, assert_refused, overriding

from gradcam_core.image.png import _unnamed_file

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run

MODEL = MINI_MODEL
CLASSIFY = FIXTURE_ARGS["classification.py"]
BASE = FIXTURE_ARGS
TRIPLET = ["classify_gb_5.png", "classify_gb_gcam_5.png", "classify_gcam_hm_5.png"]


@pytest.fixture(scope="module")
def cli() -> cli_runner.PrewarmedCLI:
    return cli_runner.shared()


def run(cli: cli_runner.PrewarmedCLI, script: str, out: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    """``script`` on the fixtures with ``args`` overriding them (later options win)."""
    return cli.run(script, *overriding(*BASE[script], *args, "-out_path", str(out)), timeout=60, **kw)


# --------------------------------------------------------------------------------------------------
# Model files that are not files: refused at once (a pipe would block, a device would be read forever)


@pytest.mark.parametrize("script, option", [
    ("classification.py", "-proto_file"), ("classification.py", "-model_file"),
    ("visual_question_answering.py", "-model_path"), ("visual_question_answering.py", "-vocab_file"),
    ("captioning.py", "-model_path"),
])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_pipe_or_device_as_model_file_is_refused_at_once(cli, tmp_path, script, option, kind):
    path = Path("/dev/zero")
    if kind == "fifo":
        path = tmp_path / "model"
        os.mkfifo(path)
    out = tmp_path / "out"
    started = time.monotonic()
    result = run(cli, script, out, option, str(path))
    assert_refused(result, out, rf"{option}: {path} is not a regular file \(a device, pipe or socket\)")
    assert time.monotonic() - started < 30 and result.stdout == ""  # refused before loading anything


# --------------------------------------------------------------------------------------------------
# Sizes, seeds, layers, devices


@pytest.mark.parametrize("script, args, message", [
    ("classification.py", ["-input_sz", "0"], r"-input_sz must be at least 1, got 0"),
    ("captioning.py", ["-input_sz", "-5"], r"-input_sz must be at least 1, got -5"),
    ("classification.py", ["-seed", "1e30"], r"-seed 1e30 is out of range"),
    ("visual_question_answering.py", ["-gpuid", "99"], r"-gpuid 99 asks for a GPU|-gpuid 99 does not exist"),
    ("captioning.py", ["-gpuid", "99"], r"-gpuid 99 asks for a GPU|-gpuid 99 does not exist"),
    ("classification.py", ["-layer_name", "fc6"],
     r"layer 'fc6' gives activations of shape \(1, 32\); Grad-CAM needs a convolutional layer"),
    ("captioning.py", ["-layer", "fc7"], r"layer 'fc7' gives .*Grad-CAM needs a convolutional layer"),
])
def test_bad_option_values_are_one_line(cli, tmp_path, script, args, message):
    out = tmp_path / "out"
    assert_refused(run(cli, script, out, *args), out, message)


def test_a_huge_input_size_fails_cleanly_within_bounded_memory(cli, tmp_path):
    """-input_sz 8192, the largest accepted (the decoder's 64 Mpx limit; larger sizes are refused when
    the options are read, see test_faults.py), would need several GB; a Caffe net knows its layers'
    shapes, so the size is refused from them before any image is loaded: under a 1 GB cap, one line
    naming the option and the layer (the image alone would take 800 MB as float32)."""
    out = tmp_path / "out"
    result = run(cli, "classification.py", out, "-input_sz", "8192", mem_limit_mb=1024)
    assert_refused(result, out, r"error: -input_sz 8192: the network cannot take a 8192x8192 image \(fc6 needs")


def test_running_out_of_memory_is_one_line():
    """What the CLIs print when an allocation fails (torch's CPU allocator message, Python's MemoryError)."""
    from gradcam_core.cli import app as gc_cli

    err = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 120000000000 bytes. Error code 12 (Cannot allocate memory)")
    assert gc_cli._out_of_memory(err) and gc_cli._out_of_memory(MemoryError())
    assert not gc_cli._out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert gc_cli._memory_message(err) == "out of memory: an allocation of 120000000000 bytes failed"
    assert gc_cli._memory_message(MemoryError()) == "out of memory"


@pytest.mark.parametrize("script, size", [("classification.py", "64"), ("captioning.py", "32"),
                                          ("visual_question_answering.py", "48")])
def test_an_input_size_the_net_cannot_take_is_one_line(cli, tmp_path, script, size):
    out = tmp_path / "out"
    assert_refused(run(cli, script, out, "-input_sz", size), out, rf"-input_sz {size}")


# --------------------------------------------------------------------------------------------------
# The output folder


@pytest.mark.parametrize("where", ["/proc/gradcam-out", "{file}/sub"], ids=["in /proc", "under a file"])
def test_an_unwritable_out_path_is_refused_before_any_work(cli, tmp_path, where):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    out = Path(where.format(file=a_file))
    result = run(cli, "classification.py", out)
    assert_refused(result, out, rf"-out_path {out}: (cannot create it in /proc|{a_file} is not a folder)")
    assert result.stdout == ""  # not even the model was loaded


# --------------------------------------------------------------------------------------------------
# Interruptions while writing

# Runs an entry script with os.fsync (called by outputs.write_all once a file's bytes are written, before
# any of the image's files is renamed into place) stalled on the second PNG, after touching a marker
# file: a deterministic moment to interrupt the run, with one PNG complete and one in flight.
_STALL_SECOND_WRITE = """
import os, runpy, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal, even if the tests run
marker, script = sys.argv[1], sys.argv[2]                   # where SIGINT is ignored (a background job)
real_fsync, calls = os.fsync, []
def stalled_fsync(fd):
    calls.append(fd)
    if len(calls) == 2:
        open(marker, "w").close()
        time.sleep(120)
    real_fsync(fd)
os.fsync = stalled_fsync
sys.argv = [script] + sys.argv[3:]
runpy.run_path(script, run_name="__main__")
"""


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> dict[signal.Signals, tuple[subprocess.CompletedProcess, Path]]:
    """classification.py stopped by SIGINT, SIGTERM and SIGKILL while writing its second image (the
    three runs side by side): signal -> (result, output folder)."""
    runs = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        folder = tmp_path_factory.mktemp(sig.name)
        out, marker = folder / "out", folder / "writing"
        proc = subprocess.Popen(
            [sys.executable, "-c", _STALL_SECOND_WRITE, str(marker), str(ROOT / "classification.py"), *CLASSIFY,
             "-out_path", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runs[sig] = proc, out, marker
    results = {}
    for sig, (proc, out, marker) in runs.items():
        deadline = time.monotonic() + 180
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if marker.exists():
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
        results[sig] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out
    return results


def unnamed_files_work(folder: Path) -> bool:
    """Whether write_atomic can write unnamed temporary files (O_TMPFILE) in ``folder``."""
    fd = _unnamed_file(str(folder))
    if fd is not None:
        os.close(fd)
    return fd is not None


@pytest.mark.parametrize("sig, code, line", [
    (signal.SIGINT, 130, "classification.py: error: interrupted"),
    (signal.SIGTERM, 143, "classification.py: error: terminated"),
    (signal.SIGKILL, -signal.SIGKILL, None),
], ids=["Ctrl-C", "kill", "kill -9"])
def test_a_run_interrupted_while_writing_leaves_no_partial_png_and_no_temporary_file(interrupted, sig, code, line):
    result, out = interrupted[sig]
    assert result.returncode == code, result.stderr
    if line is not None:
        assert result.stderr.strip().splitlines() == [line]
    # None of the image's three PNGs is there, not even the one written in full: all three or none.
    written = os.listdir(out)
    if sig == signal.SIGKILL and not unnamed_files_work(out):
        pytest.skip("no O_TMPFILE here: after SIGKILL a hidden .gradcam-*.tmp remains (nothing can remove it)")
    assert written == [], written


# --------------------------------------------------------------------------------------------------
# --debug


@pytest.mark.parametrize("args, last_line", [
    (["-label", "0"], "GradCamError: -label 0 is not a label: labels are 1-based (-1 = the predicted class)"),
    (["-model_file", "/dev/zero"],
     "GradCamError: -model_file: /dev/zero is not a regular file (a device, pipe or socket)"),
])
def test_debug_shows_the_traceback_instead(cli, tmp_path, args, last_line):
    out = tmp_path / "out"
    result = run(cli, "classification.py", out, *args, "--debug")
    assert result.returncode == 1 and result.stderr.startswith("Traceback (most recent call last):")
    assert result.stderr.strip().splitlines()[-1].endswith(last_line)
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# Standard output


def test_a_reader_that_goes_away_does_not_stop_the_run(cli, tmp_path):
    """``classification.py ... | head -0``: the messages are lost, the images are still written."""
    out = tmp_path / "out"
    result = run(cli, "classification.py", out, reader_gone=True)
    assert result.returncode == 0 and result.stderr == ""
    assert sorted(os.listdir(out)) == TRIPLET


# --------------------------------------------------------------------------------------------------
# Non-finite scores and maps: one line naming the model and the image, no files (a folder skips it)


@pytest.fixture(scope="module")
def nan_squeezenet(tmp_path_factory) -> Path:
    """A squeezenet1_1 state_dict whose final convolution is all NaN (built, not downloaded)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.squeezenet1_1(weights=None).state_dict()
    state["classifier.1.weight"] = torch.full_like(state["classifier.1.weight"], float("nan"))
    path = tmp_path_factory.mktemp("nan") / "nan.pth"
    torch.save(state, path)
    return path


NONFINITE = r"error: {image}: non-finite scores \(NaN/inf\) from {model}: check the weights and the preprocessing"


@pytest.mark.parametrize("case", ["nan weights", "-input_scale 1e38", "-mean_value 1e308"])
def test_non_finite_scores_are_one_line_naming_model_and_image(cli, tmp_path, nan_squeezenet, case):
    """Each of these printed "Label 1: tench", exit 0, and wrote black PNGs."""
    out, image = tmp_path / "out", ROOT / "images" / "cat_dog.jpg"
    if case == "nan weights":
        model = nan_squeezenet
        args = ["-arch", "squeezenet1_1", "-model_file", str(model), "-input_sz", "64"]
        result = cli.run("classification.py", *args, "-input_image_path", str(image), "-out_path", str(out), timeout=60)
    else:
        model = Path(f"{MODEL}.caffemodel")
        result = run(cli, "classification.py", out, *case.split(), "-input_image_path", str(image))
    assert_refused(result, out, NONFINITE.format(image=re.escape(str(image)), model=re.escape(str(model))))
    assert "Label" not in result.stdout


def test_a_folder_skips_the_images_whose_scores_are_not_finite(cli, tmp_path, nan_squeezenet):
    folder, out = tmp_path / "photos", tmp_path / "out"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes((ROOT / "images" / "cat_dog.jpg").read_bytes())
    result = cli.run("classification.py", "-arch", "squeezenet1_1", "-model_file", str(nan_squeezenet),
                     "-input_sz", "64", "-input_image_path", str(folder), "-out_path", str(out), timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == [f"skipping {folder / n}" for n in ("a.jpg", "b.jpg")]
    assert all(f"non-finite scores (NaN/inf) from {nan_squeezenet}" in line for line in lines[:2])
    assert lines[2].endswith("skipped 2 of 2 images (see the 'skipping' lines above)") and len(lines) == 3
    assert not out.exists() and "Label" not in result.stdout


# --------------------------------------------------------------------------------------------------
# Options given twice, labels that only look like numbers, means given twice, -arch without weights


@pytest.mark.parametrize("script, args, message", [
    ("classification.py", ["-label", "3", "-label", "5"],
     r"option -label is given twice \(-label 3 and -label 5\): give several in one value, as -label 3,5"),
    ("classification.py", ["--label=3", "-label", "3"], r"option -label is given twice"),
    ("classification.py", ["-gpuid", "-1", "--gpuid", "-1"], r"option -gpuid is given twice .*: give it once"),
    ("visual_question_answering.py", ["-answer", "dog", "-answer", "cat"], r"as -answer dog,cat"),
    ("captioning.py", ["-caption", "a dog", "-caption", "a cat"], r"as -caption 'a dog\|a cat'"),
])
def test_an_option_given_twice_is_refused(cli, tmp_path, script, args, message):
    out = tmp_path / "out"
    result = cli.run(script, *BASE[script], *args, "-out_path", str(out), timeout=60)
    assert_refused(result, out, message)
    assert result.stdout == ""  # before anything is loaded


@pytest.mark.parametrize("label", ["٣", "５", "1_000"])
def test_labels_are_ascii_digits_anything_else_is_a_class_name(cli, tmp_path, label):
    """Python's int() reads these as 3, 5 and 1000; the label is looked up as a name instead."""
    out = tmp_path / "out"
    synset = str(ROOT / "tests" / "data" / "synset_words.txt")
    result = run(cli, "classification.py", out, "-label", label, "-synset_file", synset)
    assert_refused(result, out, rf"-label '{label}': no class named '{label}'")


def test_mean_file_with_mean_value_is_refused(cli, tmp_path):
    mean = tmp_path / "mean.binaryproto"
    mean.write_bytes(b"")
    out = tmp_path / "out"
    result = run(cli, "classification.py", out, "-mean_file", str(mean), "-mean_value", "104,117,123")
    assert_refused(result, out, r"-mean_value and -mean_file are both given: give one of them")


@pytest.mark.parametrize("arch, bundled", [("squeezenet1_1", True), ("resnet18", False)])
def test_arch_without_model_file_names_the_state_dict_it_needs(cli, tmp_path, arch, bundled):
    """It said the VGG-16 caffemodel was missing and to run download_models.sh."""
    out = tmp_path / "out"
    result = cli.run("classification.py", "-arch", arch, "-out_path", str(out), timeout=60)
    line = assert_refused(result, out, rf"-arch {arch} needs its weights: give its torchvision state_dict .* "
                                       r"with -model_file.*; nothing is downloaded$")
    assert "VGG" not in line and "download_models" not in line
    assert ("-model_file models/squeezenet1_1/squeezenet1_1.pth" in line) == bundled
