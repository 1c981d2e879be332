#!/usr/bin/env python3
"""Fuzz the model readers. Targets: see ``python fuzz/run.py list`` and fuzz/targets.py.

    python fuzz/run.py long [--runs 100000] [--jobs 2] [TARGET ...]   # the long run, one target after another
    python fuzz/run.py fuzz TARGET [libFuzzer flags ...]               # one atheris (libFuzzer) session
    python fuzz/run.py quick [--inputs 2000] [--seconds 3] [TARGET ...] # a short random-mutation run
    python fuzz/run.py replay TARGET FILE ...                          # re-run saved inputs

Every input is bounded: ``--timeout`` seconds (default 5) and ``--mem-mb`` MiB of address space above
what the process holds after its imports (default 1024, enforced with RLIMIT_AS, so an allocation
past it is a MemoryError, i.e. a crash). ``fuzz`` and ``long`` use atheris' coverage-guided engine,
seeded with fuzz/corpus/<target>/ (read only; new inputs go to fuzz/.work/<target>/corpus; ``--work``
moves fuzz/.work). ``quick`` needs no atheris: it mutates the corpus at random (bit flips, interesting
integers, truncation, insertion, splicing) - the test suite runs it. Crashing inputs are saved as
fuzz/.work/<target>/crash-<sha1>; add each one to fuzz/corpus/<target>/ as a regression once fixed.
"""
from __future__ import annotations

import argparse
import hashlib
import random
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
WORK = FUZZ / ".work"
#: Longest input libFuzzer makes per target: a little past the largest seed (the regression inputs
#: are longer where their bug needed a long input; libFuzzer only reads their first max_len bytes).
MAX_LEN = {"wire": 4096, "caffemodel": 4096, "prototxt": 8192, "prototxt_net": 8192, "t7": 8192,
           "captioner": 65536, "vqa": 20000, "meanfile": 4096}
DICTS = {"prototxt": "prototxt.dict", "prototxt_net": "prototxt.dict", "t7": "t7.dict",
         "captioner": "t7.dict", "vqa": "t7.dict"}


# --------------------------------------------------------------------------------------------------
# Bounds


class InputTimeout(BaseException):
    """An input ran past its time bound (a BaseException, so no ``except Exception`` swallows it)."""


def limit_memory(mem_mb: int) -> None:
    """Cap the address space at what the process maps now plus ``mem_mb`` MiB (RLIMIT_AS)."""
    mapped = _vm_size_bytes()
    cap = mapped + mem_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _vm_size_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def import_targets(instrument: bool) -> ModuleType:
    """Import torch (never instrumented: it is huge) and then fuzz/targets.py, instrumenting
    gradcam_core for atheris' coverage feedback when ``instrument``."""
    import torch

    torch.set_num_threads(1)  # no thread pools (and their arenas) growing during the run
    sys.path[:0] = [str(ROOT), str(FUZZ), str(ROOT / "tests")]  # tests/: the fixture writers
    if not instrument:
        import targets
        return targets
    import atheris

    with atheris.instrument_imports(include=["gradcam_core"]):
        import targets
    return targets


# --------------------------------------------------------------------------------------------------
# atheris (libFuzzer)


def cmd_fuzz(target_name: str, libfuzzer_args: list[str], timeout: int, mem_mb: int) -> None:
    """One atheris session in this process (libFuzzer exits the process when done)."""
    import atheris

    targets = import_targets(instrument=True)
    target = targets.TARGETS[target_name]
    work = WORK / target_name
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    dict_name = DICTS.get(target_name)
    argv = [sys.argv[0], f"-timeout={timeout}", f"-artifact_prefix={work}/", "-print_final_stats=1",
            f"-max_len={MAX_LEN[target_name]}",
            "-rss_limit_mb=0"]  # memory is bounded by RLIMIT_AS below, not by libFuzzer's RSS poll
    if dict_name:
        argv.append(f"-dict={FUZZ / 'dicts' / dict_name}")
    argv += libfuzzer_args + [str(work / "corpus"), str(targets.CORPUS / target_name)]

    def test_one_input(data: bytes) -> None:
        targets.run_one(target, data)

    atheris.Setup(argv, test_one_input)
    limit_memory(mem_mb)
    atheris.Fuzz()


@dataclass
class Outcome:
    """The figures of one finished ``fuzz`` session."""

    target: str
    inputs: int
    seconds: float
    exec_per_s: int
    new_units: int
    peak_rss_mb: int
    crashes: list[str]
    exit_code: int

    def row(self) -> str:
        """One line of the summary table."""
        crashes = ", ".join(self.crashes) or ("none" if self.exit_code == 0 else f"exit code {self.exit_code}")
        return (f"| {self.target} | {self.inputs} | {self.seconds} | {self.exec_per_s} | {self.new_units} | "
                f"{self.peak_rss_mb} | {crashes} |")


