"""Helpers of the web demo's tests: the models and fixtures the server is started on, the CLI's files
for the same inputs (the reference every image of the API is compared with), PNG data URLs, and a real
``python -m gradcam_core.web`` server in a subprocess."""
from __future__ import annotations

import base64
import io
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, ROOT, oracle_tensor, run_script
from PIL import Image

BUNDLED = ROOT / "models" / "squeezenet1_1"
PROTO, MODEL, SYNSET = BUNDLED / "deploy.prototxt", BUNDLED / "squeezenet1_1.caffemodel", BUNDLED / "synset_words.txt"
IMAGE = ROOT / "images" / "cat_dog.jpg"
VQA_FILES = {
    "model_path": DATA / "VQA_LSTM_CNN" / "lstm.t7",
    "vocab_file": DATA / "VQA_LSTM_CNN" / "data_prepro.json",
    "proto_file": DATA / "models" / "mini_vgg19_v1.prototxt",
    "model_file": DATA / "models" / "mini_vgg19_v1.caffemodel",
}
VQA_SIZES = {"input_encoding_size": 6, "rnn_size": 8, "rnn_layers": 2, "common_embedding_size": 16, "num_output": 10}
CAPTION_MODEL = DATA / "neuraltalk2" / "mini_caption_model.t7"

#: The CLI's model options for the models the server is given.
CLI_MODEL_ARGS = {
    "classification.py": ["-proto_file", str(PROTO), "-model_file", str(MODEL)],
    "visual_question_answering.py": [
        *(a for k, v in VQA_FILES.items() for a in (f"-{k}", str(v))),
        *(a for k, v in VQA_SIZES.items() for a in (f"-{k}", str(v)))],
    "captioning.py": ["-model_path", str(CAPTION_MODEL)],
}
#: The server's options for the same VQA and captioning fixtures (classification: its default).
SERVER_FIXTURE_ARGS = [
    *(a for k, v in VQA_FILES.items() for a in (f"-vqa_{k}", str(v))),
    *(a for k, v in VQA_SIZES.items() for a in (f"-vqa_{k}", str(v))),
    "-caption_model_path", str(CAPTION_MODEL),
]
IMAGE_KEYS = ("input", "overlay", "gcam", "gb", "gb_gcam")


# ------------------------------------------------------------------------------------- the CLI's files


@dataclass
class CliRun:
    """One CLI run: its stdout and the PNGs it wrote (file name -> pixels)."""

    stdout: str
    files: dict[str, np.ndarray]


def saves_overlay(script: str) -> bool:
    """Whether this checkout's CLI has ``-save_overlay`` (then the API's overlay must be its file)."""
    return "save_overlay" in (ROOT / script).read_text()


_CLI_CACHE: dict[tuple[str, ...], CliRun] = {}
_CLI_DIR = tempfile.TemporaryDirectory(prefix="gradcam-webtests-cli-")


def cli_run(script: str, *args: str, image: Path = IMAGE) -> CliRun:
    """``python script <the server's model> -input_image_path image args`` (with ``-save_overlay 1``
    where the CLI has it), once per session for the same arguments."""
    key = (script, str(image), *args)
    if key not in _CLI_CACHE:
        out = Path(_CLI_DIR.name, str(len(_CLI_CACHE)))
        extra = ["-save_overlay", "1"] if saves_overlay(script) else []
        proc = run_script(script, *CLI_MODEL_ARGS[script], "-input_image_path", str(image), *args, *extra,
                          "-out_path", f"{out}/")
        assert proc.returncode == 0, f"{script} {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}"
        _CLI_CACHE[key] = CliRun(proc.stdout, {p.name: read_pixels(p.read_bytes()) for p in out.glob("*.png")})
    return _CLI_CACHE[key]


def read_pixels(png: bytes) -> np.ndarray:
    """A PNG's pixels as (H, W) or (H, W, 3) uint8, mode included in the shape."""
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.mode in ("L", "RGB"), (im.format, im.mode)
        return np.asarray(im).copy()


def data_url_pixels(url: str) -> np.ndarray:
    """The pixels of a ``data:image/png;base64,...`` URL."""
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix), url[:40]
    return read_pixels(base64.b64decode(url[len(prefix):], validate=True))


