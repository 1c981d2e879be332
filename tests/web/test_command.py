"""The real command, ``python -m gradcam_core.web -port 0 ...`` in its own process, over real HTTP: what
it prints, what it serves, how it refuses bad options (exit 2, one line), and the guards as uvicorn
sees them (raw ``..`` paths, a Host header of another site, a chunked upload past the limit)."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gradcam_core.web.__main__ import ENABLE

from .conftest import IMAGE, ROOT, Server, assert_images_are_the_clis, cli_run

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run

STATIC = ROOT / "gradcam_core" / "web" / "static"
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def test_the_command_alone_serves_the_page_and_the_bundled_squeezenet(plain_server):
    lines = plain_server.lines
    assert lines[0] == "classification: squeezenet1_1.caffemodel (caffe), layer relu_conv10", lines
    assert lines[1] == f"vqa: off ({ENABLE['vqa']})" and lines[2] == f"captioning: off ({ENABLE['captioning']})"
    assert lines[3] == f"segmentation: off ({ENABLE['segmentation']})"
    assert lines[4] == f"detection: off ({ENABLE['detection']})"
    assert lines[5] == f"Serving on http://127.0.0.1:{plain_server.port}/ (Ctrl-C stops)"
    with httpx.Client(base_url=plain_server.url, timeout=60) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.text == (STATIC / "index.html").read_text()
        for name in ("app.js", "style.css"):
            assert http.get(f"/static/{name}").content == (STATIC / name).read_bytes()
        config = http.get("/api/config").json()
        cls = config["tasks"]["classification"]
        assert cls["enabled"] and cls["model"] == "squeezenet1_1.caffemodel (caffe)" and len(cls["classes"]) == 1000
        assert config["tasks"]["vqa"] == {"enabled": False, "enable": ENABLE["vqa"]}
        assert config["tasks"]["captioning"] == {"enabled": False, "enable": ENABLE["captioning"]}
        assert config["tasks"]["segmentation"] == {"enabled": False, "enable": ENABLE["segmentation"]}
        assert config["tasks"]["detection"] == {"enabled": False, "enable": ENABLE["detection"]}
        assert "-vqa_model_path" in ENABLE["vqa"] and "-caption_model_path" in ENABLE["captioning"]
        assert {s["name"] for s in config["samples"]} == {p.name for p in (ROOT / "images").glob("*.jpg")}
        response = http.post("/api/explain", data={"task": "classification", "label": "243"},
                             files={"image": ("cat_dog.jpg", IMAGE.read_bytes(), "image/jpeg")})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["target"] == {"label": 243, "name": "boxer"}
        assert_images_are_the_clis(body["images"], body["files"], cli_run("classification.py", "-label", "243"),
                                   "over HTTP")
        disabled = http.post("/api/explain", data={"task": "vqa", "sample": "cat_dog.jpg", "question": "What?"})
        assert disabled.status_code == 400 and "-vqa_model_path" in disabled.json()["error"]


def raw_get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, dict]:
    """GET ``path`` exactly as written (http.client does not remove ``..``), with this Host header."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/static/../app.py", "/static/../../../README.md", "/samples/../app.py",
                                  "/samples/../../README.md", "/static/..%2fapp.py", "/static//etc/passwd",
                                  "/samples/%2e%2e%2f%2e%2e%2fREADME.md", "/../README.md"])
def test_no_path_outside_is_served(plain_server, path):
    status, body = raw_get(plain_server.port, path)
    assert status == 404 and list(body) == ["error"], (path, status, body)


def test_only_local_host_names_are_answered_over_http(plain_server):
    port = plain_server.port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert raw_get(port, "/api/config", host)[0] == 200, host
    for host in ("evil.com", f"evil.com:{port}", f"rebind.attacker.example:{port}"):
        status, body = raw_get(port, "/api/config", host)
        assert status == 403 and "does not answer for the host" in body["error"], (host, status, body)


