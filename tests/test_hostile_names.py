"""Output names: a caption, answer or -output_image_name holding '/', '..', NUL, newlines,
bytes that are not UTF-8 or 300 characters never escapes -out_path and never fails. The mapping is
outputs.safe_filename's (documented in gradcam_core/outputs.py); here it is checked as a property of
any text, then through the three CLIs as users run them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cli_runner
import pytest
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcam_core.run import outputs

MODEL = DATA / "models" / "mini_vgg16_v1"
KINDS = ("gcam_hm", "gb", "gb_gcam")


@pytest.fixture(scope="module")
def cli() -> cli_runner.PrewarmedCLI:
    return cli_runner.shared()


def tree(folder: Path) -> list[str]:
    """Every path under ``folder``, relative, as the file system spells it (bytes decoded as argv is)."""
    return sorted(os.fsdecode(os.path.relpath(os.path.join(d, n), folder))
                  for d, dirs, files in os.walk(folder) for n in dirs + files)


# --------------------------------------------------------------------------------------------------
# The mapping, for any text (the library API can pass what argv cannot: NUL, lone surrogates)


@settings(max_examples=150, deadline=None)
@given(name=st.text(max_size=400) | st.sampled_from(["..", ".", "../..", "/", "\x00", "\n" * 3, "\udcff" * 300]))
def test_any_name_is_one_writable_file_inside_the_folder(tmp_path_factory, name):
    folder = tmp_path_factory.mktemp("out")
    filename = outputs.safe_filename("caption_gb_", name)
    (path,) = outputs.write_all(folder, [outputs.Rendered(filename, b"png")])
    assert path.parent == folder and tree(folder) == [filename] and path.read_bytes() == b"png"
    assert len(os.fsencode(filename)) <= outputs.NAME_MAX and filename.startswith("caption_gb_")
    assert "\n" not in filename and "\x00" not in filename


@pytest.mark.parametrize("name, expected", [
    ("../../etc/passwd", "caption_gb_.._.._etc_passwd.png"),
    ("..", "caption_gb_...png"),
    ("a\x00b", "caption_gb_a_b.png"),
    ("two\nlines\r\n", "caption_gb_two_lines__.png"),
    ("next\x85line\u2028sep", "caption_gb_next_line_sep.png"),  # C1 NEL and LINE SEPARATOR
    ("caf\udce9", "caption_gb_caf\udce9.png"),  # a Latin-1 byte from argv: written back as that byte
    ("\ud800", "caption_gb__.png"),  # a lone surrogate no file system can take
    ("a dog, a cat!", "caption_gb_a dog, a cat!.png"),  # anything else is kept as typed
])
def test_the_documented_mapping(name, expected):
    assert outputs.safe_filename("caption_gb_", name) == expected


def test_long_names_are_cut_on_a_character_boundary_and_stay_distinct():
    names = ["é" * 300, "é" * 299 + "e", "\udcff" * 300]
    files = [outputs.safe_filename("caption_gb_gcam_", n) for n in names]
    assert len(set(files)) == 3
    for name, filename in zip(names, files):
        assert len(os.fsencode(filename)) <= 255 and filename.endswith(".png")
        kept = filename[len("caption_gb_gcam_") : filename.rindex("~")]
        assert name.startswith(kept)


def test_a_nul_cannot_even_reach_argv():
    """So a NUL can only come from the library API (tested above) or a model's vocabulary."""
    with pytest.raises(ValueError, match="null"):
        subprocess.run([sys.executable, "-c", "pass", "a\x00b"], check=False)


# --------------------------------------------------------------------------------------------------
# Through the three CLIs


def expected_files(prefix: str, name: str) -> list[str]:
    return sorted(outputs.safe_filename(f"{prefix}_{kind}_", name) for kind in KINDS)


@pytest.mark.parametrize("name", [
    "../../outside/x\ny",  # separators, '..', a newline
    "\udcff/" + "x" * 300,  # a byte that is not UTF-8, and 300+ characters
], ids=["dots-slashes-newline", "latin1-byte-300-chars"])
def test_classification_output_image_name(cli, tmp_path, name):
    out = tmp_path / "out"
    result = cli.run("classification.py", "-proto_file", f"{MODEL}.prototxt", "-model_file", f"{MODEL}.caffemodel",
                     "-output_image_name", name, "-out_path", str(out))
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path) == ["out"] + [f"out/{f}" for f in expected_files("classify", name)]


def test_vqa_answer_from_a_custom_vocabulary(cli, tmp_path):
    vocab = json.loads((DATA / "VQA_LSTM_CNN" / "data_prepro.json").read_text())
    answer = "../../up/and\naway"
    vocab["ix_to_ans"]["2"] = answer  # "cat" in the fixture
    vocab_file = tmp_path / "vocab.json"
    vocab_file.write_text(json.dumps(vocab))
    out = tmp_path / "out"
    result = cli.run(
        "visual_question_answering.py", "-proto_file", str(DATA / "models" / "mini_vgg19_v1.prototxt"),
        "-model_file", str(DATA / "models" / "mini_vgg19_v1.caffemodel"),
        "-model_path", str(DATA / "VQA_LSTM_CNN" / "lstm.t7"), "-vocab_file", str(vocab_file),
        "-input_encoding_size", "6", "-rnn_size", "8", "-rnn_layers", "2", "-common_embedding_size", "16",
        "-num_output", "10", "-answer", answer, "-out_path", str(out))
    assert result.returncode == 0, result.stderr
    assert f"Grad-CAM answer: \t{answer}" in result.stdout  # the answer explained is the one asked for
    assert tree(tmp_path) == sorted(["out", "vocab.json"] + [f"out/{f}" for f in expected_files("vqa", answer)])


def test_captioning_caption_with_dots_slashes_and_300_characters(cli, tmp_path):
    caption = "a dog/../../cat " + "." * 290 + " on/a/sofa"
    out = tmp_path / "out"
    result = cli.run("captioning.py", "-model_path", str(DATA / "neuraltalk2" / "mini_caption_model.t7"),
                     "-caption", caption, "-out_path", str(out))
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path) == ["out"] + [f"out/{f}" for f in expected_files("caption", caption)]