def oracle_input_rgb() -> np.ndarray:
    """cat_dog.jpg at 224 x 224 as the ORIGINAL Lua script's net saw it, undone to RGB bytes (H, W, 3): its
    dumped preprocessed input (BGR, 0..255, minus the VGG means) plus the means."""
    pre = oracle_tensor("cls_v1_catdog_pred_hm", "preprocessed_input").astype(np.float64)  # (3, 224, 224) BGR
    bgr = pre + np.array([103.939, 116.779, 123.68])[:, None, None]
    return bgr[::-1].transpose(1, 2, 0)  # RGB, 0..255 as floats


def assert_images_are_the_clis(images: dict[str, str], files: dict[str, str], cli: CliRun, what: str) -> None:
    """The API's gcam, gb and gb_gcam (and overlay, where the CLI writes one) are the CLI's files pixel
    for pixel; without the CLI's overlay, the overlay is 0.5 * input + 0.5 * the CLI's heatmap."""
    assert set(images) == set(IMAGE_KEYS), f"{what}: images {sorted(images)}"
    assert {"overlay", "gcam", "gb", "gb_gcam"} <= set(files) <= set(IMAGE_KEYS), f"{what}: files {files}"
    assert files.get("input", "input.png").endswith(".png") and files.get("input") not in cli.files, files
    compared = ["gcam", "gb", "gb_gcam"] + (["overlay"] if any("_overlay_" in n for n in cli.files) else [])
    assert {files[k] for k in compared} == set(cli.files), f"{what}: the API names {files}, the CLI wrote {sorted(cli.files)}"
    for key in compared:
        web, ref = data_url_pixels(images[key]), cli.files[files[key]]
        assert web.shape == ref.shape, f"{what} {key}: shape {web.shape} != the CLI's {ref.shape}"
        diff = np.abs(web.astype(int) - ref.astype(int))
        assert diff.max() == 0, f"{what} {key}: {int((diff > 0).sum())} values differ from {files[key]} (max {diff.max()})"
    rgb = data_url_pixels(images["input"])
    heat = cli.files[files["gcam"]]
    assert rgb.shape == heat.shape and rgb.ndim == 3, (rgb.shape, heat.shape)
    blend = 0.5 * rgb.astype(float) + 0.5 * heat.astype(float)
    off = np.abs(data_url_pixels(images["overlay"]).astype(float) - blend)
    assert off.max() <= 1.0, f"{what} overlay: {off.max()} levels from 0.5 * input + 0.5 * heatmap"


# ------------------------------------------------------------------------------------- a real server


class Server:
    """``python -m gradcam_core.web -port 0 <args>`` in a subprocess (of this checkout), until stopped."""

    def __init__(self, *args: str, timeout: float = 90, env: dict[str, str] | None = None,
                 prelude: str = "") -> None:
        self.stderr_file = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **(env or {}))
        # prelude: Python run first, then the command as ``-m`` runs it (for tests that patch something)
        command = ["-c", prelude + "\nimport runpy\nrunpy.run_module('gradcam_core.web', run_name='__main__', "
                   "alter_sys=True)"] if prelude else ["-m", "gradcam_core.web"]
        self.proc = subprocess.Popen(
            [sys.executable, *command, "-port", "0", *args], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr_file, text=True)
        self.lines: list[str] = []
        found: queue.Queue[str | None] = queue.Queue()

        def read() -> None:  # keeps reading stdout so the server never blocks on a full pipe
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if line.startswith("Serving on "):
                    found.put(line)
            found.put(None)

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        try:
            line = found.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None:
            self.stop()
            raise AssertionError(f"the server did not start: stdout {self.lines}, stderr {self.stderr()}")
        match = re.match(r"Serving on (http://127\.0\.0\.1:(\d+)/)", line)
        assert match, line
        self.url, self.port = match.group(1), int(match.group(2))

    def stderr(self) -> str:
        self.stderr_file.seek(0)
        return self.stderr_file.read()

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)  # the last lines read
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="session")
def plain_server() -> Iterator[Server]:
    """The command alone: the bundled SqueezeNet, VQA and captioning off."""
    server = Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def full_server() -> Iterator[Server]:
    """The bundled SqueezeNet with the VQA and captioning test fixtures; uploads up to 1 MB."""
    server = Server(*SERVER_FIXTURE_ARGS, "-max_upload_mb", "1")
    try:
        yield server
    finally:
        server.stop()


def wait_until(condition, timeout: float = 30, what: str = "") -> None:
    """Poll ``condition()`` until true (every 10 ms), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)
