"""gradcam-evaluate: the box files and their bad input (one line each), and the command end to end on
the bundled SqueezeNet 1.1 (a small quick run; the sample folder with every method is slow)."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_script
from PIL import Image

from gradcam_core.errors import GradCamError
from gradcam_core.run.boxes import read_ground_truth

LABELS = {"cat": 281, "dog": 242, "283": 282}


def label_of(name: str) -> int:
    if name not in LABELS:
        raise GradCamError(f"no class named {name!r}")
    return LABELS[name]


def image(folder: Path, name: str, size: tuple[int, int] = (40, 30)) -> Path:
    path = folder / name
    Image.new("RGB", size, (120, 30, 200)).save(path)
    return path


def voc(folder: Path, stem: str, *objects: tuple[str, int, int, int, int]) -> None:
    body = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                   f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    (folder / f"{stem}.xml").write_text(f"<annotation><filename>{stem}.jpg</filename>{body}</annotation>")


def test_voc_boxes_and_each_bad_one_is_one_line(tmp_path):
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    imgs = [image(tmp_path, f"{n}.jpg") for n in ("good", "broken", "outside", "nobox", "unknown")]
    voc(boxes, "good", ("cat", 1, 1, 40, 30), ("283", 5, 6, 10, 12))
    (boxes / "broken.xml").write_text("<annotation><object>")
    voc(boxes, "outside", ("dog", 1, 1, 41, 30))
    voc(boxes, "unknown", ("zebra", 1, 1, 4, 4))
    truth = read_ground_truth(boxes, [(p, p.name) for p in imgs], label_of)
    assert [(b.x1, b.y1, b.x2, b.y2, b.label) for b in truth.boxes[str(imgs[0])]] == [(1, 1, 40, 30, 281),
                                                                                      (5, 6, 10, 12, 282)]
    assert set(truth.boxes) == {str(imgs[0])}
    problems = truth.problems
    assert len(problems) == 7, problems
    assert any(p.startswith(f"{boxes / 'broken.xml'}: not a VOC XML file") for p in problems)
    assert any("the box (1, 1, 41, 30) is outside the image outside.jpg (40 x 30)" in p for p in problems)
    assert any(p.startswith(f"{boxes / 'unknown.xml'} object 1: no class named 'zebra'") for p in problems)
    assert {p for p in problems if p.endswith("no box; scored without localization")} == {
        f"{n}.jpg: no box; scored without localization" for n in ("broken", "outside", "nobox", "unknown")}
    assert all("\n" not in p for p in problems)


def test_csv_boxes_and_a_row_with_missing_fields(tmp_path):
    a, b = image(tmp_path, "a.jpg"), image(tmp_path, "b.png")
    file = tmp_path / "boxes.csv"
    file.write_text("image,x1,y1,x2,y2,label\na.jpg,2,3,20,25,dog\nb.png,2,3,20\nc.jpg,1,1,2,2,cat\n"
                    "b.png,1,x,2,2,cat\n")
    truth = read_ground_truth(file, [(a, "a.jpg"), (b, "b.png")], label_of)
    assert [(x.x1, x.y1, x.x2, x.y2, x.label) for x in truth.boxes[str(a)]] == [(2, 3, 20, 25, 242)]
    assert truth.problems == [
        f"{file} line 3: needs the 6 fields image,x1,y1,x2,y2,label; left out",
        f"{file} line 4: no image 'c.jpg' in this run; left out",
        f"{file} line 5: y1 'x' is not a number; left out",
        "b.png: no box; scored without localization",
    ]
    file.write_text("name,x1\n")
    with pytest.raises(GradCamError, match="the first line must be the header image,x1,y1,x2,y2,label"):
        read_ground_truth(file, [(a, "a.jpg")], label_of)


def test_the_sample_boxes_name_classes_of_the_bundled_synset():
    from gradcam_core.formats.synset import read_synset

    names = read_synset(ROOT / "models" / "squeezenet1_1" / "synset_words.txt")
    jobs = [(p, p.name) for p in sorted((ROOT / "images").glob("*.jpg"))]
    truth = read_ground_truth(ROOT / "images" / "boxes", jobs, names.lookup)
    assert sorted(Path(k).name for k in truth.boxes) == ["bathroom.jpg", "cat_dog.jpg", "tabbycat_dog.jpg"]
    assert truth.problems == ["firehydrants.jpg: no box; scored without localization"]


def test_a_missing_extra_is_one_line(monkeypatch):
    from gradcam_core import extras

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(GradCamError, match=r"^gradcam-evaluate needs the 'evaluate' extra: pip install "
                                           r"'gradcam-core\[evaluate\]'$"):
        extras.require("evaluate")


def command(folder: Path) -> str:
    """A script that runs ``python -m gradcam_core.evaluate``."""
    wrapper = folder / "gradcam_evaluate_command.py"
    wrapper.write_text("import runpy\nrunpy.run_module('gradcam_core.evaluate', run_name='__main__', alter_sys=True)\n")
    return str(wrapper)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # the SqueezeNet's ROAD solves and perturbed forwards: seconds even at 64 x 64
def test_the_command_on_one_image_with_two_methods(tmp_path):
    out = tmp_path / "ev"
    result = run_script(command(tmp_path), "-input_image_path", str(ROOT / "images" / "cat_dog.jpg"),
                        "-methods", "gradcam,hirescam", "-label", "tiger cat", "-input_sz", "64", "-steps", "8", "-boxes",
                        str(ROOT / "images" / "boxes"), "-out_path", f"{out}/", "-save_overlay", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    table = rows(out / "results.csv")
    metrics = {r["metric"] for r in table}
    assert {"deletion_auc", "insertion_auc", "average_drop", "increase_confidence", "road_morf", "road_lerf",
            "road_morf_10", "road_lerf_90", "localization", "pointing", "seconds"} <= metrics
    assert {(r["image"], r["label"], r["class"]) for r in table} == {("cat_dog.jpg", "283", "tiger cat")}
    assert {r["method"] for r in table} == {"gradcam", "hirescam"}
    assert len(table) == len({(r["method"], r["metric"]) for r in table})  # one row per method and metric
    summary = (out / "summary.md").read_text()
    assert "| gradcam |" in summary and "| hirescam |" in summary and "**" in summary
    assert "over the 1 image(s) with a box of the explained class; 0 image(s) scored without localization" in summary
    for name in ("deletion_insertion.png", "bar_localization.png", "bar_seconds.png", "cat_dog.jpg/methods.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG"


@pytest.mark.parametrize("args, line", [
    (["-methods", "gradcam,nosuch"], "-methods 'nosuch': unknown CAM method 'nosuch'"),
    (["-boxes", "missing/"], "-boxes: missing/ not found"),
    (["-steps", "0"], "-steps must be at least 1, got 0"),
])
def test_bad_options_are_one_line(tmp_path, args, line):
    result = run_script(command(tmp_path), *args, "-out_path", f"{tmp_path / 'ev'}/", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and line in lines[0], result.stderr
    assert not (tmp_path / "ev").exists()


@pytest.mark.slow  # every method (Score-CAM: a forward per channel) and ROAD's solves, each image twice
def test_sample_images_with_every_method(tmp_path):
    """Two sample images (one with a box of the class, one without a box) and the sample boxes on the
    bundled SqueezeNet, every method at its default layer, small (64 x 64, 8 steps); the whole folder at
    224 is bench/evaluate_bench.py's row (many minutes on 2 cores)."""
    import shutil

    from gradcam_core.engine.methods import method_names

    images = tmp_path / "images"
    images.mkdir()
    for name in ("cat_dog.jpg", "firehydrants.jpg"):
        shutil.copy(ROOT / "images" / name, images / name)
    out = tmp_path / "ev"
    result = run_script(command(tmp_path), "-input_image_path", str(images), "-boxes", str(ROOT / "images" / "boxes"),
                        "-label", "tiger cat", "-input_sz", "64", "-steps", "8", "-out_path", f"{out}/", cwd=tmp_path,
                        timeout=2400)
    assert result.returncode == 0, result.stderr
    assert "warning: firehydrants.jpg: no box; scored without localization" in result.stderr.splitlines()
    table = rows(out / "results.csv")
    assert {r["method"] for r in table} == set(method_names())
    assert {r["image"] for r in table} == {"cat_dog.jpg", "firehydrants.jpg"}
    assert {r["metric"] for r in table if r["image"] == "cat_dog.jpg"} >= {"localization", "pointing", "road_morf"}
    summary = (out / "summary.md").read_text()
    assert "1 image(s) scored without localization" in summary
    assert all(f"| {m} |" in summary for m in method_names())
    assert (out / "deletion_insertion.png").is_file() and (out / "bar_deletion_auc.png").is_file()


