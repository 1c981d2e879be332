"""The web demo's JSON API, in process (Starlette's TestClient over ``create_app``) on the bundled real
SqueezeNet and the VQA and captioning test fixtures.

The central promise: every image of ``POST /api/explain`` is, pixel for pixel, the file the CLI writes
for the same image and options; what was explained and predicted is what the CLI prints. Then the
guards: one-line JSON errors (never a traceback, never a server path), the upload and pixel limits,
the Host allowlist, the bounded queue, the engine lock, and no upload left on disk.
"""
from __future__ import annotations

import dataclasses
import json
import re
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

with warnings.catch_warnings():  # starlette's note that its TestClient will move to httpx2: not ours to act on
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from gradcam_core.tasks.vqa.model import VQASizes
from gradcam_core.web import app as web_app
from gradcam_core.web.__main__ import ENABLE
from gradcam_core.web.demo import ENGINE_LOCK, Demo, find_samples, load_captioning, load_classification, load_vqa

from .conftest import (
    CAPTION_MODEL,
    IMAGE,
    MODEL,
    PROTO,
    ROOT,
    SYNSET,
    VQA_FILES,
    VQA_SIZES,
    assert_images_are_the_clis,
    cli_run,
    data_url_pixels,
    oracle_input_rgb,
)

JPEG = IMAGE.read_bytes()


@pytest.fixture(scope="module")
def demo() -> Demo:
    """The three tasks, loaded once for the module (about 3 s)."""
    tasks = {
        "classification": load_classification(MODEL, proto_file=PROTO, synset_file=SYNSET),
        "vqa": load_vqa(VQA_FILES["model_path"], VQA_FILES["vocab_file"], VQA_FILES["proto_file"],
                        VQA_FILES["model_file"], sizes=VQASizes(**VQA_SIZES)),
        "captioning": load_captioning(CAPTION_MODEL),
    }
    return Demo(tasks, {}, find_samples(ROOT / "images"))


class Client:
    """A TestClient over ``create_app(demo)`` whose upload folder is known (``uploads``), so that the
    tests can see the temporary files come and go."""

    def __init__(self, demo: Demo, base: Path, **kwargs) -> None:
        base.mkdir(parents=True, exist_ok=True)
        saved, tempfile.tempdir = tempfile.tempdir, str(base)
        try:
            app = web_app.create_app(demo, **kwargs)
        finally:
            tempfile.tempdir = saved
        (self.uploads,) = base.glob("gradcam-web-*")
        self.http = TestClient(app, base_url="http://localhost", raise_server_exceptions=False)

    def __enter__(self) -> Client:
        self.http.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.http.__exit__(*exc)

    def explain(self, image: bytes | None = JPEG, filename: str = "cat_dog.jpg", **fields: str):
        files = {"image": (filename, image, "image/jpeg")} if image is not None else None
        return self.http.post("/api/explain", data=fields, files=files)

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.uploads.iterdir())


@pytest.fixture(scope="module")
def client(demo, tmp_path_factory):
    with Client(demo, tmp_path_factory.mktemp("uploads")) as c:
        yield c


@pytest.fixture(autouse=True)
def no_upload_left(client):
    """After every test, the upload folder is empty again: errors included."""
    yield
    assert client.leftovers() == [], "temporary upload files were left behind"


def ok(response) -> dict:
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    return response.json()