class Session:
    """A ``fuzz`` session of one target in a nice'd child process, logging to WORK/<target>.log."""

    def __init__(self, target: str, runs: int, timeout: int, mem_mb: int) -> None:
        self.target, self.started = target, time.time()
        self.log_path = WORK / f"{target}.log"
        self.before = self._findings()
        cmd = ["nice", "-n", "10", sys.executable, str(Path(__file__)), "--timeout", str(timeout),
               "--mem-mb", str(mem_mb), "--work", str(WORK), "fuzz", target, "--", f"-runs={runs}"]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def _findings(self) -> set[Path]:
        """The inputs libFuzzer saved for this target (crashes, timeouts, out-of-memory)."""
        folder = WORK / self.target
        return {p for kind in ("crash", "timeout", "oom") for p in folder.glob(f"{kind}-*")}

    def outcome(self) -> Outcome:
        """The figures, from libFuzzer's final statistics in the log (call once the process ended)."""
        stats = {k: int(v) for k, v in re.findall(r"stat::(\w+):\s+(\d+)", self.log_path.read_text(errors="replace"))}
        return Outcome(self.target, stats.get("number_of_executed_units", 0), round(time.time() - self.started, 1),
                       stats.get("average_exec_per_sec", 0), stats.get("new_units_added", 0),
                       stats.get("peak_rss_mb", 0), sorted(p.name for p in self._findings() - self.before),
                       self.proc.returncode)


def cmd_long(names: list[str], runs: int, jobs: int, timeout: int, mem_mb: int) -> int:
    """Run ``fuzz`` for each target (``jobs`` at a time, nice'd) for ``runs`` inputs; print the figures
    and write them to WORK/summary.md. Exit code 1 if any session found something."""
    WORK.mkdir(parents=True, exist_ok=True)
    pending, running, done = list(names), [], []
    while pending or running:
        while pending and len(running) < jobs:
            running.append(Session(pending.pop(0), runs, timeout, mem_mb))
        time.sleep(1)
        for session in [s for s in running if s.proc.poll() is not None]:
            running.remove(session)
            done.append(session.outcome())
            print(done[-1].row(), flush=True)
    summary = "\n".join(["| target | inputs | seconds | exec/s | new units | peak RSS MB | crashes |",
                         "|---|---|---|---|---|---|---|"] + [o.row() for o in done])
    (WORK / "summary.md").write_text(summary + "\n")
    print(summary)
    return 1 if any(o.crashes or o.exit_code for o in done) else 0


# --------------------------------------------------------------------------------------------------
# quick: random mutations, no atheris

_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 10**12, 2**63 - 1, 2**64 - 1]