def test_the_summary_has_means_intervals_and_the_best_in_bold():
    from gradcam_core.run.evaluate import Evaluation, EvaluationOptions, bootstrap_interval, summary_markdown

    class FakeTask:
        model_name = "net.onnx"

    rows = []
    for method, deletion, pointing in (("a", [0.1, 0.3], [0.0, 0.0]), ("b", [0.2, 0.2], [1.0, 1.0])):
        for i, (d, p) in enumerate(zip(deletion, pointing)):
            rows += [{"image": f"{i}.jpg", "label": 1, "class": "x", "method": method, "metric": "deletion_auc",
                      "value": d}]
            if i == 0 or method == "b":
                rows += [{"image": f"{i}.jpg", "label": 1, "class": "x", "method": method, "metric": "pointing",
                          "value": p}]
    result = Evaluation(rows=rows, images=2, without_boxes=1)
    opts = EvaluationOptions(methods=("a", "b"), layer="conv5", steps=10, boxes=Path("boxes"))
    text = summary_markdown(result, opts, FakeTask(), 1)  # type: ignore[arg-type]
    mean, low, high = bootstrap_interval([0.1, 0.3], 1000, opts.seed)
    assert mean == pytest.approx(0.2) and 0.1 <= low <= mean <= high <= 0.3
    assert bootstrap_interval([0.2, 0.2], 1000, 0) == (0.2, 0.2, 0.2)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0] == "| method | deletion_auc ↓ | pointing ↑ |"
    assert table[1].startswith("| a | ") and table[2].startswith("| b | ")
    assert table[1].split(" | ")[1] == f"**0.2 [{low:.3g}, {high:.3g}]**"  # equal means: both in bold
    assert table[2].split(" | ")[1] == "**0.2 [0.2, 0.2]**"
    assert table[1].split(" | ")[2] == "0 [0, 0] |" and table[2].split(" | ")[2] == "**1 [1, 1]** |"
    assert "1 image(s) scored without localization" in text


