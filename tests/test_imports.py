"""The three CLIs never import heavy modules they do not use (torchvision, OpenCV, matplotlib, SciPy,
Captum, NLTK): they are bench/test dependencies of this project at most, and importing torchvision
alone costs about 2 s. NLTK is the VQA program's question tokenizer: only that program may import it
(and SciPy, which nltk imports where it is installed); the other two must not.

Each CLI runs for real, in ONE fresh interpreter (so torch is imported once): its ``--help``, then a
tiny fixture run through every stage (model load, explain, PNG writing). After each, the driver
records which forbidden modules ``sys.modules`` holds.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import DATA, ROOT

FORBIDDEN = ("torchvision", "cv2", "matplotlib", "scipy", "captum", "nltk")
# The VQA program tokenizes its question with nltk; nltk/metrics imports SciPy when it is installed.
VQA_ALLOWED = ("nltk", "scipy")

DRIVER = r"""
import json, os, runpy, sys
runs = json.loads(sys.argv[1])
report = []
for script, args, forbidden in runs:
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(script)  # as `python script` has it
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(forbidden))
    report.append([script, args[:1], code, loaded])
print("REPORT " + json.dumps(report))
"""


@pytest.mark.slow  # the three CLIs in a fresh interpreter
def test_clis_import_no_heavy_unused_modules(tmp_path):
    models = DATA / "models"
    image = str(ROOT / "images" / "cat_dog.jpg")
    classification = [
        "-proto_file", str(models / "mini_vgg16_v1.prototxt"), "-model_file", str(models / "mini_vgg16_v1.caffemodel"),
        "-input_image_path", image, "-out_path", f"{tmp_path / 'cls'}/",
    ]
    vqa = [
        "-proto_file", str(models / "mini_vgg19_v1.prototxt"), "-model_file", str(models / "mini_vgg19_v1.caffemodel"),
        "-model_path", str(DATA / "VQA_LSTM_CNN" / "lstm.t7"), "-vocab_file", str(DATA / "VQA_LSTM_CNN" / "data_prepro.json"),
        "-input_encoding_size", "6", "-rnn_size", "8", "-rnn_layers", "2", "-common_embedding_size", "16",
        "-num_output", "10", "-input_image_path", image, "-question", "What animal?", "-answer", "dog",
        "-out_path", f"{tmp_path / 'vqa'}/",
    ]
    captioning = [
        "-model_path", str(DATA / "neuraltalk2" / "mini_caption_model.t7"), "-input_image_path", image,
        "-out_path", f"{tmp_path / 'cap'}/",
    ]
    runs = []
    vqa_forbidden = [m for m in FORBIDDEN if m not in VQA_ALLOWED]
    # The VQA runs come last: once it has loaded nltk, later runs in this interpreter would see it.
    for script, args, help_forbidden, run_forbidden in (
        ("classification.py", classification, FORBIDDEN, FORBIDDEN),
        ("captioning.py", captioning, FORBIDDEN, FORBIDDEN),
        ("visual_question_answering.py", vqa, FORBIDDEN, vqa_forbidden),  # --help tokenizes nothing
    ):
        runs += [[str(ROOT / script), ["--help"], help_forbidden], [str(ROOT / script), args, run_forbidden]]
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(runs)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    report = json.loads(lines[-1][len("REPORT "):])
    for script, first_arg, code, loaded in report:
        assert code == 0, f"{script} {first_arg}: exit code {code}\n{proc.stderr[-2000:]}"
        assert loaded == [], f"after {script} {first_arg}: {', '.join(loaded)} imported"
    for sub in ("cls", "vqa", "cap"):
        assert len(list((tmp_path / sub).glob("*.png"))) == 3, f"the {sub} run wrote no images"


WEB_DRIVER = r"""
import json, sys
from pathlib import Path
from gradcam_core.web.app import create_app
from gradcam_core.web.demo import Demo, load_captioning, load_classification
root, data = Path(sys.argv[1]), Path(sys.argv[2])
bundled = root / "models" / "squeezenet1_1"
tasks = {"classification": load_classification(bundled / "squeezenet1_1.caffemodel", proto_file=bundled / "deploy.prototxt"),
         "captioning": load_captioning(data / "neuraltalk2" / "mini_caption_model.t7")}
create_app(Demo(tasks))
print("REPORT " + json.dumps(sorted(sys.modules)))
"""


def test_the_web_app_imports_neither_the_cli_nor_heavy_unused_modules():
    """web/ and cli/ are sibling front ends: the web app and its models (web.app, web.demo) import
    nothing of cli/ (only the command, web/__main__, borrows the CLI's option plumbing), and serving
    classification and captioning imports none of the modules the CLIs may not import either."""
    proc = subprocess.run([sys.executable, "-c", WEB_DRIVER, str(ROOT), str(DATA)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    modules = json.loads(lines[-1][len("REPORT "):])
    assert "gradcam_core.web.app" in modules and "starlette" in modules
    assert [m for m in modules if m == "gradcam_core.cli" or m.startswith("gradcam_core.cli.")] == []
    assert sorted({m.split(".")[0] for m in modules} & set(FORBIDDEN)) == []
