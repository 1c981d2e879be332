"""The package as a user installs it: a wheel built from the checkout, installed into a folder of its
own and run from an empty folder (no checkout to fall back on), and the optional extras' one-line
messages when an extra is not installed.

The wheel is installed with ``pip install --target`` and run with ``PYTHONPATH`` set to that folder
from an empty working directory: the project venv's dependencies (torch ...) are used, and its
editable install of the checkout is shadowed (the test checks which copy of the package runs).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import DATA, ROOT

BLOCK = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None  # as if not installed\n"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONNOUSERSITE="1", **extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the wheel, the folder it is installed in, an empty working folder)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    # a copy of what the wheel is built from, so the build's own files stay out of the checkout
    shutil.copytree(ROOT / "gradcam_core", src / "gradcam_core", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist, site, empty = base / "dist", base / "site", base / "empty"
    empty.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
                           capture_output=True, text=True, timeout=300, env=_env())
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(dist.glob("gradcam_core-*.whl"))
    done = subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return wheel, site, empty


def _run(installed, args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    _, site, empty = installed
    return subprocess.run(args, cwd=empty, capture_output=True, text=True, timeout=timeout,
                          env=_env(PYTHONPATH=str(site)))


@pytest.mark.slow
def test_the_wheel_holds_the_bundled_files_and_no_test_helpers(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("squeezenet1_1/deploy.prototxt", "squeezenet1_1/squeezenet1_1.caffemodel",
                    "squeezenet1_1/squeezenet1_1.pth", "squeezenet1_1/synset_words.txt", "images/cat_dog.jpg"):
        assert f"gradcam_core/data/{shipped}" in names
    assert "gradcam_core/web/static/index.html" in names
    assert not [n for n in names if n.endswith("caffe/write.py") or n.startswith(("tests/", "bench/"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("gradcam-classify", "gradcam-vqa", "gradcam-caption", "gradcam-web", "gradcam-convert"):
        assert f"{script} = " in scripts


@pytest.mark.slow
def test_gradcam_classify_from_the_wheel_explains_the_bundled_model_from_an_empty_folder(installed):
    _, site, empty = installed
    which = _run(installed, [sys.executable, "-c", "import gradcam_core; print(gradcam_core.__file__)"])
    assert Path(which.stdout.strip()).is_relative_to(site), which.stdout + which.stderr
    # the missing default model's line says how to run the bundled one
    missing = _run(installed, [str(site / "bin" / "gradcam-classify")])
    assert missing.returncode == 2 and "the bundled SqueezeNet 1.1 is -proto_file " in missing.stderr
    options = missing.stderr.strip().split("the bundled SqueezeNet 1.1 is ")[1].split()
    assert Path(options[1]).is_relative_to(site) and Path(options[3]).is_relative_to(site)
    # as it says, on the original's default image (images/cat_dog.jpg, found among the package's own)
    result = _run(installed, [str(site / "bin" / "gradcam-classify"), *options, "-label", "243,283"])
    assert result.returncode == 0, result.stderr
    assert "Label 243: boxer" in result.stdout and "Label 283: tiger cat" in result.stdout
    assert sorted(p.name for p in (empty / "output").iterdir()) == sorted(
        f"classify_{kind}_{label}.png" for kind in ("gcam_hm", "gb", "gb_gcam") for label in (243, 283))
    # the same image as the checkout's, explained identically
    assert (empty / "output" / "classify_gcam_hm_243.png").stat().st_size > 1000
    shutil.rmtree(empty / "output")


WEB = r"""
import json, sys, warnings
from pathlib import Path
from gradcam_core.web import __main__ as command
from gradcam_core.web.app import create_app
from gradcam_core.web.demo import Demo, find_samples, load_classification
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
model = load_classification(Path(command.MODEL), proto_file=Path(command.PROTO))
app = create_app(Demo({"classification": model}, {}, find_samples(Path(command.SAMPLES))))
with TestClient(app, base_url="http://localhost") as http:
    config = http.get("/api/config").json()
    reply = http.post("/api/explain", data={"task": "classification", "sample": "cat_dog.jpg", "label": "243"})
print("REPORT " + json.dumps({"samples": config.get("samples"), "status": reply.status_code, "body": reply.text[:300],
                              "paths": [command.MODEL, command.SAMPLES]}))