def test_the_help_lists_the_option_table(tmp_path):
    from test_cli_options import help_flags

    from gradcam_core.cli.commands import evaluate

    result = run_script(command(tmp_path), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = help_flags(result.stdout + result.stderr)
    assert [name for name, _, _ in shown] == [o.name for o in evaluate.OPTIONS.options]
    assert all(help_ == o.help for (_, _, help_), o in zip(shown, evaluate.OPTIONS.options))


@pytest.mark.slow  # a fresh interpreter with matplotlib blocked
def test_the_command_without_the_evaluate_extra_names_it(tmp_path):
    from test_package import RUN_CLI, _blocked, _one_line

    argv = ["gradcam-evaluate", "-out_path", str(tmp_path / "out")]
    result = _blocked(("matplotlib",), RUN_CLI.format(argv=argv, module="gradcam_core.cli.commands.evaluate"), tmp_path)
    _one_line(result, "gradcam-evaluate",
              "gradcam-evaluate needs the 'evaluate' extra: pip install 'gradcam-core[evaluate]'")
    assert not (tmp_path / "out").exists()


def test_the_default_model_is_the_bundled_one_outside_a_checkout(tmp_path, monkeypatch):
    """An installed package (no checkout) run from an empty folder: the default model files are the
    bundled SqueezeNet's."""
    from gradcam_core.cli import paths
    from gradcam_core.cli.commands import evaluate
    from gradcam_core.data import SQUEEZENET, bundled

    monkeypatch.setattr(paths, "CHECKOUT", None)
    monkeypatch.chdir(tmp_path)
    for option, default in (("model_file", evaluate.MODEL), ("proto_file", evaluate.PROTO)):
        found = paths.input_path(option, default, default)
        assert found == bundled(SQUEEZENET) / Path(default).name and found.is_file()
    with pytest.raises(GradCamError, match="-model_file: models/squeezenet1_1/nosuch.caffemodel not found"):
        paths.input_path("model_file", "models/squeezenet1_1/nosuch.caffemodel", "models/squeezenet1_1/nosuch.caffemodel")
