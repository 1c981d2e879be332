"""Command-line plumbing shared by the three entry scripts."""
from __future__ import annotations

import pytest

from gradcam_core import GradCamError
from gradcam_core.cli.app import _normalize_argv
from gradcam_core.cli.options import as_float, as_float_list, as_int, as_int_list, as_label_list
from gradcam_core.cli.paths import device_for

PARAMS = ["label", "layer_name", "answer", "gpuid", "question"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["-label", "243"], ["--label='243'"]),
        (["--label=243"], ["--label='243'"]),
        (["--label", "-1"], ["--label='-1'"]),
        (["-label=243,283"], ["--label='243,283'"]),
        (["-question", "-what?"], ["--question='-what?'"]),
        (["-answer", ""], ["--answer=''"]),
        (["-g", "0"], ["--gpuid='0'"]),  # fire's help offers unique first letters
    ],
)
def test_th_style_and_fire_style_options(argv, expected):
    assert _normalize_argv(argv, PARAMS) == expected


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-lable", "3"], "unknown option -lable; valid options: -label -layer_name"),
        (["-l", "3"], "unknown option -l"),  # ambiguous: label / layer_name
        (["cat.jpg"], "unexpected argument 'cat.jpg'"),
        (["-label"], "option -label needs a value"),
        (["-label", "3", "-label", "5"], r"option -label is given twice \(-label 3 and -label 5\): give several "
                                         r"in one value, as -label 3,5"),
        (["-g", "0", "--gpuid=1"], r"option -gpuid is given twice \(-gpuid 0 and -gpuid 1\): give it once"),
    ],
)
def test_bad_command_lines_are_refused_before_anything_runs(argv, message):
    with pytest.raises(GradCamError, match=message):
        _normalize_argv(argv, PARAMS)


def test_values_convert_like_torch_cmdline():
    assert as_int("label", "243") == 243 and as_int("label", "-1") == -1 and as_int("seed", "1e2") == 100
    assert as_int_list("label", "243,283") == [243, 283] and as_int_list("label", (1, 2)) == [1, 2]
    with pytest.raises(GradCamError, match="-label must be a number, got 'cat'"):
        as_int("label", "cat")
    with pytest.raises(GradCamError, match="whole number"):
        as_int("input_sz", "22.5")


def test_gpuid_without_cuda_is_a_clear_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert str(device_for(-1)) == "cpu"
    with pytest.raises(GradCamError, match="-gpuid 0 asks for a GPU, but CUDA is not available"):
        device_for(0)


def test_out_path_is_checked_early_and_created_only_when_writing(tmp_path):
    from gradcam_core.cli.paths import check_out_dir

    nested = tmp_path / "a" / "b"
    assert check_out_dir(str(nested)) == nested and not (tmp_path / "a").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(GradCamError, match="is not a folder"):
        check_out_dir(str(a_file / "sub"))
    with pytest.raises(GradCamError, match="is not a folder"):
        check_out_dir(str(a_file))


@pytest.mark.parametrize("value, expected", [
    ("243", [243]), ("+3,-1", [3, -1]), ("243 283", [243, 283]), ("tiger cat, 283", ["tiger cat", 283]),
    ("٣", ["٣"]), ("５", ["５"]), ("1_000", ["1_000"]), ("1e3", ["1e3"]), ("٣,5", ["٣", 5]),
])
def test_labels_are_ascii_digits_with_a_sign_and_anything_else_a_class_name(value, expected):
    """Python's int() and float() read Arabic-Indic and full-width digits and 1_000 as numbers."""
    assert as_label_list("label", value) == expected


@pytest.mark.parametrize("convert", [lambda v: as_int("gpuid", v), lambda v: as_float("input_scale", v),
                                     lambda v: as_float_list("mean_value", v)], ids=["int", "float", "float list"])
@pytest.mark.parametrize("value", ["٣", "５", "1_000"])
def test_numbers_are_ascii_as_lua_read_them(convert, value):
    with pytest.raises(GradCamError, match="must be"):
        convert(value)