def assert_error(response, status: int, pattern: str) -> str:
    """A refusal: the status, a JSON body that is exactly ``{"error": <one line>}`` matching ``pattern``,
    no traceback and no path of the server's upload folder."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    line = body["error"]
    assert line and "\n" not in line and "Traceback" not in line and 'File "' not in line, line
    assert "gradcam-web-" not in line and ".img" not in line and tempfile.gettempdir() + "/" not in line, line
    assert str(ROOT) not in line and "synset_words.txt" not in line, line  # no file of the server named
    assert re.search(pattern, line), f"{line!r} does not match {pattern!r}"
    return line


def stdout_value(run, prefix: str) -> str:
    """The value of the CLI's ``prefix`` line (Lua's print joins with a tab)."""
    lines = [line for line in run.stdout.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (prefix, run.stdout)
    return lines[0][len(prefix):].strip()


# ---------------------------------------------------------------------------------------- config


def test_config_names_the_loaded_models_their_layers_classes_samples_and_limits(client):
    config = ok(client.http.get("/api/config"))
    cls, vqa, cap = (config["tasks"][t] for t in ("classification", "vqa", "captioning"))
    assert cls["enabled"] and cls["model"] == "squeezenet1_1.caffemodel (caffe)" and cls["input_sz"] == 224
    assert {"conv1", "fire9/concat", "relu_conv10"} <= set(cls["layers"]) and cls["default_layer"] in cls["layers"]
    assert "pool10" not in cls["layers"]  # 1 x 1: no map to explain
    names = [line.split(" ", 1)[1].split(",")[0] for line in SYNSET.read_text().splitlines()]
    assert cls["classes"] == names and cls["classes"][242] == "boxer"  # classes[i] is label i + 1
    assert vqa["enabled"] and vqa["default_layer"] == "relu5_4" and vqa["question"] == "What animal?"
    vocab = json.loads(VQA_FILES["vocab_file"].read_text())
    assert vqa["answers"] == [vocab["ix_to_ans"][str(i)] for i in range(1, len(vocab["ix_to_ans"]) + 1)]
    assert cap["enabled"] and cap["default_layer"] in cap["layers"]
    assert [s["name"] for s in config["samples"]] == sorted(p.name for p in (ROOT / "images").glob("*.jpg"))
    assert all(s["url"] == f"/samples/{s['name']}" for s in config["samples"])
    assert config["limits"] == {"max_upload_bytes": 20 << 20, "max_pixels": 40_000_000}


def test_the_default_classification_layer_is_the_clis(client):
    """The CLI's default (relu5_3) is not in SqueezeNet: both fall back to the same layer."""
    run = cli_run("classification.py", "-label", "243")
    cli_layer = stdout_value(run, "Grad-CAM layer:").split(" ")[0]
    assert ok(client.http.get("/api/config"))["tasks"]["classification"]["default_layer"] == cli_layer
    assert ok(client.explain(task="classification", label="243"))["layer"] == cli_layer


def test_a_disabled_task_names_the_option_that_enables_it(demo, tmp_path):
    only = Demo({"classification": demo.tasks["classification"]},
                {k: ENABLE[k] for k in ("vqa", "captioning", "detection")}, demo.samples)
    with Client(only, tmp_path) as c:
        tasks = ok(c.http.get("/api/config"))["tasks"]
        assert tasks["vqa"] == {"enabled": False, "enable": ENABLE["vqa"]} and "-vqa_model_path" in ENABLE["vqa"]
        assert tasks["captioning"] == {"enabled": False, "enable": ENABLE["captioning"]}
        assert_error(c.explain(task="captioning"), 400, r"captioning task is not enabled.*-caption_model_path")
        assert_error(c.explain(task="vqa", question="What?"), 400, r"vqa task is not enabled.*-vqa_model_path")
        assert_error(c.explain(task="detection"), 400, r"^the detection task is not enabled on this server: start "
                     r"the server with -detect_arch .*-detect_model_file")
        assert c.leftovers() == []


# ------------------------------------------------------------------------------ the CLI's pixels

CASES = {
    # id: (task, form fields, CLI script, CLI arguments)
    "cls_243": ("classification", {"label": "243"}, "classification.py", ["-label", "243"]),
    "cls_name": ("classification", {"label": "Tiger Cat"}, "classification.py", ["-label", "tiger cat"]),
    "cls_predicted": ("classification", {"label": ""}, "classification.py", ["-label", "-1"]),
    "cls_fire9": ("classification", {"label": "243", "layer": "fire9/concat"}, "classification.py",
                  ["-label", "243", "-layer_name", "fire9/concat"]),
    "vqa_dog": ("vqa", {"question": "What animal?", "answer": "dog"}, "visual_question_answering.py",
                ["-question", "What animal?", "-answer", "dog"]),
    "vqa_predicted": ("vqa", {"question": "What animal?", "answer": ""}, "visual_question_answering.py",
                      ["-question", "What animal?", "-answer", ""]),
    "cap_given": ("captioning", {"caption": "a dog and a cat"}, "captioning.py", ["-caption", "a dog and a cat"]),
    "cap_generated": ("captioning", {"caption": ""}, "captioning.py", ["-caption", ""]),
}


