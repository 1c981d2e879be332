"""Faults a new user can meet running the CLIs, each run as a user runs it: one line naming the
option or the file, exit code 2, nothing half-written, nothing outside ``-out_path``.

1. over-long path names and folders that cannot be searched (an OSError from ``stat``);
2. a disk that fills up while an image's files are written;
3. empty file options;
4. symlinks planted inside ``-out_path``;
5. skipped images under torchrun;
6. an ``-input_sz`` past the decoder's pixel limit;
7. option parsing: a missing value, ``-- --help``, a label with a space;
8. one message for every oversized image;
9. an ONNX file given as a caffemodel.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cli_runner
import pytest
from conftest import DATA, FIXTURE_ARGS, MINI_MODEL, ROOT, assert_refused, overriding

from gradcam_core import GradCamError
from gradcam_core.cli import paths
from gradcam_core.cli.app import _normalize_argv
from gradcam_core.cli.options import as_int_list

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run

MODEL = MINI_MODEL
CLASSIFY = [*FIXTURE_ARGS["classification.py"], "-label", "5"]
BASE = {**FIXTURE_ARGS, "classification.py": CLASSIFY}
CAT_DOG = ROOT / "images" / "cat_dog.jpg"
TRIPLET = ["classify_gb_5.png", "classify_gb_gcam_5.png", "classify_gcam_hm_5.png"]
LONG = "x" * 300  # one path component over the usual 255-byte limit


@pytest.fixture(scope="module")
def cli() -> cli_runner.PrewarmedCLI:
    return cli_runner.shared()


def run(cli: cli_runner.PrewarmedCLI, script: str, out: Path, *args: str, timeout: float = 120
        ) -> subprocess.CompletedProcess:
    """``script`` on the fixtures with ``args`` overriding them (later options win)."""
    return cli.run(script, *overriding(*BASE[script], *args, "-out_path", str(out)), timeout=timeout)


def one_line(result: subprocess.CompletedProcess, pattern: str, code: int = 2) -> str:
    """The run ended with exit ``code`` and ONE stderr line matching ``pattern``; returns it."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


# -------------------------------------------------------------------------------------------------
# 1. Paths that cannot even be looked at: a name too long, a folder that cannot be searched


@pytest.mark.parametrize("script, option", [
    ("classification.py", "-out_path"), ("classification.py", "-input_image_path"),
    ("classification.py", "-proto_file"), ("classification.py", "-model_file"),
    ("visual_question_answering.py", "-model_path"), ("visual_question_answering.py", "-vocab_file"),
    ("captioning.py", "-model_path"), ("captioning.py", "-input_image_path"),
])
@pytest.mark.parametrize("shape", ["{tmp}/{long}", "{tmp}/{long}/x.jpg", "{tmp}/{long}/*.jpg"],
                         ids=["long name", "under a long name", "glob under a long name"])
def test_a_name_too_long_is_one_line_naming_the_option(cli, tmp_path, script, option, shape):
    if shape.endswith("*.jpg") and option != "-input_image_path":
        pytest.skip("only -input_image_path takes globs")
    value = shape.format(tmp=tmp_path, long=LONG)
    out = tmp_path / "out"
    args = [option, value] if option != "-out_path" else []
    out_value = value if option == "-out_path" else str(out)
    result = cli.run(script, *overriding(*BASE[script], *args, "-out_path", out_value), timeout=60)
    line = one_line(result, rf"error: {option} .*: (file )?name too long")
    assert "internal error" not in line
    assert not out.exists() and result.stdout == ""


def without_dac(command: list[str]) -> list[str]:
    """``command`` run as root WITHOUT the capabilities that let root ignore permission bits, so that
    a folder with mode 000 cannot be searched, as for any other user."""
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={drop}", f"--ambient-caps={drop}", f"--bounding-set={drop}", *command]


@pytest.fixture
def locked(tmp_path) -> Path:
    """A folder nobody may search (mode 000), holding a model and an image."""
    folder = tmp_path / "locked"
    folder.mkdir()
    shutil.copy(CAT_DOG, folder / "x.jpg")
    shutil.copy(f"{MODEL}.prototxt", folder / "m.prototxt")
    folder.chmod(0)
    yield folder
    folder.chmod(0o755)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop root's capabilities")
