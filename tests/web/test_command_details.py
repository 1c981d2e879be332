"""The smaller guards of test_api_details.py over real HTTP against ``python -m gradcam_core.web``: Host
spoofs as uvicorn passes them on, the security headers on what uvicorn sends, and a samples folder
with a symbolic link out of it and a name that needs percent-encoding."""
from __future__ import annotations

import json
import shutil
import socket

import httpx
import pytest

from .conftest import IMAGE, Server

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run

JPEG = IMAGE.read_bytes()


def raw_request(port: int, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (a request without a body) as written; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        data = b""
        while len(data) < 1 << 22:  # Connection: close: the server ends the answer
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def get(port: int, path: str, host: str) -> tuple[int, dict[str, str], bytes]:
    return raw_request(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))


def test_host_spoofs_are_refused_and_every_answer_has_the_security_headers(plain_server):
    port = plain_server.port
    for host in ("[::1]evil.com", f"[::1]:{port}evil.com", "localhost:evil", f"localhost:{port}:{port}",
                 "localhost@evil.com", f"evil.com@localhost:{port}", "[::1", "localhost.", f"127.0.0.1.:{port}"):
        status, headers, body = get(port, "/api/config", host)
        assert status == 403 and "does not answer for the host" in json.loads(body)["error"], (host, status, body)
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff", headers
    for path in ("/", "/static/app.js", "/api/config", "/samples/cat_dog.jpg", "/samples/nothing.jpg"):
        status, headers, _ = get(port, path, f"localhost:{port}")
        assert status == (404 if "nothing" in path else 200), (path, status)
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff", headers
        assert headers["referrer-policy"] == "no-referrer", headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"], headers


def test_samples_over_http_no_symbolic_link_and_encoded_names(tmp_path):
    folder, outside = tmp_path / "samples", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    shutil.copy(IMAGE, folder / "a#b c%.jpg")
    (outside / "secret.jpg").write_bytes(b"not for the web")
    (folder / "link.jpg").symlink_to(outside / "secret.jpg")
    server = Server("-samples", str(folder))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            samples = http.get("/api/config").json()["samples"]
            assert samples == [{"name": "a#b c%.jpg", "url": "/samples/a%23b%20c%25.jpg"}], samples
            response = http.get(samples[0]["url"])
            assert response.status_code == 200 and response.content == JPEG
        status, _, body = get(server.port, "/samples/link.jpg", "127.0.0.1")
        assert status == 404 and b"not for the web" not in body, (status, body)
    finally:
        server.stop()