"""


@pytest.mark.slow
def test_the_web_demo_from_the_wheel_serves_the_bundled_model_and_samples(installed):
    _, site, _ = installed
    result = _run(installed, [sys.executable, "-c", WEB])
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])
    assert all(Path(p).is_relative_to(site) for p in report["paths"])
    assert "cat_dog.jpg" in json.dumps(report["samples"])
    assert report["status"] == 200, report
    help_ = _run(installed, [str(site / "bin" / "gradcam-web"), "--help"])
    assert help_.returncode == 0 and "gradcam-web - The Grad-CAM web demo" in help_.stdout + help_.stderr


# ------------------------------------------------------------------------------ the extras' lines


def _blocked(names: tuple[str, ...], code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` with the modules ``names`` not importable, in ``tmp_path``."""
    return subprocess.run([sys.executable, "-c", BLOCK.format(names=names) + code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=_env(PYTHONPATH=str(ROOT)))


RUN_CLI = "sys.argv = {argv!r}\nfrom gradcam_core.cli.app import run_cli\nfrom {module} import main\nrun_cli(main)\n"


def _one_line(result: subprocess.CompletedProcess, prog: str, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"{prog}: error: {message}"], result.stderr


@pytest.mark.slow  # a subprocess per run: in the full suite, not the quick one
def test_an_onnx_model_without_the_onnx_extra_names_the_extra(tmp_path):
    onnx_file = tmp_path / "net.onnx"
    onnx_file.write_bytes(b"\x08\x07")  # an ONNX name is enough: the extra is checked before the file is read
    argv = ["gradcam-classify", "-model_file", str(onnx_file), "-out_path", str(tmp_path / "out")]
    code = RUN_CLI.format(argv=argv, module="gradcam_core.cli.commands.classification")
    result = _blocked(("onnx", "onnx2torch"), code, tmp_path)
    _one_line(result, "gradcam-classify", "ONNX models need the 'onnx' extra: pip install 'gradcam-core[onnx]'")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a subprocess per run: in the full suite, not the quick one
def test_the_converter_without_the_onnx_extra_names_the_extra(tmp_path):
    models = DATA / "models"
    code = ("sys.argv = ['gradcam-convert']\nfrom gradcam_core.convert import main\n"
            f"sys.exit(main([{str(models / 'mini_vgg16_v1.prototxt')!r}, {str(models / 'mini_vgg16_v1.caffemodel')!r},"
            f" {str(tmp_path / 'out.onnx')!r}]))\n")
    result = _blocked(("onnx",), code, tmp_path)
    _one_line(result, "python -m gradcam_core.convert",  # main(argv) given: the module's name
              "the converter (gradcam-convert) needs the 'onnx' extra: pip install 'gradcam-core[onnx]'")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.slow  # a subprocess per run: in the full suite, not the quick one
def test_the_web_demo_without_the_web_extra_names_the_extra(tmp_path):
    code = RUN_CLI.format(argv=["gradcam-web"], module="gradcam_core.web.__main__")
    result = _blocked(("starlette", "uvicorn"), code, tmp_path)
    _one_line(result, "gradcam-web", "the web demo needs the 'web' extra: pip install 'gradcam-core[web]'")


@pytest.mark.slow  # a subprocess per run: in the full suite, not the quick one
def test_vqa_without_the_vqa_extra_names_the_extra_before_any_work(tmp_path):
    argv = ["gradcam-vqa", "-out_path", str(tmp_path / "out")]  # its default model files do not exist here
    result = _blocked(("nltk",), RUN_CLI.format(argv=argv, module="gradcam_core.cli.commands.vqa"), tmp_path)
    _one_line(result, "gradcam-vqa",
              "VQA questions (tokenized by nltk) need the 'vqa' extra: pip install 'gradcam-core[vqa]'")


@pytest.mark.slow  # a subprocess per run: in the full suite, not the quick one
def test_a_caffe_model_needs_no_extra(tmp_path):
    """The core install explains a Caffe model: the three extras blocked, classification runs."""
    models = DATA / "models"
    argv = ["gradcam-classify", "-proto_file", str(models / "mini_vgg16_v1.prototxt"), "-model_file",
            str(models / "mini_vgg16_v1.caffemodel"), "-input_image_path", str(ROOT / "images" / "cat_dog.jpg"),
            "-label", "3", "-out_path", str(tmp_path / "out")]
    blocked = ("onnx", "onnx2torch", "starlette", "uvicorn", "python_multipart", "multipart", "nltk", "scipy")
    result = _blocked(blocked, RUN_CLI.format(argv=argv, module="gradcam_core.cli.commands.classification"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


# ------------------------------------------------------------------------------ the format registry


def test_the_format_registry_recognises_each_format_and_its_prototxt_rule(tmp_path):
    from gradcam_core.errors import GradCamError
    from gradcam_core.formats.registry import format_of

    bundled = ROOT / "models" / "squeezenet1_1"
    caffe = format_of(bundled / "squeezenet1_1.caffemodel")
    assert (caffe.name, caffe.needs_prototxt, caffe.extra, caffe.preprocessing) == ("caffe", True, "", "caffe")
    tv = format_of(bundled / "squeezenet1_1.pth", arch="squeezenet1_1")
    assert (tv.name, tv.needs_prototxt, tv.extra, tv.preprocessing) == ("torchvision", False, "", "torchvision")
    named = tmp_path / "corrupt.onnx"
    named.write_bytes(b"not a model")  # an ONNX name: read as ONNX, so that its problem is named as such
    assert format_of(named).name == "onnx"
    model = tmp_path / "model.bin"  # ONNX content under another name: ir_version, then a graph
    model.write_bytes(b"\x08\x07" + b"\x3a\x00")
    onnx_fmt = format_of(model)
    assert (onnx_fmt.name, onnx_fmt.needs_prototxt, onnx_fmt.extra) == ("onnx", False, "onnx")
    with pytest.raises(GradCamError, match=r"is a caffemodel: it needs its deploy prototxt \(-proto_file\)$"):
        caffe.check(bundled / "squeezenet1_1.caffemodel", None)