@pytest.mark.parametrize("option, below", [("-out_path", "out"), ("-input_image_path", "x.jpg"),
                                           ("-proto_file", "m.prototxt"), ("-input_image_path", "*.jpg")])
def test_a_path_under_a_folder_that_cannot_be_searched_is_one_line(tmp_path, locked, option, below):
    value = str(locked / below)
    out = tmp_path / "out"
    args = {"-out_path": ["-out_path", value], "-input_image_path": ["-input_image_path", value, "-out_path", str(out)],
            "-proto_file": ["-proto_file", value, "-out_path", str(out)]}[option]
    probe = subprocess.run(without_dac([sys.executable, "-c", f"import os; os.stat({value!r})"]), capture_output=True)
    if probe.returncode == 0 or b"PermissionError" not in probe.stderr:
        pytest.skip(f"cannot drop root's capabilities here: {probe.stderr.decode()[-200:]}")
    command = [sys.executable, str(ROOT / "classification.py"), *overriding(*CLASSIFY, *args)]
    result = subprocess.run(without_dac(command), cwd=ROOT, capture_output=True, text=True, timeout=120)
    one_line(result, rf"error: {option} .*: permission denied")
    assert not out.exists()


@pytest.mark.parametrize("code", [errno.ENAMETOOLONG, errno.EACCES, errno.ELOOP, errno.EIO])
def test_every_option_path_check_turns_an_oserror_into_one_line(tmp_path, monkeypatch, code):
    """The one helper every check goes through, with ``stat`` failing as the file system can make it."""
    real_stat = os.stat
    target = str(tmp_path / "bad")

    def failing_stat(path, *args, **kwargs):
        if os.fspath(path).startswith(target):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing_stat)
    value = f"{target}/m.caffemodel"
    checks = [
        lambda: paths.input_path("model_file", value, "x"),
        lambda: paths.input_images("input_image_path", value, "x", tmp_path / "out"),
        lambda: paths.input_images("input_image_path", f"{target}/*.jpg", "x", tmp_path / "out"),
        lambda: paths.check_out_dir(f"{target}/out"),
    ]
    for check, option in zip(checks, ["model_file", "input_image_path", "input_image_path", "out_path"]):
        with pytest.raises(GradCamError, match=rf"(?i)^-{option} {re.escape(target)}/\S+: .*{os.strerror(code)}"):
            check()