def mutate(data: bytes, others: Sequence[bytes], rng: random.Random) -> bytes:
    """1 to 4 random edits of ``data``: bit flip, random byte, interesting 1/4/8-byte integer,
    truncation, insertion, deletion, duplication or a splice with another input."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        _EDITS[rng.randrange(len(_EDITS))](buf, others, rng)
    return bytes(buf)


def _flip(buf: bytearray, others: Sequence[bytes], rng: random.Random) -> None:
    if buf:
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)


def _random_byte(buf: bytearray, others: Sequence[bytes], rng: random.Random) -> None:
    if buf:
        buf[rng.randrange(len(buf))] = rng.randrange(256)


def _integer(buf: bytearray, others: Sequence[bytes], rng: random.Random) -> None:
    size = rng.choice((1, 4, 8))
    if len(buf) >= size:
        value = rng.choice(_INTERESTING) % (1 << (8 * size))
        at = rng.randrange(len(buf) - size + 1)
        buf[at : at + size] = value.to_bytes(size, "little")


def _truncate(buf: bytearray, others: Sequence[bytes], rng: random.Random) -> None:
    del buf[rng.randrange(len(buf) + 1):]


def _insert(buf: bytearray, others: Sequence[bytes], rng: random.Random) -> None:
    at = rng.randrange(len(buf) + 1)
    buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))


def _delete(buf: bytearray, others: Sequence[bytes], rng: random.Random) -> None:
    if buf:
        at = rng.randrange(len(buf))
        del buf[at : at + rng.randint(1, 16)]


def _duplicate(buf: bytearray, others: Sequence[bytes], rng: random.Random) -> None:
    if buf:
        at = rng.randrange(len(buf))
        chunk = buf[at : at + rng.randint(1, 64)]
        where = rng.randrange(len(buf) + 1)
        buf[where:where] = chunk


def _splice(buf: bytearray, others: Sequence[bytes], rng: random.Random) -> None:
    other = rng.choice(others)
    if other:
        at = rng.randrange(len(buf) + 1)
        buf[at:] = other[rng.randrange(len(other)):]


_EDITS: list[Callable[[bytearray, Sequence[bytes], random.Random], None]] = [
    _flip, _flip, _random_byte, _integer, _integer, _truncate, _insert, _delete, _duplicate, _splice,
]


def cmd_quick(names: list[str], inputs: int, seconds: float, timeout: float, mem_mb: int, seed: int) -> int:
    """For each target: replay its corpus, then mutate it for ``inputs`` inputs or ``seconds``."""
    targets = import_targets(instrument=False)
    limit_memory(mem_mb)
    signal.signal(signal.SIGALRM, _on_alarm)
    crashes = 0
    for name in names:
        target = targets.TARGETS[name]
        corpus = [p.read_bytes() for p in sorted((targets.CORPUS / name).iterdir())]
        rng = random.Random(f"{seed}-{name}")
        counts = {"loaded": 0, "refused": 0, "crashed": 0}
        start = time.perf_counter()
        for i in range(len(corpus) + inputs):
            if i >= len(corpus) and time.perf_counter() - start > seconds:
                break
            data = corpus[i] if i < len(corpus) else mutate(rng.choice(corpus), corpus, rng)
            counts[_run_bounded(targets, target, data, timeout)] += 1
        elapsed = time.perf_counter() - start
        total = sum(counts.values())
        print(f"{name}: {total} inputs in {elapsed:.1f} s ({total / elapsed:.0f}/s): "
              + ", ".join(f"{v} {k}" for k, v in counts.items()), flush=True)
        crashes += counts["crashed"]
    return 1 if crashes else 0


def _on_alarm(signum: int, frame: object) -> None:
    raise InputTimeout()


def _run_bounded(targets, target, data: bytes, timeout: float) -> str:
    """'loaded', 'refused' or 'crashed' (the input is then saved and the error printed)."""
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return "loaded" if targets.run_one(target, data) else "refused"
    except (Exception, InputTimeout) as err:  # noqa: BLE001 - every other outcome is a crash
        what = f"timeout after {timeout} s" if isinstance(err, InputTimeout) else f"{type(err).__name__}: {err}"
        print(f"CRASH {target.name}: {what[:300]} -> {_save_crash(target.name, data)}", flush=True)
        return "crashed"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _save_crash(name: str, data: bytes) -> Path:
    folder = WORK / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path


def cmd_replay(name: str, files: list[str], timeout: float, mem_mb: int) -> int:
    """Run saved inputs through ``name`` under the bounds, printing each outcome (and each crash)."""
    targets = import_targets(instrument=False)
    limit_memory(mem_mb)
    signal.signal(signal.SIGALRM, _on_alarm)
    outcomes = [_run_bounded(targets, targets.TARGETS[name], Path(f).read_bytes(), timeout) for f in files]
    for f, outcome in zip(files, outcomes):
        print(f"{f}: {outcome}")
    return 1 if "crashed" in outcomes else 0


# --------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    names = ["wire", "caffemodel", "prototxt", "prototxt_net", "t7", "captioner", "vqa", "meanfile"]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=int, default=5, help="seconds per input (default 5)")
    parser.add_argument("--mem-mb", type=int, default=1024, help="MiB of address space per input (default 1024)")
    parser.add_argument("--work", type=Path, default=WORK, help="where new inputs, crashes and logs go (fuzz/.work)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    fuzz = sub.add_parser("fuzz")
    fuzz.add_argument("target", choices=names)
    fuzz.add_argument("libfuzzer", nargs="*", help="libFuzzer flags after --, e.g. -runs=100000")
    long = sub.add_parser("long")
    long.add_argument("targets", nargs="*", metavar="TARGET", help="default: all")
    long.add_argument("--runs", type=int, default=100_000)
    long.add_argument("--jobs", type=int, default=1)
    quick = sub.add_parser("quick")
    quick.add_argument("targets", nargs="*", metavar="TARGET", help="default: all")
    quick.add_argument("--inputs", type=int, default=2000)
    quick.add_argument("--seconds", type=float, default=3.0)
    quick.add_argument("--seed", type=int, default=0)
    replay = sub.add_parser("replay")
    replay.add_argument("target", choices=names)
    replay.add_argument("files", nargs="+")
    for p in (fuzz, long, quick, replay):  # accept the bounds after the command too
        p.add_argument("--timeout", type=int, default=argparse.SUPPRESS)
        p.add_argument("--mem-mb", type=int, default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command in ("long", "quick"):
        unknown = sorted(set(args.targets) - set(names))
        if unknown:
            parser.error(f"unknown target(s) {', '.join(unknown)}; targets: {', '.join(names)}")
        args.targets = args.targets or names
    return args


def main() -> int:
    global WORK
    args = parse_args()
    WORK = args.work.resolve()
    if args.command == "list":
        targets = import_targets(instrument=False)
        for t in targets.TARGETS.values():
            print(f"{t.name:13} {t.about}")
        return 0
    if args.command == "fuzz":
        cmd_fuzz(args.target, args.libfuzzer, args.timeout, args.mem_mb)
        return 0
    if args.command == "long":
        return cmd_long(args.targets, args.runs, args.jobs, args.timeout, args.mem_mb)
    if args.command == "quick":
        return cmd_quick(args.targets, args.inputs, args.seconds, args.timeout, args.mem_mb, args.seed)
    return cmd_replay(args.target, args.files, args.timeout, args.mem_mb)


if __name__ == "__main__":
    sys.exit(main())