# one case per task and the predicted class stay in the quick run; these four are in the slow set
SLOW_CASES = {"cls_name", "cls_fire9", "vqa_predicted", "cap_generated"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in CASES])
def test_every_image_is_the_clis_file_and_the_targets_are_what_the_cli_prints(client, case):
    task, fields, script, args = CASES[case]
    body = ok(client.explain(task=task, **fields))
    run = cli_run(script, *args)
    assert_images_are_the_clis(body["images"], body["files"], run, case)
    assert body["task"] == task
    if task == "classification":
        label, name = stdout_value(run, "Label ").split(": ", 1)
        assert body["target"] == {"label": int(label), "name": name}
        predicted = int(stdout_value(cli_run(script, "-label", "-1"), "No label provided, using predicted label"))
        assert body["predicted"]["label"] == predicted == body["predictions"][0]["label"]
        cli_layer = fields.get("layer") or stdout_value(run, "Grad-CAM layer:").split(" ")[0]  # the CLI's default
        assert body["layer"] == cli_layer
    elif task == "vqa":
        assert body["target"]["answer"] == stdout_value(run, "Grad-CAM answer:")
        assert body["predicted"] == {"answer": stdout_value(run, "Predicted answer:")}
        assert body["target"]["question"] == fields["question"]
    else:
        assert body["target"] == {"caption": stdout_value(run, "Grad-CAM caption:")}
        assert body["predicted"] == {"caption": stdout_value(run, "Generated caption:")}
    assert 0 < body["seconds"]["explain"] <= body["seconds"]["total"]


def test_the_input_image_is_what_the_original_scripts_net_saw(client):
    """``images.input`` against the ORIGINAL Lua script's dumped preprocessed input for cat_dog.jpg."""
    rgb = data_url_pixels(ok(client.explain(task="classification", label="243"))["images"]["input"])
    assert rgb.shape == (224, 224, 3)
    assert np.abs(rgb - oracle_input_rgb()).max() <= 1.0


@pytest.mark.slow  # a CLI run on another image
def test_a_sample_is_explained_as_the_same_file_uploaded(client):
    by_name = ok(client.explain(image=None, sample="cat_dog.jpg", task="classification", label="243"))
    uploaded = ok(client.explain(task="classification", label="243"))
    assert by_name["images"] == uploaded["images"] and by_name["target"] == uploaded["target"]
    other = ok(client.explain(image=None, sample="tabbycat_dog.jpg", task="classification", label="243"))
    assert_images_are_the_clis(other["images"], other["files"],
                               cli_run("classification.py", "-label", "243", image=ROOT / "images" / "tabbycat_dog.jpg"),
                               "tabbycat_dog.jpg")


def test_top5_is_the_nets_own_softmax_sorted(client):
    """The top 5 against an independent forward pass of the same Caffe files: their own "prob" Softmax
    layer (the explained net has it removed: Grad-CAM follows the logits)."""
    from gradcam_core.caffe import load_caffe
    from gradcam_core.image.preprocessing import load_input

    body = ok(client.explain(task="classification", label="243"))
    top = body["predictions"]
    net = load_caffe(str(PROTO), str(MODEL))
    with torch.no_grad():
        probs = net(load_input(IMAGE, 224, 224)[None]).reshape(-1).double()
    assert abs(float(probs.sum()) - 1) < 1e-5
    values, indices = torch.topk(probs, 5)
    assert [p["label"] for p in top] == [int(i) + 1 for i in indices]
    assert np.allclose([p["score"] for p in top], values.numpy(), rtol=1e-5, atol=1e-7)
    scores = [p["score"] for p in top]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-9
    names = ok(client.http.get("/api/config"))["tasks"]["classification"]["classes"]
    assert all(p["name"] == names[p["label"] - 1] for p in top)
    assert body["predicted"] == {"label": top[0]["label"], "name": top[0]["name"]}


def test_vqa_top5_answers_are_sorted_and_the_first_is_the_prediction(client):
    body = ok(client.explain(task="vqa", question="What animal?"))
    top = body["predictions"]
    answers = ok(client.http.get("/api/config"))["tasks"]["vqa"]["answers"]
    assert len(top) == 5 and all(set(p) == {"answer", "score"} and p["answer"] in answers for p in top)
    scores = [p["score"] for p in top]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-9
    assert top[0]["answer"] == body["predicted"]["answer"]