# -------------------------------------------------------------------------------------------------
# 2. The disk fills up while an image's files are written: all of an image's files, or none


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a fresh tmpfs of ``size`` bytes (rounded up to pages), unmounted afterwards."""
    mounted = []

    def mount(size: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def pages(n: int) -> int:
    return -(-n // 4096) * 4096


def test_a_full_disk_leaves_none_of_the_images_files_single_image(cli, tmp_path, small_disk):
    sizes = triplet_sizes(cli, tmp_path / "ref", CAT_DOG)
    # room for the first two PNGs (written in the order heatmap, gb, gb_gcam) but not the third
    disk = small_disk(pages(sizes["classify_gcam_hm_5.png"]) + pages(sizes["classify_gb_5.png"]) + 8192)
    out = disk / "out"
    result = run(cli, "classification.py", out, "-input_image_path", str(CAT_DOG))
    one_line(result, r"error: cannot write .*: No space left on device")
    assert not out.exists() or os.listdir(out) == [], os.listdir(out)


def test_a_full_disk_leaves_whole_triplets_folder_mode(cli, tmp_path, small_disk):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(CAT_DOG, photos / "a.jpg")
    shutil.copy(ROOT / "images" / "tabbycat_dog.jpg", photos / "b.jpg")
    a = triplet_sizes(cli, tmp_path / "ref_a", photos / "a.jpg")
    b = triplet_sizes(cli, tmp_path / "ref_b", photos / "b.jpg")
    # room for all of a.jpg's files and the first of b.jpg's
    disk = small_disk(sum(map(pages, a.values())) + pages(b["classify_gcam_hm_5.png"]) + 8192)
    out = disk / "out"
    result = run(cli, "classification.py", out, "-input_image_path", str(photos))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"skipping {photos / 'b.jpg'}: cannot write "), lines
    assert "No space left on device" in lines[0]
    assert sorted(os.listdir(out / "a.jpg")) == TRIPLET
    assert not (out / "b.jpg").exists() or os.listdir(out / "b.jpg") == [], os.listdir(out / "b.jpg")


def triplet_sizes(cli, out: Path, image: Path) -> dict[str, int]:
    result = run(cli, "classification.py", out, "-input_image_path", str(image))
    assert result.returncode == 0, result.stderr
    return {name: (out / name).stat().st_size for name in TRIPLET}


def test_write_all_stages_every_file_before_naming_any(tmp_path, monkeypatch):
    """In-process, the same property with ENOSPC from the second file's ``fsync`` (where a network
    file system reports a full disk)."""
    from gradcam_core.run import outputs

    real_fsync, calls = os.fsync, []

    def disk_full_on_second(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_full_on_second)
    images = [outputs.Rendered(name, b"png" * 100) for name in TRIPLET]
    (tmp_path / TRIPLET[2]).write_bytes(b"from an earlier run")  # stays what it was: nothing is replaced
    with pytest.raises(GradCamError, match=r"cannot write .*classify_gb_gcam_5\.png: No space left on device"):
        outputs.write_all(tmp_path, images)
    assert os.listdir(tmp_path) == [TRIPLET[2]] and (tmp_path / TRIPLET[2]).read_bytes() == b"from an earlier run"
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert sorted(p.name for p in outputs.write_all(tmp_path, images)) == TRIPLET
    assert sorted(os.listdir(tmp_path)) == TRIPLET


# -------------------------------------------------------------------------------------------------
# 3. Empty file options


@pytest.mark.parametrize("script, option", [
    ("classification.py", "-input_image_path"), ("classification.py", "-proto_file"),
    ("classification.py", "-model_file"), ("visual_question_answering.py", "-model_path"),
    ("visual_question_answering.py", "-vocab_file"), ("captioning.py", "-model_path"),
    ("captioning.py", "-input_image_path"),
])
def test_an_empty_file_option_is_one_line(cli, tmp_path, script, option):
    (tmp_path / "cwd").mkdir()
    shutil.copy(CAT_DOG, tmp_path / "cwd" / "would_be_explained.jpg")
    out = tmp_path / "out"
    result = cli.run(script, *overriding(*BASE[script], option, "", "-out_path", str(out)), cwd=tmp_path / "cwd",
                     timeout=60)
    assert_refused(result, out, rf"error: {option} is empty")
    assert result.stdout == ""


# -------------------------------------------------------------------------------------------------
# 4. Symlinks planted inside -out_path are never followed


@pytest.fixture
def planted(tmp_path) -> tuple[Path, Path, Path]:
    """(photos, out, outside): photos/sub/x.jpg and photos/y.jpg; out/sub and out/y.jpg are symlinks
    to the folder outside."""
    photos, out, outside = tmp_path / "photos", tmp_path / "out", tmp_path / "outside"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(CAT_DOG, photos / "sub" / "x.jpg")
    shutil.copy(CAT_DOG, photos / "y.jpg")
    shutil.copy(CAT_DOG, photos / "z.jpg")
    outside.mkdir()
    out.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)
    (out / "y.jpg").symlink_to(outside, target_is_directory=True)
    return photos, out, outside


def test_a_symlink_inside_out_path_is_never_followed(cli, planted):
    photos, out, outside = planted
    result = run(cli, "classification.py", out, "-input_image_path", str(photos))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in result.stderr, lines
    assert lines[0].startswith(f"skipping {photos / 'sub' / 'x.jpg'}: ") and "symbolic link" in lines[0]
    assert f"{out / 'sub'}" in lines[0]
    assert lines[1].startswith(f"skipping {photos / 'y.jpg'}: ") and "symbolic link" in lines[1]
    assert lines[2].endswith("skipped 2 of 3 images (see the 'skipping' lines above)")
    assert list(outside.rglob("*")) == []  # nothing landed outside -out_path
    assert sorted(os.listdir(out / "z.jpg")) == TRIPLET  # the others are written


def test_out_path_itself_may_be_a_symlink(cli, tmp_path):
    """The user's own -out_path is theirs to point anywhere; only what lies below it is guarded."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(CAT_DOG, photos / "a.jpg")
    assert run(cli, "classification.py", tmp_path / "link", "-input_image_path", str(CAT_DOG)).returncode == 0
    assert sorted(os.listdir(real)) == TRIPLET
    result = run(cli, "classification.py", tmp_path / "link", "-input_image_path", str(photos))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(real / "a.jpg")) == TRIPLET


