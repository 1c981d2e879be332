"""The web demo's connections, over real HTTP against the real command (``python -m gradcam_core.web``
in its own process, loopback only): stalled and slow uploads, incomplete request headers, clients that
disconnect, too many connections, SIGTERM with uploads in flight, ambiguous body framing.

Raw sockets, because an HTTP client library will not send half a request. Every loop is bounded in
count and time; the time limits are the command's options, set small so that the tests stay fast.
"""
from __future__ import annotations

import json
import selectors
import socket
import struct
import threading
import time

import httpx
import pytest

from .conftest import IMAGE, Server, wait_until

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run

JPEG = IMAGE.read_bytes()
HEADER_S, BODY_S = 2.0, 4.0
LIMITS = ["-header_timeout", f"{HEADER_S:g}", "-body_timeout", f"{BODY_S:g}", "-max_uploads", "10",
          "-max_connections", "24"]
# label 1 (tench) is explained slowly (2 s, said on stdout), so that work can be seen to be skipped
SLOW_RUN = """
import time
from gradcam_core.web import demo
run = demo.DemoTask.run
def slow_run(self, x, checked, layer):
    if self.name == "classification" and checked.targets.classes == [0]:
        print("slow run", flush=True)
        time.sleep(2)
    return run(self, x, checked, layer)
demo.DemoTask.run = slow_run
"""


@pytest.fixture(scope="module")
def server():
    server = Server(*LIMITS, prelude=SLOW_RUN)
    try:
        yield server
    finally:
        server.stop()
    assert "Traceback" not in server.stderr(), server.stderr()


def form(label: str = "243") -> bytes:
    """A multipart body: task, label and the cat_dog.jpg upload (boundary XyZ)."""
    return (b'--XyZ\r\nContent-Disposition: form-data; name="task"\r\n\r\nclassification\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="label"\r\n\r\n' + label.encode() + b'\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="cat_dog.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + JPEG + b"\r\n--XyZ--\r\n")


def request_head(length: int, extra: bytes = b"") -> bytes:
    return (b"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=XyZ\r\n" + extra +
            b"Content-Length: " + str(length).encode() + b"\r\n\r\n")


def stalled_upload(port: int, sent: int = 1000) -> socket.socket:
    """A connection that sends a request's headers and the first ``sent`` bytes of its form, then stalls."""
    body = form()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(request_head(len(body)) + body[:sent])
    return sock


def read_reply(sock: socket.socket, timeout: float) -> tuple[int | None, bytes, bool]:
    """(status or None, the bytes received, whether the server closed the connection) within ``timeout``."""
    data, closed, deadline = b"", False, time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return status, data, closed


def json_body(reply: bytes) -> dict:
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])


def post(server: Server, label: str = "243", timeout: float = 30) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    with httpx.Client(timeout=timeout) as http:
        response = http.post(server.url + "api/explain", data={"task": "classification", "label": label},
                             files={"image": ("cat_dog.jpg", JPEG, "image/jpeg")})
    return response, time.monotonic() - start


