"""Output names never escape the output folder; writes are atomic; the three images are the Lua ones."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from gradcam_core import GradCamError
from gradcam_core import image as imageops
from gradcam_core.run import outputs


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "..", ".", "a/b", "a\\b", "nul\x00byte", "new\nline\ttab", "x" * 300, "é" * 200,
     "/" * 20, "caption with spaces, and punctuation!"],
)
def test_any_name_gives_one_safe_file_inside_the_folder(tmp_path, name):
    filename = outputs.safe_filename("caption_gb_", name)
    assert "/" not in filename and "\x00" not in filename and "\\" not in filename
    assert len(filename.encode()) <= 255
    assert filename.startswith("caption_gb_") and filename.endswith(".png")
    written = outputs.write_all(tmp_path, [outputs.Rendered(filename, b"data")])
    assert written[0].parent == tmp_path and written[0].read_bytes() == b"data"
    assert sorted(os.listdir(tmp_path)) == [filename]


def test_plain_names_are_kept_verbatim():
    assert outputs.safe_filename("caption_gb_", "A zebra, and a dog!") == "caption_gb_A zebra, and a dog!.png"
    assert outputs.safe_filename("classify_gcam_hm_", "243") == "classify_gcam_hm_243.png"


def test_long_names_stay_distinct():
    a = outputs.safe_filename("caption_gb_", "y" * 400 + "a")
    b = outputs.safe_filename("caption_gb_", "y" * 400 + "b")
    assert a != b and len(a.encode()) == 255


def test_a_failed_write_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(GradCamError, match="cannot write .*a.png: No space left on device"):
        outputs.write_all(tmp_path, [outputs.Rendered("a.png", b"x" * 1000)])
    assert os.listdir(tmp_path) == []  # no partial file, no temporary file


def test_triplet_is_heatmap_gb_and_product():
    torch.manual_seed(0)
    cam = torch.rand(1, 8, 8)
    gb_bgr = torch.randn(3, 8, 8)
    hm, gb, gbcam = outputs.render_triplet("classify", "5", cam, gb_bgr, heatmap=True)
    assert [r.filename for r in (hm, gb, gbcam)] == ["classify_gcam_hm_5.png", "classify_gb_5.png", "classify_gb_gcam_5.png"]
    rgb = gb_bgr.flip(0)
    assert gb.png == imageops.png_bytes(imageops.to_display(rgb))
    assert gbcam.png == imageops.png_bytes(imageops.to_display(rgb * cam))
    assert hm.png == imageops.png_bytes(imageops.to_display(imageops.to_heatmap(cam)))
    grey = outputs.render_triplet("vqa", "dog", cam, None, heatmap=False)
    assert [r.filename for r in grey] == ["vqa_gcam_dog.png"]


def test_a_constant_map_renders_as_zeros_not_nan():
    (grey,) = outputs.render_triplet("classify", "1", torch.zeros(1, 4, 4), None, heatmap=False)
    import io

    from PIL import Image

    assert np.asarray(Image.open(io.BytesIO(grey.png))).max() == 0
