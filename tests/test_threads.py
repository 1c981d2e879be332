"""The same command gives the same bytes at any thread count: a plain run (all cores) and a torchrun
worker (OMP_NUM_THREADS=1) write identical PNGs (gradcam_core.numerics: MKL's strict reproducible mode).

On the mini VGG-16 fixture, MKL's default mode sums fc8 and the fully connected backward in a
thread-dependent order, which moved a grey level in a few pixels of every PNG of this run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import DATA, ROOT


def _run(threads: int, out: Path) -> dict[str, bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "MKL_NUM_THREADS")}
    env["OMP_NUM_THREADS"] = str(threads)
    models = DATA / "models"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "classification.py"),
         "-proto_file", str(models / "mini_vgg16_v1.prototxt"), "-model_file", str(models / "mini_vgg16_v1.caffemodel"),
         "-input_image_path", str(ROOT / "images" / "cat_dog.jpg"), "-out_path", f"{out}/"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    pngs = {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}
    assert len(pngs) == 3
    return pngs


def test_one_and_two_threads_write_the_same_png_bytes(tmp_path: Path) -> None:
    one, two = _run(1, tmp_path / "t1"), _run(2, tmp_path / "t2")
    assert one.keys() == two.keys()
    differing = [name for name in one if one[name] != two[name]]
    assert not differing, f"PNGs that differ between OMP_NUM_THREADS=1 and 2: {differing}"


def test_a_users_mkl_cbwr_is_kept() -> None:
    code = "import os, gradcam_core; print(os.environ['MKL_CBWR'])"
    env = dict(os.environ, MKL_CBWR="COMPATIBLE")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "COMPATIBLE"
    env.pop("MKL_CBWR")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AUTO,STRICT"