def close_hard(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a client that crashes or loses its network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# ------------------------------------------------------------------------ stalled uploads, the acceptance


class Attacker:
    """Keeps ``count`` stalled uploads open: half stall outright, half trickle a byte every 0.5 s;
    each one answered or closed is replaced at once by a new one. Runs until ``stop`` (bounded)."""

    def __init__(self, port: int, count: int = 8, seconds: float = 6.0, max_connections: int = 80) -> None:
        self.port, self.count, self.seconds, self.left = port, count, seconds, max_connections
        self.ended: list[tuple[int | None, bytes, float]] = []  # (status, reply, seconds it was held)
        self.opened = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> Attacker:
        self.thread.start()
        assert self.opened.wait(10), "the stalled uploads were not opened"
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(15)

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        started: dict[socket.socket, tuple[float, int]] = {}  # socket -> (opened at, bytes sent)
        replies: dict[socket.socket, bytes] = {}

        def open_one(i: int) -> None:
            if self.left <= 0:
                return
            self.left -= 1
            sock = stalled_upload(self.port)
            sock.setblocking(False)
            started[sock] = (time.monotonic(), 1000 if i % 2 == 0 else -1000)  # negative: trickling
            replies[sock] = b""
            sel.register(sock, selectors.EVENT_READ, i)

        for i in range(self.count):
            open_one(i)
        self.opened.set()
        end, next_trickle = time.monotonic() + self.seconds, time.monotonic() + 0.5
        try:
            while not self.done.is_set() and time.monotonic() < end:
                for key, _ in sel.select(timeout=0.1):
                    sock = key.fileobj
                    try:
                        chunk = sock.recv(1 << 16)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except ConnectionResetError:
                        chunk = b""
                    if chunk:
                        replies[sock] += chunk
                        continue
                    reply = replies.pop(sock)  # closed by the server: record, reconnect
                    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None
                    self.ended.append((status, reply, time.monotonic() - started.pop(sock)[0]))
                    sel.unregister(sock)
                    sock.close()
                    open_one(key.data)
                if time.monotonic() >= next_trickle:
                    next_trickle += 0.5
                    for sock, (at, sent) in list(started.items()):
                        if sent < 0:
                            body = form()
                            with_byte = -sent + 1
                            try:
                                sock.send(body[-sent: with_byte])
                            except OSError:
                                continue
                            started[sock] = (at, -with_byte)
        finally:
            for sock in list(started):
                sock.close()


def test_eight_stalled_uploads_cannot_keep_a_ninth_client_from_its_answer(server):
    """Eight uploads that stall (or trickle), each replaced by a new one as soon as it is refused, for
    6 s: a legitimate client asking now and then gets its 200 each time, in a few seconds at most; the
    stalled ones are refused with 408 within the time limits and closed."""
    with Attacker(server.port) as attacker:
        answers = []
        for wait in (0.5, 1.5, 2.0):  # before the first refusals, around them, after the reconnections
            time.sleep(wait)
            response, seconds = post(server)
            answers.append((response.status_code, round(seconds, 2), response.text[:200]))
        attacker.thread.join(15)
    assert all(status == 200 and seconds < 10 for status, seconds, _ in answers), answers
    statuses = [status for status, _, _ in attacker.ended]
    assert len(attacker.ended) >= 8 and set(statuses) == {408}, statuses  # every one refused, then closed
    errors = [json_body(reply)["error"] for _, reply, _ in attacker.ended]
    assert any("nothing arrived" in e for e in errors) and any("did not arrive" in e for e in errors), errors
    for _status, reply, held in attacker.ended:
        error = json_body(reply)["error"]
        stalled = "nothing arrived for 2 s" in error
        assert stalled or "did not arrive within 4 s" in error, error
        # a stalled one goes at the idle limit, a trickling one at the body deadline
        assert (HEADER_S - 0.5 if stalled else BODY_S - 0.5) < held < (HEADER_S if stalled else BODY_S) + 3, \
            (error, held)


def test_uploads_past_max_uploads_are_503(server):
    """-max_uploads 10: with ten uploads in progress, the eleventh is refused at once (503,
    Retry-After); once they are gone, uploads pass again."""
    socks = [stalled_upload(server.port) for _ in range(10)]
    try:
        time.sleep(1.0)  # all ten read by the server
        response, seconds = post(server)
        assert response.status_code == 503 and "10 uploads in progress" in response.json()["error"], response.text
        assert response.headers["retry-after"].isdigit() and seconds < 2, (response.headers, seconds)
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 5
    while (response := post(server)[0]).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)  # the server notices the ten closed connections
    assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- incomplete request headers


STALLED_HEADERS = [b"", b"GET /api/con", b"GET /api/config HTTP/1.1\r\nHost: 127.0",
                   b"GET /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /api/config HT"]


def test_incomplete_request_headers_are_closed_within_the_header_timeout(server):
    """Nothing, half a request line, half the headers, half of a second request on a kept-alive
    connection (at once): the server closes each connection -header_timeout (2 s) after it was opened."""
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in STALLED_HEADERS]
    ended: dict[int, tuple[bytes, bool, float]] = {}
    try:
        start = time.monotonic()
        for sock, sent in zip(socks, STALLED_HEADERS):
            sock.sendall(sent)

        def read(i: int) -> None:
            _, reply, closed = read_reply(socks[i], HEADER_S + 4)
            ended[i] = (reply, closed, time.monotonic() - start)

        readers = [threading.Thread(target=read, args=(i,)) for i in range(len(socks))]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(HEADER_S + 10)
    finally:
        for sock in socks:
            sock.close()
    for i, sent in enumerate(STALLED_HEADERS):
        reply, closed, held = ended[i]
        assert closed, f"{sent!r}: still open after {held:.1f} s"
        assert HEADER_S - 0.5 < held < HEADER_S + 3, (sent, held)
        answered = 1 if b"\r\n\r\nGET" in sent else 0  # the complete first request only
        assert reply.count(b"HTTP/1.1 ") == answered and reply.startswith(b"HTTP/1.1 200" if answered else b""), \
            (sent, reply)