def test_a_symlink_planted_as_an_output_file_is_replaced_not_followed(cli, tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "classify_gb_5.png").symlink_to(outside)
    assert run(cli, "classification.py", out, "-input_image_path", str(CAT_DOG)).returncode == 0
    assert outside.read_bytes() == b"precious" and not (out / "classify_gb_5.png").is_symlink()


# -------------------------------------------------------------------------------------------------
# 5. Skipped images under torchrun


def test_skipped_images_under_torchrun_end_in_one_honest_line(tmp_path):
    """torchrun turns a rank's nonzero exit into its own traceback and exit code 1, so the ranks exit 0
    and rank 0's last line says how many images were skipped over all ranks."""
    import torch

    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "x.jpg").write_text("text, not a JPEG\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "classification.py"), *CLASSIFY, "-input_image_path", str(photos), "-out_path", str(out)],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180)
    if re.search(r"DistNetworkError|RendezvousConnectionError|Address already in use|Connection refused", result.stderr):
        pytest.skip(f"torchrun cannot rendezvous on this machine: {result.stderr.strip().splitlines()[-1]}")
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith(("W", "*"))]  # torchrun's
    assert lines[0].startswith(f"skipping {photos / 'x.jpg'}: ") and "not a JPEG or PNG" in lines[0]
    assert lines[-1] == ("classification.py: warning: skipped 1 of 1 images over 2 ranks (see the 'skipping' "
                         "lines above); exit code 0, as torchrun cannot pass on exit code 2"), lines
    assert len(lines) == 2, lines


# -------------------------------------------------------------------------------------------------
# 6. -input_sz past the decoder's own pixel limit


@pytest.mark.parametrize("script", ["classification.py", "visual_question_answering.py", "captioning.py"])
@pytest.mark.parametrize("size", ["8193", "10000", "100000"])
def test_an_input_size_past_the_pixel_limit_is_refused_at_once(cli, tmp_path, script, size):
    out = tmp_path / "out"
    result = run(cli, script, out, "-input_sz", size, timeout=30)
    assert_refused(result, out, rf"error: -input_sz {size} is too large: .* 8192")
    assert result.stdout == ""  # not even the model was loaded


# -------------------------------------------------------------------------------------------------
# 7. Option parsing

PARAMS = ["label", "save_as_heatmap", "question", "gpuid", "layer_name"]


@pytest.mark.parametrize("argv, message", [
    (["-save_as_heatmap", "-label", "3"], r"^option -save_as_heatmap needs a value"),
    (["-save_as_heatmap", "--label=3"], r"^option -save_as_heatmap needs a value"),
    (["-label", "3", "-gpuid", "-g", "0"], r"^option -gpuid needs a value"),
])
def test_a_missing_value_names_the_option(argv, message):
    with pytest.raises(GradCamError, match=message):
        _normalize_argv(argv, PARAMS)


@pytest.mark.parametrize("argv, expected", [
    (["-label", "-1"], ["--label='-1'"]),
    (["-label", "-1e2"], ["--label='-1e2'"]),
    (["-question", "-what?"], ["--question='-what?'"]),
    (["-question", "-what is it"], ["--question='-what is it'"]),
    (["-layer_name", "-"], ["--layer_name='-'"]),
])
def test_values_that_start_with_a_dash_are_still_values(argv, expected):
    assert _normalize_argv(argv, PARAMS) == expected