def test_a_chunked_upload_past_the_limit_is_413(full_server):
    """-max_upload_mb 1: a 2 MB upload, with an honest Content-Length and chunked (no length)."""
    big = IMAGE.read_bytes() + bytes(2 << 20)
    with httpx.Client(base_url=full_server.url, timeout=60) as http:
        response = http.post("/api/explain", data={"task": "classification"},
                             files={"image": ("big.jpg", big, "image/jpeg")})
        assert response.status_code == 413 and "limit of 1 MB" in response.json()["error"], response.text

        def chunks():
            yield (b'--XyZ\r\nContent-Disposition: form-data; name="task"\r\n\r\nclassification\r\n'
                   b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n\r\n')
            for i in range(0, len(big), 1 << 16):
                yield big[i: i + (1 << 16)]
            yield b"\r\n--XyZ--\r\n"

        request = http.build_request("POST", "/api/explain", content=chunks(),
                                     headers={"content-type": "multipart/form-data; boundary=XyZ"})
        assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
        try:
            response = http.send(request)
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            pytest.fail("the server closed the connection instead of answering 413")
        assert response.status_code == 413 and "limit of 1 MB" in response.json()["error"], response.text
        # and the server still answers after it
        ok = http.post("/api/explain", data={"task": "classification", "sample": "cat_dog.jpg"})
        assert ok.status_code == 200, ok.text


def run_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m gradcam_core.web args``, forked from the prewarmed helper the CLI tests use (its own
    process, exit code and output, without paying torch's import each time)."""
    import cli_runner

    wrapper = cwd / "gradcam_web_command.py"
    wrapper.write_text("import runpy\nrunpy.run_module('gradcam_core.web', run_name='__main__', alter_sys=True)\n")
    return cli_runner.shared().run(str(wrapper), *args, cwd=cwd, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["-port", "abc"], "-port must be a number, got 'abc'"),
    (["-port", "70000"], "-port 70000 is not a TCP port"),
    (["-model_file", "missing.caffemodel"], "-model_file: missing.caffemodel not found"),
    (["-port", "{busy}"], "cannot listen on 127.0.0.1:{busy}: Address already in use"),
    (["-max_queue", "0"], "-max_queue"),
    (["-vqa_vocab_file", "x.json"], "-vqa_vocab_file needs -vqa_model_path"),
    (["-caption_model_path", "nowhere.t7"], "-caption_model_path: nowhere.t7 not found"),
    (["-colour", "red"], "unknown option -colour"),
    (["-arch", "squeezenet1_1"], "-arch squeezenet1_1 needs its weights: give its torchvision state_dict"),
    (["-detect_arch", "resnet50"], "-detect_arch resnet50 is a classification architecture"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, args, message):
    with socket.socket() as busy:  # a port another program listens on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args, message = [a.format(busy=port) for a in args], message.format(busy=port)
        result = run_command(*args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (args, result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, (args, result.stderr)
    assert lines[0].startswith("python -m gradcam_core.web: error: ") and message in lines[0], (args, lines[0])
    assert "Serving on" not in result.stdout, result.stdout


def test_another_address_is_said_and_the_upload_folder_goes_when_the_server_stops(tmp_path):
    server = Server("-host", "0.0.0.0", env={"TMPDIR": str(tmp_path)})
    try:
        assert server.lines[5].startswith("warning: listening on 0.0.0.0, not only on this machine"), server.lines
        assert server.lines[6] == f"Serving on http://127.0.0.1:{server.port}/ (Ctrl-C stops)"
        (uploads,) = tmp_path.glob("gradcam-web-*")
        with httpx.Client(base_url=server.url, timeout=60) as http:
            response = http.post("/api/explain", data={"task": "classification"},
                                 files={"image": ("cat_dog.jpg", IMAGE.read_bytes(), "image/jpeg")})
            assert response.status_code == 200, response.text
        assert list(uploads.iterdir()) == []
    finally:
        server.stop()
    # SIGTERM: uvicorn shuts down (the lifespan removes the folder); a normal stop, said on stdout
    assert not uploads.exists(), "the upload folder outlived the server"
    assert server.proc.returncode == 0, server.stderr()
    assert server.lines[-1] == "stopped" and server.stderr().strip() == "", (server.lines, server.stderr())


SLOW_START = """
import time, uvicorn
run = uvicorn.Server.run
def slow_run(self, *args, **kwargs):  # a loaded machine: uvicorn takes a while to start
    time.sleep(3)
    return run(self, *args, **kwargs)
uvicorn.Server.run = slow_run
"""


def test_the_address_is_printed_only_once_connections_are_taken():
    """A script waits for "Serving on ..." and connects at once: however long uvicorn then takes to
    start, the connection is taken (not refused) and answered."""
    server = Server(prelude=SLOW_START)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as conn:
            conn.sendall(b"GET /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := conn.recv(1 << 16):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    finally:
        server.stop()


def test_the_console_script_gradcam_web():
    script = Path(sys.executable).with_name("gradcam-web")
    assert script.is_file(), f"{script} is missing: install the project with pip install -e . (as .ci/run does)"
    proc = subprocess.run([str(script), "--help"], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout + proc.stderr  # fire shows the help on stderr when it is not a terminal
    assert "gradcam-web - The Grad-CAM web demo" in shown and "--caption_model_path" in shown, shown
