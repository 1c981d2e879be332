"""The browser tests on a machine without Chromium: skipped with a one-line reason naming the package
(the README's test command passes on a fresh machine), an error where CI requires the browser
(``GRADCAM_REQUIRE_BROWSER=1``), skipped again with ``GRADCAM_NO_BROWSER=1``.

Each case is pytest in a subprocess on tests/web/test_browser.py with ``GRADCAM_CHROMIUM`` naming a
file that does not exist; the check comes before any server is started, so each run takes a couple of
seconds."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run


def run_browser_tests(tmp_path, **env: str) -> tuple[subprocess.CompletedProcess, dict[str, int]]:
    """pytest -q on the browser tests with no Chromium to be found; its result and its summary counts."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("GRADCAM_NO_BROWSER", "GRADCAM_REQUIRE_BROWSER", "GRADCAM_CHROMIUM")}
    environ |= {"PYTHONPATH": str(ROOT), "GRADCAM_CHROMIUM": str(tmp_path / "no-chromium"), **env}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/web/test_browser.py"],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)
    summary = proc.stdout.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
    return proc, counts


def test_without_chromium_the_browser_tests_skip_with_the_package_to_install(tmp_path):
    proc, counts = run_browser_tests(tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert set(counts) == {"skipped"} and counts["skipped"] >= 7, proc.stdout[-2000:]
    reasons = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all("apt-get install chromium" in line for line in reasons), proc.stdout[-2000:]
    assert all(str(tmp_path / "no-chromium") in line for line in reasons), reasons


def test_without_chromium_ci_fails(tmp_path):
    proc, counts = run_browser_tests(tmp_path, GRADCAM_REQUIRE_BROWSER="1")
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert counts.get("errors", counts.get("error", 0)) >= 7 and "passed" not in counts, proc.stdout[-2000:]
    assert "skipped" not in counts, proc.stdout[-2000:]
    assert "apt-get install chromium" in proc.stdout and "GRADCAM_REQUIRE_BROWSER=1" in proc.stdout


def test_gradcam_no_browser_still_skips(tmp_path):
    proc, counts = run_browser_tests(tmp_path, GRADCAM_NO_BROWSER="1")
    # the whole module is skipped at import: 5 is pytest's "no tests ran" for this one file alone
    assert proc.returncode in (0, 5) and set(counts) == {"skipped"}, proc.stdout[-2000:]
    assert "GRADCAM_NO_BROWSER=1" in proc.stdout


def test_ci_requires_the_browser():
    """.ci/run installs Chromium and says so to the tests."""
    script = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^export GRADCAM_REQUIRE_BROWSER=1$", script, re.M), script
