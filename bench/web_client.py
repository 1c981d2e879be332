"""The web demo for the benchmark's web rows: the real server as a subprocess, and HTTP clients.

    with DemoServer(env=child_env(2)) as server:      # python -m gradcam_core.web -port 0
        with httpx.Client(base_url=server.url) as http:
            status, body = explain(http, ExplainForm.of(Path("images/cat_dog.jpg"), "243"))
        result = burst(server.url, form, clients=4, per_client=8)

The server is started as a user starts it (``python -m gradcam_core.web -port 0``: the bundled
SqueezeNet, any free port) and its address read from the line ``Serving on http://...``; it is
stopped (SIGTERM, then SIGKILL) when the ``with`` block ends. A request is timed from the upload
(the multipart body built by httpx) to the whole JSON answer received and parsed.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SERVING = re.compile(r"Serving on (http://\S+?)/? ")


class DemoServer:
    """``python -m gradcam_core.web -port 0 *args`` in ``cwd`` with ``env``; ``url`` once it serves.
    ``command`` replaces ``python -m gradcam_core.web`` (e.g. a script that starts the server another way)."""

    def __init__(self, args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 180.0, command: list[str] | None = None) -> None:
        self.args, self.env, self.cwd, self.timeout = args, env, cwd, timeout
        self.command = command or [sys.executable, "-m", "gradcam_core.web"]
        self.url = ""
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile("w+")  # a file, not a pipe: the server never blocks on it

    def __enter__(self) -> DemoServer:
        cmd = [*self.command, "-port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            text = self.output()
            if match := SERVING.search(text):
                self.url = match.group(1)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the web demo did not start ({' '.join(cmd)}): {self.output().strip()[-500:]}")

    def output(self) -> str:
        """What the server printed so far."""
        self.log.seek(0)
        return self.log.read()

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@dataclass(frozen=True)
class ExplainForm:
    """The multipart form of one ``POST /api/explain``: the image file (bytes in memory) and fields."""

    filename: str
    data: bytes
    fields: tuple[tuple[str, str], ...]

    @staticmethod
    def of(image: Path, label: str, task: str = "classification", layer: str = "") -> ExplainForm:
        fields = [("task", task), ("label", label)] + ([("layer", layer)] if layer else [])
        return ExplainForm(image.name, image.read_bytes(), tuple(fields))

    def files(self) -> dict[str, tuple[str, bytes, str]]:
        kind = "image/png" if self.filename.lower().endswith(".png") else "image/jpeg"
        return {"image": (self.filename, self.data, kind)}


def explain(http: httpx.Client, form: ExplainForm) -> tuple[int, dict | None]:
    """One request: (status, the parsed JSON body, or None when it is not JSON)."""
    response = http.post("/api/explain", files=form.files(), data=dict(form.fields))
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


@dataclass
class Burst:
    """What a burst of requests gave: wall time from the first request sent to the last answer
    parsed, each request's latency and the failures (non-200 answers and transport errors)."""

    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    explain_seconds: list[float] = field(default_factory=list)  # the server's seconds.explain
    total_seconds: list[float] = field(default_factory=list)  # the server's seconds.total

    @property
    def requests(self) -> int:
        return len(self.latencies) + len(self.failures)

    @property
    def throughput(self) -> float:
        """Requests answered with 200 per second of wall time."""
        return len(self.latencies) / self.wall if self.wall else 0.0


def burst(url: str, form: ExplainForm, clients: int, per_client: int, timeout: float = 120.0) -> Burst:
    """``clients`` threads, each with its own connection (opened before the start: one GET /api/config),
    all starting at once and sending ``per_client`` requests back to back."""
    result = Burst()
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    starts: list[float] = []
    ends: list[float] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=timeout) as http:
            try:
                http.get("/api/config").raise_for_status()
                connected = True
            except httpx.HTTPError:
                connected = False
            ready.wait()  # every client waits here, connected or not: nobody is left at the barrier
            if not connected:
                return
            first = time.perf_counter()
            for _ in range(per_client):
                t0 = time.perf_counter()
                try:
                    status, body = explain(http, form)
                except httpx.HTTPError as err:
                    status, body = -1, {"error": f"{type(err).__name__}: {err}"}
                dt = time.perf_counter() - t0
                with lock:
                    if status == 200 and body is not None:
                        result.latencies.append(dt)
                        result.explain_seconds.append(body["seconds"]["explain"])
                        result.total_seconds.append(body["seconds"]["total"])
                    else:
                        result.failures.append(f"{status}: {(body or {}).get('error', '')}")
            with lock:
                starts.append(first)
                ends.append(time.perf_counter())

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    for t in threads:
        t.join()
    if len(ends) < clients:  # a client died before its requests (its connection failed)
        result.failures += ["client failed to connect"] * (clients - len(ends)) * per_client
    result.wall = max(ends) - min(starts) if ends else 0.0
    return result


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, linear between the closest ranks."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