# --------------------------------------------------------------------------------------- errors

TEXT = b"Shopping list:\n- eggs\n- milk\n"


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(image=TEXT, filename="notes.txt", task="classification"), r"'notes\.txt'.*not a JPEG or PNG"),
    (dict(image=b"", filename="empty.jpg", task="classification"), r"empty"),
    (dict(image=JPEG[: len(JPEG) // 2], filename="half.jpg", task="classification"), r"'half\.jpg'.*truncated"),
    (dict(image=JPEG[:300], filename="head.jpg", task="classification"), r"'head\.jpg'"),
    (dict(image=None, task="classification"), r"no image"),
    (dict(sample="cat_dog.jpg", task="classification"), r"an image or a sample, not both"),
    (dict(image=None, sample="nope.jpg", task="classification"), r"no sample named 'nope\.jpg'"),
    (dict(image=None, sample="../README.md", task="classification"), r"no sample named"),
    (dict(task="tracking"), r"unknown task 'tracking'.*classification, vqa, captioning, segmentation, detection"),
    (dict(task=""), r"names no task: send task = classification, vqa, captioning"),
    (dict(task="classification", layer="fire99/concat"), r"layer 'fire99/concat'.*fire9/concat"),
    (dict(task="classification", label="0"), r"label 0 .*1 to 1000"),
    (dict(task="classification", label="1001"), r"label 1001 .*1 to 1000"),
    (dict(task="classification", label="spaceship"), r"no class named 'spaceship'.*close matches: .*'space shuttle'"),
    # Labels are ASCII digits, as the CLI's -label: other digits and underscores are class names.
    (dict(task="classification", label="\u0663"), r"no class named '\u0663'"),
    (dict(task="classification", label="\uff15"), r"no class named '\uff15'"),
    (dict(task="classification", label="1_000"), r"no class named '1_000'"),
    (dict(task="classification", label="crane"), r"'crane' is ambiguous.*label 135 .*label 518 "),
    (dict(task="vqa"), r"needs a question"),
    (dict(task="vqa", question="   "), r"needs a question"),
    (dict(task="vqa", question="What animal?", answer="zebra"), r"answer 'zebra' is not one of the model's answers"),
    (dict(task="vqa", question="What animal?", layer="relu99"), r"layer 'relu99'"),
    (dict(task="captioning", caption=" ".join(["dog"] * 40)), r"40 words.*at most 16"),
    (dict(task="classification", flavour="vanilla"), r"unknown field 'flavour'"),
])
def test_bad_requests_are_one_line_400s(client, kwargs, pattern):
    assert_error(client.explain(**kwargs), 400, pattern)


def test_a_second_file_field_and_non_multipart_bodies_are_refused(client):
    mask = ("mask", ("b.jpg", JPEG, "image/jpeg"))
    assert_error(client.http.post("/api/explain", data={"task": "classification"}, files=[mask]), 400,
                 r"unexpected file field 'mask'")
    files = [("image", ("a.jpg", JPEG, "image/jpeg")), mask]
    assert_error(client.http.post("/api/explain", data={"task": "classification"}, files=files), 400, r"files")
    long_question = {"task": "vqa", "question": "why " * 30_000}
    assert_error(client.explain(**long_question), 400, r"exceeded maximum size of 64KB")
    many = {f"field{i}": "1" for i in range(len(web_app.FORM_FIELDS) + 2)}
    assert_error(client.explain(**many), 400, r"Too many fields")
    assert_error(client.http.post("/api/explain", json={"task": "classification", "sample": "cat_dog.jpg"}), 400,
                 r"multipart form")
    assert_error(client.http.post("/api/explain", content=JPEG, headers={"content-type": "image/jpeg"}), 400,
                 r"multipart form")


def raw_form(client, *parts: tuple[bytes, bytes]):
    """POST a multipart body made by hand: (the Content-Disposition's parameters, the part's bytes)."""
    body = b"".join(b"--B\r\nContent-Disposition: form-data; " + head + b"\r\n\r\n" + data + b"\r\n"
                    for head, data in parts) + b"--B--\r\n"
    return client.http.post("/api/explain", content=body, headers={"content-type": "multipart/form-data; boundary=B"})


def test_a_file_input_left_empty_is_no_image(client):
    """What a browser's plain <form> sends for a file input with no file chosen: a part with an empty
    file name and no bytes. It is no image: a sample chosen with it is explained."""
    empty = (b'name="image"; filename=""', b"")
    task = (b'name="task"', b"classification")
    assert_error(raw_form(client, task, empty), 400, r"^no image: send a file in the field 'image'")
    body = ok(raw_form(client, task, (b'name="sample"', b"cat_dog.jpg"), empty))
    assert body["images"] == ok(client.explain(task="classification"))["images"]


def test_an_image_sent_as_text_says_so(client):
    """``curl -F image=cat.jpg`` (the @ forgotten) sends the field as text, not a file."""
    for value in (b"cat.jpg", b""):
        line = assert_error(raw_form(client, (b'name="task"', b"classification"), (b'name="image"', value)), 400,
                            r"'image'.*file")
        assert "unknown field" not in line, line


def test_unknown_routes_and_methods_are_json_and_no_file_outside_is_served(client):
    not_allowed = client.http.get("/api/explain")
    assert_error(not_allowed, 405, r"Method Not Allowed")
    assert not_allowed.headers["allow"] == "POST"
    assert_error(client.http.delete("/api/config"), 405, r"Method Not Allowed")
    assert_error(client.http.get("/api/nothing"), 404, r"Not Found")
    assert_error(client.http.get("/samples/nope.jpg"), 404, r"no sample named 'nope\.jpg'")
    # httpx would remove a literal "/../" itself: these are the encoded forms (test_command sends raw ones)
    for path in ("/samples/..%2fREADME.md", "/samples/%2e%2e%2fREADME.md", "/static/%2e%2e/app.py",
                 "/static/..%2fapp.py", "/static/%2e%2e%2f%2e%2e%2fREADME.md", "/samples/%2fetc%2fpasswd",
                 "/static/%2fetc%2fpasswd", "/static/", "/samples/"):
        response = client.http.get(path)
        assert response.status_code == 404 and list(response.json()) == ["error"], (path, response.text[:200])
    assert (ROOT / "gradcam_core" / "web" / "app.py").is_file()  # it would have been there to serve


def test_the_page_and_its_static_files_are_served(client):
    static = ROOT / "gradcam_core" / "web" / "static"
    page = client.http.get("/")
    assert page.status_code == 200 and page.text == (static / "index.html").read_text()
    assert page.headers["content-type"].startswith("text/html")
    for name in ("app.js", "style.css"):
        response = client.http.get(f"/static/{name}")
        assert response.status_code == 200 and response.content == (static / name).read_bytes(), name
    sample = client.http.get("/samples/cat_dog.jpg")
    assert sample.status_code == 200 and sample.content == JPEG and sample.headers["content-type"] == "image/jpeg"


def test_an_image_over_the_pixel_limit_is_refused(demo, tmp_path):
    small = dataclasses.replace(demo, max_pixels=100 * 100)
    with Client(small, tmp_path) as c:
        assert_error(c.explain(task="classification"), 400, r"the image is \d+x\d+: more than the server's limit "
                                                             r"of 10000 pixels")
        assert c.leftovers() == []


def test_non_finite_scores_are_a_one_line_400_not_black_images(tmp_path):
    """-input_scale 1e38 overflows the input: the answer was 200 with black maps and an arbitrary class."""
    from gradcam_core.tasks.classify import InputOptions

    task = load_classification(MODEL, proto_file=PROTO, inputs=InputOptions(input_scale=1e38), input_sz=64)
    with Client(Demo({"classification": task}), tmp_path) as c:
        assert_error(c.explain(task="classification"), 400, r"^non-finite scores \(NaN/inf\) from the classification "
                                                             r"model \(.*\) on this image: check its weights")
        assert c.leftovers() == []


def multipart(chunks_of: bytes, chunk: int = 1 << 16):
    """A multipart form (task + image) as a generator: httpx sends it chunked, with no Content-Length."""
    head = (b'--XyZ\r\nContent-Disposition: form-data; name="task"\r\n\r\nclassification\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")
    body = head + chunks_of + b"\r\n--XyZ--\r\n"
    for i in range(0, len(body), chunk):
        yield body[i: i + chunk]


def test_an_upload_over_the_byte_limit_is_413_with_or_without_a_content_length(demo, tmp_path):
    limited = dataclasses.replace(demo, max_upload_bytes=len(JPEG) + 1000)
    big = JPEG + bytes(400_000)
    with Client(limited, tmp_path) as c:
        ok(c.explain(task="classification"))  # the limit lets an upload under it through
        assert_error(c.explain(image=big, task="classification"), 413, r"larger than the server's limit")
        chunked = c.http.post("/api/explain", content=multipart(big),
                              headers={"content-type": "multipart/form-data; boundary=XyZ"})
        assert_error(chunked, 413, r"larger than the server's limit")
        lying = c.http.post("/api/explain", content=b"x", headers={"content-type": "multipart/form-data; boundary=XyZ",
                                                                    "content-length": "99999999999"})
        assert lying.status_code in (400, 413)
        assert c.leftovers() == []


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LocalHost:8000", "127.0.0.1", "127.0.0.1:9",
                                  "[::1]:8000", "[::1]"])
