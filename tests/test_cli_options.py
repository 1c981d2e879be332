"""The options' help as users read it: each command's ``--help`` (fire's rendering, parsed back) lists
exactly its option table (names, order, defaults, the whole help line of each), an option the three
scripts share reads the same in each of them, and a typed value is converted by its table entry before
any file is looked at."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from conftest import run_script

from gradcam_core.cli.commands import captioning, classification, segmentation, vqa
from gradcam_core.cli.options import as_input_size, as_positive_int
from gradcam_core.cli.optiontable import VQA_SIZES, Option, OptionTable, when_given
from gradcam_core.errors import GradCamError
from gradcam_core.web import __main__ as web

SCRIPTS = {"classification.py": classification, "visual_question_answering.py": vqa, "captioning.py": captioning}
# programs beyond the three drop-ins: their help is their table too, their shared options worded their own way
PROGRAMS = {**SCRIPTS, "segmentation.py": segmentation}

# Options the scripts share whose help says something of that script (each a different sentence).
WORDED_PER_SCRIPT = {
    "input_sz": "classification: an ONNX model's own size is the default",
    "backend": "captioning: its CNN comes from the checkpoint",
    "layer_name": "classification: module 30 = relu5_3 of VGG-16",
    "proto_file": "VQA: the VGG-19 image net",
    "model_path": "a different model: VQA's LSTM, neuraltalk2's checkpoint",
}
FLAG = re.compile(r"^    (?:-\w, )?--(\w+)=\w+$")


def help_flags(text: str) -> list[tuple[str, str, str]]:
    """(name, the shown default, the help line) of each flag in fire's ``--help`` FLAGS section."""
    lines = text.splitlines()
    entries: list[list[str]] = []
    for line in lines[lines.index("FLAGS") + 1:]:
        match = FLAG.match(line)
        if match:
            entries.append([match.group(1)])
        elif line.startswith("        ") and entries:
            entries[-1].append(line.strip())
    assert all(len(e) == 3 for e in entries), [e for e in entries if len(e) != 3]  # a default and one help line
    return [(name, default, help_) for name, default, help_ in entries]


def web_command(folder: Path) -> str:
    """A script that runs ``python -m gradcam_core.web`` (as tests/web/test_command.py does)."""
    wrapper = folder / "gradcam_web_command.py"
    wrapper.write_text("import runpy\nrunpy.run_module('gradcam_core.web', run_name='__main__', alter_sys=True)\n")
    return str(wrapper)


def shown_help(script: str, tmp_path: Path) -> str:
    result = run_script(web_command(tmp_path) if script == "web" else script, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr  # fire shows the help on stderr when it is not a terminal


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[str, list[tuple[str, str, str]]]:
    tmp = tmp_path_factory.mktemp("help")
    return {script: help_flags(shown_help(script, tmp)) for script in [*PROGRAMS, "web"]}


@pytest.mark.parametrize("script", [*PROGRAMS, "web"])
def test_the_help_lists_the_option_table_whole(helps, script):
    module = web if script == "web" else PROGRAMS[script]
    options = module.OPTIONS.options
    shown = helps[script]
    assert [name for name, _, _ in shown] == [o.name for o in options]
    for (name, default, help_), option in zip(shown, options):
        assert help_ == option.help, name  # the whole line: nothing lost to fire's docstring parsing
        value = default.removeprefix("Default: ")
        assert (repr(option.default).startswith(value[:-3]) if value.endswith("...")
                else value == repr(option.default)), (name, value, option.default)
    signature = inspect.signature(module.main).parameters
    assert {k: p.default for k, p in signature.items()} == {o.name: o.default for o in options}


def test_an_option_the_scripts_share_reads_the_same_in_each(helps):
    by_name: dict[str, dict[str, str]] = {}
    for script in SCRIPTS:
        for name, _, help_ in helps[script]:
            by_name.setdefault(name, {})[script] = help_
    shared = {name: texts for name, texts in by_name.items() if len(texts) > 1}
    assert {"input_image_path", "save_as_heatmap", "seed", "gpuid", "out_path", "batch_size", "save_overlay",
            "model_file"} <= set(shared)
    for name, texts in shared.items():
        if name == "save_overlay":  # the same sentence, naming each program's own file
            texts = {s: re.sub(r"\w+_overlay_<\w+>\.png", "<file>", t) for s, t in texts.items()}
        if name in WORDED_PER_SCRIPT:
            assert len(set(texts.values())) == 2, (name, texts)  # one script's own wording, the others alike
        else:
            assert len(set(texts.values())) == 1, (name, texts)
    web_help = {name: help_ for name, _, help_ in helps["web"]}
    vqa_help = {name: help_ for name, _, help_ in helps["visual_question_answering.py"]}
    for name in ("seed", "gpuid"):
        assert web_help[name] == vqa_help[name]
    for option in VQA_SIZES:  # the web's copies of the VQA sizes
        assert web_help[f"vqa_{option.name}"] == f"VQA: {vqa_help[option.name]}"


def test_a_bad_value_is_named_before_any_file_is_looked_at(tmp_path):
    """Every value is converted first, in --help order: the first bad one is named, nothing is written."""
    result = run_script("classification.py", "-model_file", "missing.caffemodel", "-batch_size", "0", "-seed", "x",
                        "-out_path", f"{tmp_path / 'out'}/", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["classification.py: error: -seed must be a number, got 'x'"]
    assert not (tmp_path / "out").exists()


def test_the_web_commands_vqa_sizes_are_checked_when_vqa_is_off(tmp_path):
    result = run_script(web_command(tmp_path), "-vqa_rnn_size", "0", "-port", "0", cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "Serving on" not in result.stdout
    assert result.stderr.strip().splitlines() == ["python -m gradcam_core.web: error: -vqa_rnn_size must be at least 1, got 0"]


def test_a_command_is_its_table_over_its_body():
    """What a new option takes: one entry in a command's table; its body gets the converted value."""
    seen = []
    table = OptionTable(Option("size", 224, "side of the input.", when_given(as_input_size)),
                        Option("count", 8, "how many: 1 or more.", as_positive_int),
                        Option("name", "", "a name."))

    @table.command
    def main(v):
        """Summary.

        Description.
        """
        seen.append(vars(v))

    assert str(inspect.signature(main)) == "(size=224, count=8, name='')"
    assert inspect.getdoc(main) == ("Summary.\n\nDescription.\n\nArgs:\n    size: side of the input.\n"
                                    "    count: how many: 1 or more.\n    name: a name.")
    main()  # the defaults, in their own types: -size not given
    main("300", count="2", name=5)  # as fire passes typed values: strings
    assert seen == [{"size": None, "count": 8, "name": ""}, {"size": 300, "count": 2, "name": "5"}]
    with pytest.raises(GradCamError, match=r"^-count must be at least 1, got 0$"):
        main(count="0")
    with pytest.raises(TypeError):
        main(colour="red")
    with pytest.raises(ValueError, match="given twice: size"):
        OptionTable(*table.options, table["size"].but(default=1))
    with pytest.raises(ValueError):
        Option("bad", 0, "two\nlines")