def test_connections_past_max_connections_are_503_json_and_closed(server):
    """-max_connections 24: with 24 connections open (stalled in their headers), the next one's
    request is answered 503 with the API's JSON error and closed; once they are gone, requests pass."""
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(24)]
    try:
        for sock in idle:
            sock.sendall(b"GET /api/config HTTP/1.1\r\n")
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as extra:
            extra.sendall(b"GET /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, reply, closed = read_reply(extra, 5)
        assert status == 503 and closed, reply[:300]
        assert "too many open connections (24)" in json_body(reply)["error"], reply
        assert b"x-frame-options: deny" in reply.lower(), reply[:400]  # the app's security headers too
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while httpx.get(server.url + "api/config", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the connections closed were still counted"
        time.sleep(0.1)


# ------------------------------------------------------------------------------------ clients that leave


def test_the_work_of_disconnected_clients_is_skipped(server):
    """Five complete requests whose explanation is slow (2 s each, label 1); the first has started
    when all five clients disconnect: the four that had not started never run, and a sixth client
    gets its answer once the running one is done, not after five of them."""
    body = form("1")
    socks = []
    try:
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(request_head(len(body)) + body)
            socks.append(sock)
        before = server.lines.count("slow run")
        wait_until(lambda: server.lines.count("slow run") > before, 20, "the first slow explanation")
        disconnected = time.monotonic()
    finally:
        for sock in socks:
            sock.close()
    response, _ = post(server)
    seconds = time.monotonic() - disconnected
    assert response.status_code == 200, response.text
    # the property: the four abandoned explanations never ran (each would have printed its line)
    assert server.lines.count("slow run") == before + 1, server.lines[3:]
    # and, as a bound loose enough for a loaded 2-core machine, the sixth did not wait for them
    # (four more slow runs would add 8 s to the running one's 2 s and its own explanation)
    assert seconds < 4 * 2 + 6, f"the answer came {seconds:.1f} s after the disconnects"


def test_a_client_disconnecting_mid_upload_prints_no_traceback(server):
    """20 clients send part of a form and disconnect (half with a reset): no traceback in the log, at
    most a short line each, and the server answers after them."""
    body = form()
    before = server.stderr()
    for i in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(request_head(len(body)) + body[: 200 + 1000 * i])
        time.sleep(0.02)
        close_hard(sock) if i % 2 else sock.close()
    response, _ = post(server)
    assert response.status_code == 200, response.text
    log = server.stderr()[len(before):]
    assert "Traceback" not in log and "ClientDisconnect" not in log, log
    assert len(log.splitlines()) <= 20 and all(len(line) < 200 for line in log.splitlines()), log


# -------------------------------------------------------------------------------------------- framing


def test_a_request_with_content_length_and_chunked_is_refused(server):
    """Both framings in one request (a smuggling attempt through a proxy that reads the other one):
    400 with the API's JSON error, and the connection closed, though the chunked body is a good form."""
    chunk = (b'--XyZ\r\nContent-Disposition: form-data; name="task"\r\n\r\nclassification\r\n'
             b'--XyZ\r\nContent-Disposition: form-data; name="sample"\r\n\r\ncat_dog.jpg\r\n--XyZ--\r\n')
    chunked = b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_head(4, b"Transfer-Encoding: chunked\r\n") + chunked)
        status, reply, closed = read_reply(sock, 10)
    assert status == 400 and closed, reply[:300]
    assert "both Content-Length and Transfer-Encoding" in json_body(reply)["error"], reply


# ------------------------------------------------------------------------------------------- stopping


def test_sigterm_stops_promptly_with_stalled_uploads_and_headers(tmp_path):
    """With the default time limits (a form may take 60 s), three stalled uploads and a stalled
    request line: SIGTERM stops the server within a few seconds, as a normal stop (exit 0, "stopped",
    nothing on stderr, the upload folder removed); the stalled uploads are told 503."""
    server = Server(env={"TMPDIR": str(tmp_path)})
    socks = []
    try:
        (uploads,) = tmp_path.glob("gradcam-web-*")
        socks = [stalled_upload(server.port) for _ in range(3)]
        half = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        half.sendall(b"POST /api/expl")
        socks.append(half)
        time.sleep(0.3)
        start = time.monotonic()
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except Exception:
            pass
        seconds = time.monotonic() - start
        status, reply, _ = read_reply(socks[0], 2)
    finally:
        for sock in socks:
            sock.close()
        server.stop()
    assert seconds < 4, f"SIGTERM took {seconds:.1f} s"
    assert server.proc.returncode == 0 and server.lines[-1] == "stopped", (server.proc.returncode, server.lines)
    assert server.stderr().strip() == "", server.stderr()
    assert not uploads.exists(), "the upload folder outlived the server"
    assert status == 503 and "stopping" in json_body(reply)["error"], reply[:300]


@pytest.mark.parametrize("args, message", [
    (["-body_timeout", "0"], "-body_timeout must be a number of seconds above 0"),
    (["-header_timeout", "soon"], "-header_timeout must be a number, got 'soon'"),
    (["-header_timeout", "inf"], "-header_timeout must be a finite number"),
    (["-max_uploads", "0"], "-max_uploads must be at least 1"),
    (["-max_connections", "-3"], "-max_connections must be at least 1"),
])
def test_bad_limits_exit_2_with_one_line(tmp_path, args, message):
    from .test_command import run_command

    result = run_command(*args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, (args, result.returncode, result.stderr)
    assert lines[0].startswith("python -m gradcam_core.web: error: ") and message in lines[0], (args, lines[0])
