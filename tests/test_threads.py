"""Thread counts and output bytes.

By default a run's bytes are fixed for a given thread count: MKL (PyTorch's CPU BLAS) splits the inner
sum of some matrix products between threads, so a torchrun worker (OMP_NUM_THREADS=1) and a plain run
on two cores may differ by one grey level in a few pixels (the mini VGG-16 fixture below: 3 pixels of
each PNG). MKL's strict reproducible mode, ``MKL_CBWR=AUTO,STRICT`` in the environment, makes the
bytes the same at every thread count; it is not the default because it slows the one-row fully
connected products of a single-image run. This is the documented way to get thread-independent bytes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, ROOT

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run


def _run(threads: int, out: Path, mkl_cbwr: str) -> dict[str, bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "MKL_NUM_THREADS")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_CBWR=mkl_cbwr)
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


@pytest.mark.parametrize("threads", [2, 4])
def test_strict_mkl_mode_gives_the_same_png_bytes_at_any_thread_count(threads: int, tmp_path: Path) -> None:
    one = _run(1, tmp_path / "t1", "AUTO,STRICT")
    many = _run(threads, tmp_path / f"t{threads}", "AUTO,STRICT")
    assert one.keys() == many.keys()
    differing = [name for name in one if one[name] != many[name]]
    assert not differing, f"with MKL_CBWR=AUTO,STRICT, PNGs differ between 1 and {threads} threads: {differing}"
