"""Command-line plumbing shared by the three entry scripts."""
from __future__ import annotations

import pytest

from gradcam_core import GradCamError
from gradcam_core.cli.app import _normalize_argv
from gradcam_core.cli.paths import device_for
from gradcam_core.cli.options import as_int, as_int_list

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
