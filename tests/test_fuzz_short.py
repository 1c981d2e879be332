"""A short fuzz run of every model reader (the long one is ``python fuzz/run.py long``, see fuzz/run.py),
and the runner's own guarantees: a crash, a hang or an allocation bomb is reported, not survived."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run

RUN = ROOT / "fuzz" / "run.py"
TARGETS = ["wire", "caffemodel", "prototxt", "prototxt_net", "t7", "captioner", "vqa", "meanfile"]


def test_every_reader_survives_its_corpus_and_random_mutations_of_it(tmp_path):
    """Each target: its seeds and regression inputs, then mutations, up to 1500 inputs or 1.5 s."""
    command = [sys.executable, str(RUN), "--timeout", "5", "--mem-mb", "1024", "--work", str(tmp_path),
               "quick", "--inputs", "1500", "--seconds", "1.5"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = dict(re.findall(r"^(\w+): (\d+) inputs in .*, 0 crashed$", proc.stdout, re.M))
    assert sorted(counts) == sorted(TARGETS), proc.stdout
    assert all(int(n) >= 100 for n in counts.values()), proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_the_atheris_entry_point_runs(tmp_path):
    command = [sys.executable, str(RUN), "--work", str(tmp_path), "fuzz", "t7", "--", "-runs=300"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Done 300 runs" in proc.stderr and "stat::number_of_executed_units: 300" in proc.stderr


# The runner's bounds, on stand-in targets (no torch needed): a hang and an allocation bomb become
# reported crashes, with the input saved; a proper refusal does not.
_BOUNDS = textwrap.dedent("""
    import sys, time, types
    sys.path.insert(0, sys.argv[1])
    import run
    from gradcam_core.errors import GradCamError
    run.WORK = run.Path(sys.argv[2])

    def hang(data): time.sleep(60)
    def bomb(data): bytearray(4 << 30)
    def wrapped_bug(data): raise GradCamError("x.t7: internal reader error at byte 3: KeyError: 1")
    def refuse(data): raise GradCamError("x.t7: truncated at byte 3")

    def run_one(target, data):  # the contract of fuzz/targets.run_one, minus the torch imports
        try:
            target.load(data)
        except GradCamError as err:
            if "internal reader error" in str(err):
                raise AssertionError(str(err))
            return False
        return True

    run.limit_memory(512)
    run.signal.signal(run.signal.SIGALRM, run._on_alarm)
    fake = types.SimpleNamespace(run_one=run_one)
    for load in (hang, bomb, wrapped_bug, refuse):
        target = types.SimpleNamespace(name="selftest", load=load)
        print(load.__name__, run._run_bounded(fake, target, b"input", 1.0))
""")


def test_the_runner_reports_hangs_allocation_bombs_and_wrapped_bugs(tmp_path):
    command = [sys.executable, "-c", _BOUNDS, str(ROOT / "fuzz"), str(tmp_path)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    outcomes = dict(line.split() for line in proc.stdout.splitlines() if not line.startswith("CRASH"))
    assert outcomes == {"hang": "crashed", "bomb": "crashed", "wrapped_bug": "crashed", "refuse": "refused"}
    reports = [line for line in proc.stdout.splitlines() if line.startswith("CRASH")]
    assert [r.split(":")[1].split()[0] for r in reports] == ["timeout", "MemoryError", "AssertionError"], reports
    assert all(f"{tmp_path}/selftest/crash-" in r for r in reports)
