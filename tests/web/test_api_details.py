"""The web demo's smaller promises, in process (as test_api.py): samples are regular files of the
samples folder (no symbolic link out of it), their URLs in /api/config are percent-encoded, every
response carries the security headers, the Host header is parsed strictly, and the result names its
layer as the page's list does."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest

from gradcam_core.errors import GradCamError
from gradcam_core.web import app as web_app
from gradcam_core.web.demo import Demo, find_samples, load_classification

from .conftest import IMAGE, MODEL, PROTO, ROOT, SYNSET
from .test_api import JPEG, Client, assert_error, ok

STATIC = ROOT / "gradcam_core" / "web" / "static"
ODD_NAME = "a#b c%.jpg"


@pytest.fixture(scope="module")
def demo() -> Demo:
    return Demo({"classification": load_classification(MODEL, proto_file=PROTO, synset_file=SYNSET)}, {},
                find_samples(ROOT / "images"))


@pytest.fixture(scope="module")
def client(demo, tmp_path_factory):
    with Client(demo, tmp_path_factory.mktemp("uploads")) as c:
        yield c


@pytest.fixture
def samples(tmp_path) -> Path:
    """A samples folder: real.jpg, the odd name, and link.jpg -> a JPEG in another folder."""
    folder, outside = tmp_path / "samples", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    shutil.copy(IMAGE, folder / "real.jpg")
    shutil.copy(IMAGE, folder / ODD_NAME)
    (outside / "secret.jpg").write_bytes(JPEG[:-2] + b"secret\xff\xd9")
    (folder / "link.jpg").symlink_to(outside / "secret.jpg")
    return folder


def sample_form(name: str) -> dict[str, str]:
    return {"task": "classification", "sample": name, "label": "243"}


# ------------------------------------------------------------------------------------- samples


def test_a_symbolic_link_in_the_samples_folder_is_neither_listed_nor_served(demo, samples, tmp_path):
    with Client(dataclasses.replace(demo, samples=find_samples(samples)), tmp_path / "up") as c:
        names = [s["name"] for s in ok(c.http.get("/api/config"))["samples"]]
        assert names == sorted(["real.jpg", ODD_NAME]), names
        assert_error(c.http.get("/samples/link.jpg"), 404, r"no sample named 'link\.jpg'")
        assert_error(c.http.post("/api/explain", data=sample_form("link.jpg")), 400, r"no sample named 'link\.jpg'")
        assert c.http.get("/samples/real.jpg").content == JPEG
        # a listed sample replaced by a link while the server runs is refused as well
        os.unlink(samples / "real.jpg")
        (samples / "real.jpg").symlink_to(tmp_path / "outside" / "secret.jpg")
        assert_error(c.http.get("/samples/real.jpg"), 404, r"no sample named 'real\.jpg'")
        assert_error(c.http.post("/api/explain", data=sample_form("real.jpg")), 400, r"no sample named")
        assert c.leftovers() == []


def test_sample_urls_are_percent_encoded_and_served_by_that_url(demo, samples, tmp_path):
    with Client(dataclasses.replace(demo, samples=find_samples(samples)), tmp_path / "up") as c:
        listed = {s["name"]: s["url"] for s in ok(c.http.get("/api/config"))["samples"]}
        assert listed[ODD_NAME] == "/samples/a%23b%20c%25.jpg" == "/samples/" + quote(ODD_NAME, safe="")
        response = c.http.get(listed[ODD_NAME])
        assert response.status_code == 200 and response.content == JPEG
        assert response.headers["content-type"] == "image/jpeg"
        by_name = ok(c.http.post("/api/explain", data=sample_form(ODD_NAME)))
        assert by_name["images"] == ok(c.explain(task="classification", label="243"))["images"]


# ------------------------------------------------------------------------------------- headers


def assert_security_headers(response, what: str) -> None:
    headers = response.headers
    assert headers.get("x-frame-options") == "DENY", (what, dict(headers))
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("referrer-policy") == "no-referrer", what
    policy = dict(p.strip().split(" ", 1) for p in headers.get("content-security-policy", "").split(";"))
    assert policy.get("default-src") == "'self'" and policy.get("frame-ancestors") == "'none'", (what, policy)
    assert policy.get("img-src") == "'self' data: blob:", (what, policy)
    assert "unsafe" not in headers["content-security-policy"], policy  # no inline script or style allowed
    assert len(headers.get_list("x-frame-options")) == 1, what


def test_every_response_says_not_to_be_framed_sniffed_or_referred(client, demo, tmp_path, monkeypatch):
    http = client.http
    responses = {
        "page": http.get("/"), "script": http.get("/static/app.js"), "style": http.get("/static/style.css"),
        "config": http.get("/api/config"), "sample": http.get("/samples/cat_dog.jpg"),
        "explained": client.explain(task="classification", label="243"),
        "400": client.explain(task="classification", label="0"),
        "403 host": http.get("/api/config", headers={"host": "evil.com"}),
        "403 origin": http.post("/api/explain", data=sample_form("cat_dog.jpg"), headers={"origin": "http://evil.com"}),
        "404": http.get("/nothing"), "404 static": http.get("/static/nothing.js"),
        "405": http.delete("/api/config"),
    }
    expected = {k: int(k.split()[0]) if k[0].isdigit() else 200 for k in responses}
    assert {k: r.status_code for k, r in responses.items()} == expected
    small = dataclasses.replace(demo, max_upload_bytes=1000)
    with Client(small, tmp_path) as c:
        responses["413"] = c.explain(task="classification")
        assert responses["413"].status_code == 413
    monkeypatch.setattr(demo.tasks["classification"], "run", lambda *args: 1 / 0)  # a fault of ours
    responses["500"] = client.explain(task="classification")
    assert responses["500"].status_code == 500
    for what, response in responses.items():
        assert_security_headers(response, what)


def test_the_page_needs_nothing_the_policy_forbids():
    """No inline script, style or event handler; its script and style sheet are its own files."""
    page = (STATIC / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S | re.I)
    assert scripts and all(re.search(r'\bsrc="/static/[\w.]+"', attrs) and not body.strip() for attrs, body in scripts)
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=|javascript:", page, re.I)
    assert re.findall(r'<link rel="stylesheet" href="([^"]+)"', page) == ["/static/style.css"]
    script = (STATIC / "app.js").read_text()
    assert not re.search(r"\beval\(|new Function|innerHTML|setAttribute\(\"style|document\.write", script)


# ------------------------------------------------------------------------------------- Host


SPOOFS = ["[::1]evil.com", "localhost:evil", "[::1]:evil", "localhost:8000:8000", "localhost:", "[::1]:",
          "localhost:+80", "localhost:-1", "localhost:0x50", "localhost:123456", "localhost.", "localhost..",
          "local host", "localhost evil.com", "localhost,evil.com", "localhost@evil.com", "evil.com@localhost",
          "user@localhost", "localhost/evil", "localhost\\evil", "localhost#evil", "localhost?x", "::1",
          "[::1", "::1]", "[::1]]", "[[::1]]", "[127.0.0.1]", "[::1%eth0]", "[::1%25lo]:80", "[evil.com]",
          "127.0.0.1:80\t80", "-localhost", "localhost-", "l\u00f6calhost", "localhost:\u0668\u0660",
          "LOCALHOST:80 x", "*", ".", ":80", "127.0.0.1\x00"]


@pytest.mark.parametrize("host", SPOOFS)
def test_a_host_header_that_is_not_exactly_a_name_and_port_is_refused(client, host):
    response = client.http.get("/api/config", headers={"host": host.encode("latin-1", "replace")})
    assert_error(response, 403, r"does not answer for the host")
    assert web_app.host_name(host) is None, host


@pytest.mark.parametrize("host, name", [
    ("localhost", "localhost"), ("LocalHost:8000", "localhost"), ("127.0.0.1:9", "127.0.0.1"),
    ("[::1]", "[::1]"), ("[::1]:8000", "[::1]"), ("[0:0:0:0:0:0:0:1]:8000", "[::1]"), ("[::1]:65535", "[::1]")])
def test_a_local_host_in_any_spelling_is_answered(client, host, name):
    assert web_app.host_name(host) == name
    ok(client.http.get("/api/config", headers={"host": host}))


def test_hosts_given_at_start_are_parsed_the_same_way(demo, tmp_path):
    with Client(demo, tmp_path, allowed_hosts=["Gradcam.LAN", "fd00::5", "[fd00:0::6]"]) as c:
        for host in ("gradcam.lan:8000", "[fd00::5]:8000", "[fd00::6]"):
            ok(c.http.get("/api/config", headers={"host": host}))
        for host in ("gradcam.lan:x", "[fd00::5]gradcam.lan", "fd00::5"):
            assert_error(c.http.get("/api/config", headers={"host": host}), 403, r"does not answer")
    with pytest.raises(GradCamError, match=r"-allowed_hosts: 'evil\.com/x' is not a host name"):
        web_app.create_app(demo, allowed_hosts=["evil.com/x"])


# ------------------------------------------------------------------------------------- layer


@pytest.mark.parametrize("given, listed", [("1", "conv1"), ("2", "relu_conv1"), ("conv1", "conv1"),
                                           ("64", "relu_conv10"), ("65", "pool10")])
def test_the_result_names_the_layer_as_the_page_lists_it(client, given, listed):
    """loadcaffe's module numbers: the listed name of the layer; pool10 (1 x 1, not listed): the net's name."""
    layers = ok(client.http.get("/api/config"))["tasks"]["classification"]["layers"]
    assert given not in layers and (listed in layers) == (listed != "pool10") or given == listed
    body = ok(client.explain(task="classification", label="243", layer=given))
    assert body["layer"] == listed
    assert body["images"] == ok(client.explain(task="classification", label="243", layer=listed))["images"]