def test_fire_style_help_after_double_dash_shows_the_help(cli, tmp_path):
    result = cli.run("classification.py", "--", "--help", timeout=60)
    assert result.returncode == 0, result.stderr
    plain = cli.run("classification.py", "--help", timeout=60)  # fire shows it on stderr when not a terminal
    assert "input_image_path" in result.stdout + result.stderr and "error:" not in result.stderr
    assert (result.stdout, result.stderr) == (plain.stdout, plain.stderr)
    assert _normalize_argv(["--", "--help"], PARAMS) == ["--help"]
    assert _normalize_argv(["-label", "3", "--"], PARAMS) == ["--label='3'"]


def test_a_label_with_a_space_is_reported_whole(cli, tmp_path):
    with pytest.raises(GradCamError, match=r"^-label 'tiger cat' must be a number"):
        as_int_list("label", "tiger cat")
    out = tmp_path / "out"  # a class name: the mini VGG-16 has no class names to find it in
    assert_refused(run(cli, "classification.py", out, "-label", "tiger cat"), out,
                   r"error: -label 'tiger cat': this model has no class names to look it up in")


# -------------------------------------------------------------------------------------------------
# 8. One message for every oversized image


@pytest.mark.parametrize("width, height", [(9000, 9000), (20000, 10000), (100000, 100000)],
                         ids=["81 Mpx", "200 Mpx", "10 Gpx"])
def test_every_oversized_image_gets_our_message(tmp_path, width, height):
    import struct
    import zlib

    from gradcam_core.image.decode import load_image

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    with pytest.raises(GradCamError) as info:
        load_image(path)
    assert str(info.value) == f"cannot load image '{path}': {width}x{height} exceeds the limit of 67108864 pixels"

    jpeg = bytearray((ROOT / "images" / "cat_dog.jpg").read_bytes())  # its SOF header made to claim the size
    sof = next(i for i in range(2, len(jpeg)) if jpeg[i] == 0xFF and jpeg[i + 1] in (0xC0, 0xC1, 0xC2))
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))
    path = tmp_path / "big.jpg"
    path.write_bytes(bytes(jpeg))
    w, h = min(width, 65535), min(height, 65535)
    with pytest.raises(GradCamError) as info:
        load_image(path)
    assert str(info.value) == f"cannot load image '{path}': {w}x{h} exceeds the limit of 67108864 pixels"


# -------------------------------------------------------------------------------------------------
# 9. An ONNX file given as a caffemodel


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory) -> dict[str, Path]:
    """A small ONNX model exported from torch and one built with onnx.helper."""
    onnx = pytest.importorskip("onnx")
    import torch
    from onnx import helper

    folder = tmp_path_factory.mktemp("onnx")
    exported = folder / "exported.onnx"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    try:
        torch.onnx.export(net, torch.zeros(1, 3, 8, 8), str(exported), dynamo=False)
    except Exception:  # noqa: BLE001 - an exporter that needs more packages: the helper-built file still tests
        exported = None
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    built = folder / "built.caffemodel"  # the extension does not matter: the content does
    onnx.save(helper.make_model(graph, producer_name="test"), str(built))
    return {name: path for name, path in (("exported", exported), ("built", built)) if path is not None}


@pytest.mark.parametrize("which", ["exported", "built"])
def test_an_onnx_model_is_named_as_such(onnx_files, which):
    """Given to the Caffe loader, an ONNX file is named for what it is (classification.py itself loads
    an ONNX -model_file as ONNX: tests/test_cli_formats.py)."""
    from gradcam_core.caffe import load_caffe

    if which not in onnx_files:
        pytest.skip("torch.onnx.export is not available")
    path = onnx_files[which]
    with pytest.raises(GradCamError) as err:
        load_caffe(DATA / "models" / "mini_vgg16_v1.prototxt", path)
    assert str(err.value) == (f"'{path}' is an ONNX model, not a caffemodel: "
                              "give it as -model_file without -proto_file")


def test_onnx_detection_does_not_import_onnx():
    code = ("import sys; from gradcam_core.formats.caffe import wire, build; "
            "assert 'onnx' not in sys.modules, 'onnx imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