def test_local_host_names_are_answered(client, host):
    assert client.http.get("/api/config", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.com", "evil.com:8000", "localhost.evil.com", "127.0.0.1.nip.io:8000",
                                  "192.168.1.5:8000", "[::2]:8000", ""])
def test_other_host_names_are_refused_with_403(client, host):
    line = assert_error(client.http.get("/api/config", headers={"host": host}), 403, r"does not answer for the host")
    assert repr(host) in line
    explain = client.http.post("/api/explain", data={"task": "classification", "sample": "cat_dog.jpg"},
                               headers={"host": host})
    assert_error(explain, 403, r"does not answer")


def test_a_host_given_at_start_is_answered(demo, tmp_path):
    with Client(demo, tmp_path, allowed_hosts=["gradcam.lan"]) as c:
        assert c.http.get("/api/config", headers={"host": "gradcam.lan:8000"}).status_code == 200
        assert c.http.get("/api/config", headers={"host": "evil.lan:8000"}).status_code == 403


def test_a_post_from_a_page_of_another_origin_is_refused(client):
    """A browser on another site may send a form to 127.0.0.1 (it cannot read the answer, but the
    server would compute): its Origin header gives it away. The demo's own page and scripts pass."""
    sample = {"task": "classification", "sample": "cat_dog.jpg"}
    for origin in ("http://evil.com", "http://localhost:9999", "null", "http://localhost.evil.com"):
        response = client.http.post("/api/explain", data=sample, headers={"origin": origin})
        assert_error(response, 403, r"another origin")
    ok(client.http.post("/api/explain", data=sample, headers={"origin": "http://localhost"}))  # its own page
    ok(client.http.post("/api/explain", data=sample))  # a script sends no Origin
    assert client.http.get("/api/config", headers={"origin": "http://evil.com"}).status_code == 200  # reads: CORS


