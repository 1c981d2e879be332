"""Running the entry scripts many times without paying torch's import each time.

:class:`PrewarmedCLI` starts ONE helper interpreter that imports torch and gradcam_core, then forks a
fresh child for every command: the child redirects its stdin/stdout/stderr, sets ``sys.argv`` and runs
the entry script as ``__main__`` - what ``python script.py args`` does, minus the 2-3 s of imports.
Each command is its own process with its own exit code and output, so the tests see what a user sees.
(The helper never runs a tensor operation itself, so no thread pool exists when it forks.)

Tests that need a real interpreter start (signals, hangs) use ``conftest.run_script``.
"""
from __future__ import annotations

import atexit
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_SERVER = r'''
import json, os, resource, runpy, signal, sys, time, traceback
import torch, fire, PIL.Image  # the slow imports, done once
import gradcam_core.caffe, gradcam_core.cli.classification, gradcam_core.cli.vqa, gradcam_core.cli.captioning
import gradcam_core.cli.app

def child(req):
    """Become `python script args` with the requested files as stdin/stdout/stderr; never returns."""
    for fd, (path, flags) in enumerate([(os.devnull, os.O_RDONLY),
                                        (req["stdout"], os.O_WRONLY | os.O_TRUNC),
                                        (req["stderr"], os.O_WRONLY | os.O_TRUNC)]):
        os.dup2(os.open(path, flags), fd)
    if req["reader_gone"]:  # stdout: a pipe whose reader has closed its end already
        read_end, write_end = os.pipe()
        os.close(read_end)
        os.dup2(write_end, 1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if req["mem_limit_mb"]:  # address space: what is mapped now (torch included) plus the limit
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                cap = int(line.split()[1]) * 1024 + req["mem_limit_mb"] * (1 << 20)
                resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    os.chdir(req["cwd"])
    sys.argv = [req["script"], *req["args"]]
    sys.path[0] = os.path.dirname(req["script"])
    code = 0
    try:
        runpy.run_path(req["script"], run_name="__main__")
    except SystemExit as exc:  # as the interpreter maps sys.exit's argument to an exit status
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

def wait(pid, timeout):
    """The child's exit status (negative: killed by that signal), or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None

print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(req)
    print(json.dumps({"returncode": wait(pid, req["timeout"])}), flush=True)
'''


class PrewarmedCLI:
    """``run(script, *args)`` -> ``subprocess.CompletedProcess`` (text output), like
    ``conftest.run_script``; a command still running after ``timeout`` seconds is killed and gets
    returncode None; with ``mem_limit_mb`` the command may map only that much memory beyond what
    the helper holds (RLIMIT_AS); with ``reader_gone`` its stdout is a pipe nobody reads any more
    (``| head -0``), and the returned stdout is empty."""

    def __init__(self) -> None:
        self._server = subprocess.Popen(
            [sys.executable, "-c", _SERVER], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self._tmp = tempfile.TemporaryDirectory(prefix="gradcam-cli-")
        if self._server.stdout.readline().strip() != "ready":
            raise RuntimeError("the prewarmed CLI helper did not start")

    def run(self, script: str, *args: str, cwd: Path | None = None, timeout: float = 120,
            mem_limit_mb: int | None = None, reader_gone: bool = False) -> subprocess.CompletedProcess:
        out, err = Path(self._tmp.name, "stdout"), Path(self._tmp.name, "stderr")
        out.write_bytes(b"")
        err.write_bytes(b"")
        request = {"script": str(ROOT / script), "args": list(args), "cwd": str(cwd or ROOT), "timeout": timeout,
                   "mem_limit_mb": mem_limit_mb, "reader_gone": reader_gone, "stdout": str(out), "stderr": str(err)}
        self._server.stdin.write(json.dumps(request) + "\n")
        self._server.stdin.flush()
        reply = json.loads(self._server.stdout.readline())
        return subprocess.CompletedProcess([script, *args], reply["returncode"],
                                           out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self) -> None:
        self._server.stdin.close()
        self._server.wait(timeout=30)
        self._server.stdout.close()  # (left open, it is a ResourceWarning at exit once torch.jit has run)
        self._tmp.cleanup()


_SHARED: PrewarmedCLI | None = None


def shared() -> PrewarmedCLI:
    """One helper for the whole test session, started on first use and closed at exit."""
    global _SHARED
    if _SHARED is None:
        _SHARED = PrewarmedCLI()
        atexit.register(_SHARED.close)
    return _SHARED
