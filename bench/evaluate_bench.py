"""The evaluation's benchmark row (``python bench/run.py --only evaluate``; also part of the full run):
``gradcam-evaluate`` on the sample folder (``images/``: 4 images, every CAM method, the sample boxes,
224 deletion and insertion steps, ``-batch_size 32``, ``-save_overlay 1``) in a fresh process, its wall
time against the time of the maps alone inside that run (the ``seconds`` rows of its ``results.csv``: each method's
``explain`` call, summed over methods and images). The last run's outputs stay in
``<cache>/evaluation/`` (the docs' worked example comes from there)."""
from __future__ import annotations

import csv
import shutil
import statistics
from pathlib import Path

import common as bench  # bench/common.py

SECTION = "gradcam-evaluate (the sample folder, subprocess)"


def evaluate_run(cache: Path, repeats: int, threads: int, report: bench.Report) -> None:
    """``repeats`` runs of the whole evaluation (at least 1), median."""
    env = bench.child_env(threads)
    walls, maps, images, methods = [], [], 0, 0
    out = str(cache / "evaluation")
    for i in range(max(1, repeats)):
        shutil.rmtree(out, ignore_errors=True)
        cmd = ["-c", "import runpy; runpy.run_module('gradcam_core.evaluate', run_name='__main__', alter_sys=True)",
               "-input_image_path", str(bench.ROOT / "images"),
               "-boxes", str(bench.ROOT / "images" / "boxes"), "-out_path", out + "/", "-save_overlay", "1"]
        wall, peak, code, _, err = bench.run_child(cmd, bench.ROOT, env)
        if code != 0:
            report.add(bench.Row("gradcam-evaluate on images/", section=SECTION,
                                 extra=f"failed (exit {code}): {err.strip()[-300:]}"))
            return
        with open(Path(out) / "results.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["metric"] == "seconds"]
        walls.append(wall)
        maps.append(sum(float(r["value"]) for r in rows))
        images, methods = len({r["image"] for r in rows}), len({r["method"] for r in rows})
        print(f"  evaluation round {i + 1}: {wall:.1f} s, maps {maps[-1]:.2f} s, peak {peak / bench.GB:.2f} GB",
              flush=True)
    wall, alone = statistics.median(walls), statistics.median(maps)
    report.add(bench.Row(f"maps alone: {methods} methods x {images} images (each method's explain call in the run)",
                         alone, min(maps), section=SECTION))
    report.add(bench.Row(f"whole `gradcam-evaluate -input_image_path images/ -boxes images/boxes` ({methods} methods, "
                         "224 steps, every metric, CSV, summary, plots)", wall, min(walls), section=SECTION,
                         extra=f"{wall / alone:.0f}x the maps alone" if alone > 0 else ""))