def test_a_form_that_does_not_arrive_in_time_is_408_and_frees_its_slot(demo, tmp_path):
    """A slow (or stalled) upload cannot hold an upload slot for ever. Driven at the ASGI level: the
    TestClient would read the whole body before handing it to the app."""
    import asyncio

    body = b"".join(multipart(JPEG))
    with Client(demo, tmp_path, max_queue=1, max_uploads=1, body_seconds=0.5) as c:
        app = c.http.app

        async def stalled_post() -> tuple[int, bytes]:
            chunks = [body[:100], None, body[100:]]  # None: the client stalls for 1.5 s
            sent: list[dict] = []

            async def receive() -> dict:
                chunk = chunks.pop(0)
                if chunk is None:
                    await asyncio.sleep(1.5)
                    chunk = chunks.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

            async def send(message: dict) -> None:
                sent.append(message)

            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                     "scheme": "http", "path": "/api/explain", "raw_path": b"/api/explain", "query_string": b"",
                     "root_path": "", "client": ("127.0.0.1", 5000), "server": ("localhost", 80),
                     "headers": [(b"host", b"localhost"), (b"content-type", b"multipart/form-data; boundary=XyZ")]}
            await app(scope, receive, send)
            status = next(m["status"] for m in sent if m["type"] == "http.response.start")
            return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

        status, answer = asyncio.run(stalled_post())
        assert status == 408 and re.search(r"did not arrive within 0\.5 s", json.loads(answer)["error"]), answer
        ok(c.explain(task="classification"))  # the one slot was given back
        assert c.leftovers() == []


# ------------------------------------------------------------------------------- queue and lock


def test_a_full_queue_answers_503_with_retry_after_and_frees_its_slot(demo, tmp_path, monkeypatch):
    """max_queue=1: a request holding the only slot waits at the engine lock (held here); the next one is
    refused at once; once the first is done, requests pass again. Its upload exists while it waits."""
    task = demo.tasks["classification"]
    entered = threading.Event()
    explain = task.explain

    def waiting_explain(*args, **kwargs):
        entered.set()
        return explain(*args, **kwargs)

    monkeypatch.setattr(task, "explain", waiting_explain)
    with Client(demo, tmp_path, max_queue=1) as c:
        results = {}
        with ENGINE_LOCK:
            first = threading.Thread(target=lambda: results.setdefault("first", c.explain(task="classification")))
            first.start()
            assert entered.wait(30), "the first request never reached the engine"
            assert len(c.leftovers()) == 1  # its upload, while it waits
            busy = c.explain(task="classification")
            assert_error(busy, 503, r"busy")
            assert busy.headers["retry-after"].isdigit()
        first.join(30)
        assert not first.is_alive()
        ok(results["first"])
        ok(c.explain(task="classification"))
        assert c.leftovers() == []


def test_faults_are_one_line_json_and_free_the_lock_and_the_slot(demo, tmp_path, monkeypatch):
    task = demo.tasks["classification"]
    run = task.run
    fault = {"exc": None}

    def faulty_run(*args, **kwargs):
        raise fault["exc"]

    monkeypatch.setattr(task, "run", faulty_run)
    with Client(demo, tmp_path, max_queue=1) as c:
        fault["exc"] = ValueError("boom\n  second line of the fault")
        assert_error(c.explain(task="classification"), 500, r"^internal error: ValueError: boom second line")
        fault["exc"] = MemoryError()
        response = c.explain(task="classification")
        assert_error(response, 503, r"out of memory")
        assert response.headers["retry-after"].isdigit()
        fault["exc"] = RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: "
                                    "you tried to allocate 9999999999 bytes")
        assert_error(c.explain(task="classification"), 503, r"out of memory")  # torch's CPU allocator's way
        fault["exc"] = RuntimeError("Given input size: (512x1x1). Calculated output size: (512x0x0)\nmore")
        assert_error(c.explain(task="classification"), 400, r"classification model failed on this input: Given input")
        assert not ENGINE_LOCK.locked()
        monkeypatch.setattr(task, "run", run)
        ok(c.explain(task="classification"))  # the slot (max_queue=1) and the lock were given back
        assert c.leftovers() == []


def test_concurrent_requests_give_the_bytes_of_sequential_ones(client):
    """4 threads x 3 requests at once (classification and captioning interleaved: the lock keeps the
    engine's module switches and the process-wide oneDNN flag of one call from another)."""
    plans = [
        [("classification", {"label": "243"}), ("captioning", {"caption": ""}), ("classification", {"label": ""})],
        [("captioning", {"caption": "a dog"}), ("classification", {"label": "243", "layer": "fire9/concat"}),
         ("classification", {"label": "tabby"})],
        [("classification", {"label": "1"}), ("classification", {"label": "243"}), ("captioning", {"caption": ""})],
        [("classification", {"label": "283", "layer": "fire5/concat"}), ("captioning", {"caption": "a cat"}),
         ("classification", {"label": "243"})],
    ]
    requests = {(t, tuple(sorted(f.items()))) for plan in plans for t, f in plan}
    sequential = {key: ok(client.explain(task=key[0], **dict(key[1])))["images"] for key in requests}
    got: list = []
    barrier = threading.Barrier(len(plans))

    def worker(plan):
        barrier.wait()
        for t, f in plan:
            got.append(((t, tuple(sorted(f.items()))), client.explain(task=t, **f)))

    threads = [threading.Thread(target=worker, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(got) == 12
    for key, response in got:
        assert ok(response)["images"] == sequential[key], key


def test_the_upload_folder_is_removed_when_the_server_stops(demo, tmp_path):
    with Client(demo, tmp_path) as c:
        ok(c.explain(task="classification"))
        folder = c.uploads
        assert folder.is_dir()
    assert not folder.exists()
