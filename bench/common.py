"""What the benchmark's modules share (bench/run.py and its row modules: cam_methods.py,
detection_row.py, evaluate_bench.py): the table's rows, the timing loop, the floor, fresh-process runs,
the VGG-16 they are measured on and the constants of the input."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # caffe_writer: the fixture writer the benchmark's VGG-16 is made with

LAYER = "relu5_3"
CLASS = 242  # 0-based: label 243, "boxer" (the cat_dog image's dog)
CLASSES_K4 = [242, 281, 282, 285]  # boxer, tabby, tiger cat, Egyptian cat
MODEL_NAME = "VGG_ILSVRC_16_layers"
SQUEEZENET = ROOT / "models" / "squeezenet1_1"
GB = 1e9
MB = 1e6


@dataclass
class Row:
    """One line of the table."""

    what: str
    seconds: float | None = None  # median
    fastest: float | None = None
    ratio: float | None = None  # to the floor
    extra: str = ""  # other figures (peak memory, throughput, speed-up)
    target: str = ""
    ok: bool | None = None
    section: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def ensure_vgg16(cache: Path) -> tuple[Path, Path]:
    """The full-size V1 VGG-16 (random weights) in ``cache/vgg16``, built once (about 3 s)."""
    folder = cache / "vgg16"
    proto = folder / f"{MODEL_NAME}_deploy.prototxt"
    model = folder / f"{MODEL_NAME}.caffemodel"
    if proto.is_file() and model.is_file() and model.stat().st_size > 500 * MB:
        return proto, model
    from caffe_writer import build_vgg16

    print(f"building the full-size VGG-16 (V1, random weights) in {folder} ...", flush=True)
    tmp = cache / f"vgg16.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    built_proto, built_model = build_vgg16(tmp, seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    os.replace(built_proto, proto)
    os.replace(built_model, model)
    shutil.rmtree(tmp, ignore_errors=True)
    return proto, model


def interleaved(variants: dict[str, Callable[[], object]], repeats: int,
                after: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Run every variant once per round (A, B, C, A, B, C, ...) after one untimed warm-up round;
    ``after`` runs untimed after each call. Returns the times of each variant."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rnd in range(repeats + 1):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if after:
                after()
            if rnd:
                times[name].append(dt)
        if rnd:
            print(f"  round {rnd}/{repeats} done (load {load_average()})", flush=True)
    return times


def run_child(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, int, str, str]:
    """Run ``python *args`` (a script and its options, or ``-c code``) in a fresh interpreter:
    (wall seconds, peak RSS bytes, exit code, stdout, stderr). The peak is the child's own VmHWM,
    written at exit by bench/_child.py (``wait4``'s ru_maxrss would include this big process's
    memory, inherited at fork)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".peak") as peak_file:
        cmd = [sys.executable, str(ROOT / "bench" / "_child.py"), peak_file.name, *args]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, _ = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = peak_file.read().strip()
        return wall, int(text) if text else 0, proc.returncode, out.read().decode(errors="replace"), \
            err.read().decode(errors="replace")


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def floor_of(net, image) -> Callable[[], None]:
    """The floor: one forward and one backward to the input, parameters frozen."""
    import torch

    def floor() -> None:
        params = [p for p in net.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            x = image.clone().requires_grad_()
            out = net(x)
            torch.autograd.grad(out[0, CLASS], x)
        finally:
            for p in params:
                p.requires_grad_(True)

    return floor
