"""Shared test helpers: where the fixtures are, running the CLIs as a user would, comparing PNGs."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Keep compiled modules (and pytest's rewritten test modules) even where the environment says
# PYTHONDONTWRITEBYTECODE: without them every run, and every CLI subprocess, compiles the package and the
# tests again (about a fifth of the quick run). They go to the checkout's ignored __pycache__ folders.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CASES = DATA / "cases"

# Where the oracle's commands found their files (a grad-cam checkout) -> where they are here.
_ORACLE_DIRS = {
    "models/": DATA / "models",
    "images/": ROOT / "images",
    "VQA_LSTM_CNN/": DATA / "VQA_LSTM_CNN",
    "neuraltalk2/": DATA / "neuraltalk2",
}


MINI_MODEL = DATA / "models" / "mini_vgg16_v1"
#: Each CLI's model options on the small real-format fixtures (the CLI tests add their own).
FIXTURE_ARGS = {
    "classification.py": ["-proto_file", f"{MINI_MODEL}.prototxt", "-model_file", f"{MINI_MODEL}.caffemodel"],
    "visual_question_answering.py": [
        "-proto_file", str(DATA / "models" / "mini_vgg19_v1.prototxt"),
        "-model_file", str(DATA / "models" / "mini_vgg19_v1.caffemodel"),
        "-model_path", str(DATA / "VQA_LSTM_CNN" / "lstm.t7"),
        "-vocab_file", str(DATA / "VQA_LSTM_CNN" / "data_prepro.json"),
        "-input_encoding_size", "6", "-rnn_size", "8", "-rnn_layers", "2", "-common_embedding_size", "16",
        "-num_output", "10"],
    "captioning.py": ["-model_path", str(DATA / "neuraltalk2" / "mini_caption_model.t7")],
}


def case_ids(prefix: str) -> list[str]:
    """The oracle cases whose id starts with ``prefix`` (cls_, vqa_, cap_)."""
    return sorted(p.name for p in CASES.iterdir() if p.name.startswith(prefix))


def load_case(case_id: str) -> dict:
    return json.loads((CASES / case_id / "case.json").read_text())


def oracle_tensor(case_id: str, name: str) -> np.ndarray | None:
    path = CASES / case_id / "tensors" / f"{name}.npy"
    return np.load(path) if path.exists() else None


def oracle_args(case_id: str, out_dir: Path) -> tuple[str, list[str]]:
    """The case's original command as (our script, arguments), paths mapped to this repo and
    ``-out_path`` pointed at ``out_dir``."""
    words = shlex.split(load_case(case_id)["command"])
    assert words[0] == "th"
    script = words[1].replace(".lua", ".py")
    args = []
    for w in words[2:]:
        if args and args[-1] == "-out_path":
            w = str(out_dir) + "/"
        for old, new in _ORACLE_DIRS.items():
            if w.startswith(old):
                w = str(new / w[len(old):])
        args.append(w)
    return script, args


def overriding(*args: str) -> list[str]:
    """Options ``-name value`` with later ones replacing earlier ones of the same name, in first-seen
    order (the scripts refuse an option given twice): ``overriding(*BASE, "-label", "3")``."""
    values: dict[str, list[str]] = {}
    words, i = list(args), 0
    while i < len(words):
        if words[i] in ("--debug", "-debug", "--help", "-h", "--") or "=" in words[i] or i + 1 == len(words):
            values[f"#{i}"] = [words[i]]  # a flag, or -name=value: kept as it is
            i += 1
        else:
            values[words[i].lstrip("-")] = [words[i], words[i + 1]]
            i += 2
    return [w for pair in values.values() for w in pair]


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: float = 300,
               fresh: bool = False) -> subprocess.CompletedProcess:
    """Run one of the entry scripts as its own process, as a user would: forked from a helper that has
    imported torch already (``cli_runner``: the same ``python script args`` run minus 2-3 s of
    imports), or, with ``fresh``, in a new interpreter."""
    if not fresh:
        import cli_runner

        return cli_runner.shared().run(script, *args, cwd=cwd, timeout=timeout)
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout,
    )


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int16)


def assert_png_close(actual: Path, expected: Path, *, max_diff: int = 2, max_frac_over_one: float = 0.001) -> None:
    """The issue's tolerance: every pixel within ``max_diff`` grey levels and at most
    ``max_frac_over_one`` of the values off by more than one level."""
    a, e = read_png(actual), read_png(expected)
    assert a.shape == e.shape, f"{actual.name}: shape {a.shape} != oracle {e.shape}"
    diff = np.abs(a - e)
    assert diff.max() <= max_diff, f"{actual.name}: max pixel difference {diff.max()} > {max_diff}"
    frac = float((diff > 1).mean())
    assert frac <= max_frac_over_one, f"{actual.name}: {frac:.4%} of values off by more than one level"


def assert_rel_close(actual: np.ndarray, expected: np.ndarray, rel: float = 1e-4, what: str = "") -> None:
    """Relative closeness measured against the tensor's own scale (max |expected|)."""
    actual = np.asarray(actual, dtype=np.float64).reshape(expected.shape)
    scale = max(float(np.abs(expected).max()), 1e-30)
    err = float(np.abs(actual - expected.astype(np.float64)).max()) / scale
    assert err <= rel, f"{what}: relative error {err:.3g} > {rel}"


def assert_refused(result: subprocess.CompletedProcess, out_dir: Path, pattern: str) -> str:
    """A refused command: exit code 2, ONE line on stderr matching ``pattern`` (a regex), no
    traceback, and the output folder not even created. Returns that line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert not out_dir.exists(), f"{out_dir} was created by a refused command"
    return lines[0]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA
