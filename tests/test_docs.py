"""The README a newcomer reads in five minutes, and the docs/ site the rest lives in: the README is short,
its first command is the one the tests run, every relative link of the README and of the pages resolves,
every page is in mkdocs.yml's nav, and CI builds the site and then runs the README's test command."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 120  # about five minutes of reading

# The README's first command, as tests/test_cli_formats.py runs it (after the install steps).
FIRST_EXPLAIN = ["classification.py", "-proto_file", "models/squeezenet1_1/deploy.prototxt",
                 "-model_file", "models/squeezenet1_1/squeezenet1_1.caffemodel",
                 "-input_image_path", "images/cat_dog.jpg", "-label", "243,283"]

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def sh_blocks(text: str) -> list[list[str]]:
    """The lines of each ```sh block, in order."""
    return [m.group(1).strip().splitlines() for m in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M)]


def relative_links(text: str) -> list[str]:
    """Markdown link and image targets outside code blocks that point into the checkout, anchors cut."""
    targets = LINK.findall(FENCE.sub("", text))
    return [t.split("#")[0] for t in targets
            if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def nav_pages() -> list[str]:
    """The .md files mkdocs.yml's nav names (one `- Title: page.md` per line)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:"):]
    return re.findall(r"^\s+-\s+[^:\n]+:\s*(\S+\.md)\s*$", nav, re.M)


def test_the_readme_reads_in_five_minutes():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_the_readme_first_command_is_one_line_ending_in_the_tested_explain():
    first = sh_blocks(README.read_text())[0]
    assert len(first) == 1, first  # one command a new user pastes
    steps = [shlex.split(step) for step in first[0].split("&&")]
    assert steps[0][:3] == ["python3", "-m", "venv"]
    assert steps[-1][0] == ".venv/bin/python" and steps[-1][1:] == FIRST_EXPLAIN


def test_every_relative_link_of_the_readme_resolves():
    links = relative_links(README.read_text())
    assert "docs/squeezenet_cat_dog.png" in links and "docs/index.md" in links
    missing = [t for t in links if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_every_docs_page_is_in_the_nav_and_every_nav_page_exists():
    nav = nav_pages()
    assert nav[0] == "index.md"
    assert {"scripts.md", "web.md", "models.md", "numerics.md", "library.md", "benchmark.md",
            "ARCHITECTURE.md"} <= set(nav)
    assert [p for p in nav if not (DOCS / p).is_file()] == []
    assert sorted(p.name for p in DOCS.glob("*.md")) == sorted(nav)


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_every_relative_link_of_a_docs_page_resolves_inside_docs(page):
    """mkdocs only serves what is under docs/: a link out of it would be a broken page on the site."""
    for target in relative_links((DOCS / page).read_text()):
        path = (DOCS / target).resolve()
        assert path.is_relative_to(DOCS) and path.exists(), f"{page} links to {target}"


def test_the_moved_sections_are_in_the_docs():
    """What the README no longer says is on a page: the API and its security headers, the thread and
    exit-code rules, the numerics, the ONNX export recipe, the benchmark, the library."""
    pages = {p.name: p.read_text() for p in DOCS.glob("*.md")}
    expected = {
        "web.md": ["POST /api/explain", "X-Frame-Options: DENY", "-max_upload_mb", "DNS rebinding"],
        "scripts.md": ["Exit codes", "MKL_CBWR=AUTO,STRICT", "torchrun --nproc_per_node", "Labels are 1-based",
                       "download_models.sh"],
        "models.md": ["onnx2torch", "weights_only=True", "dx = f'(x)", "gradcam_core.convert", "dynamo=False",
                      "onnxscript", "dynamic_axes"],
        "numerics.md": ["How it matches the original", "Where we differ", "float64 for VQA"],
        "library.md": ["from gradcam_core import explain", "render_triplet"],
        "benchmark.md": ["bench/run.py", "Captum GuidedGradCam", "How to read it"],
        "index.md": ["Hostile input", "GRADCAM_REQUIRE_BROWSER", "fuzz/"],
    }
    for page, phrases in expected.items():
        assert [p for p in phrases if p not in pages[page]] == [], page


def test_ci_builds_the_docs_strictly_then_runs_exactly_the_readme_test_command():
    test_command = sh_blocks(README.read_text())[-1]
    assert test_command == [".venv/bin/python -m pytest -q"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1] == test_command[0]
    build = [i for i, line in enumerate(ci) if "mkdocs build --strict" in line]
    assert build and build[0] < len(ci) - 1
    assert re.search(r'^docs = \["mkdocs>=1\.5"\]$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert re.search(r"^site/$", (ROOT / ".gitignore").read_text(), re.M)


def test_the_site_builds_strictly(tmp_path):
    """The same build CI runs (skipped where the docs extra is not installed)."""
    pytest.importorskip("mkdocs")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f",
                             str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "squeezenet_cat_dog.png").is_file()


@pytest.mark.slow  # three models on random weights, each its own interpreter
def test_the_readme_transformer_segmentation_and_detection_examples_run(tmp_path):
    """The README's block after "Beyond the original", line by line, in an empty folder (the scripts and
    the sample image from the checkout): each writes its files, and detection on random weights only
    its overview."""
    text = README.read_text()
    block = sh_blocks(text[text.index("## Beyond the original"):])[0]
    assert len(block) == 4 and "classification.py -arch vit_b_16" in block[1]
    for line in block:
        argv = shlex.split(line)
        assert argv[0] == ".venv/bin/python"
        argv[0] = sys.executable
        if argv[1].endswith(".py"):
            argv[1] = str(ROOT / argv[1])
            argv += ["-input_image_path", str(ROOT / "images" / "cat_dog.jpg")]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (line, done.stderr)
    written = sorted(p.name for p in (tmp_path / "output").iterdir())
    assert {"classify_gcam_hm_243.png", "classify_gb_243.png", "classify_gb_gcam_243.png", "detect_boxes.png"} <= set(written)
    assert any(n.startswith("segment_mask_") for n in written) and any(n.startswith("segment_overlay_") for n in written)
    assert not any(n.startswith("detect_eigencam_hm_") for n in written)  # random weights: no box
