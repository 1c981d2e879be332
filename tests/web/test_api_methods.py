"""The API's CAM methods: ``GET /api/config`` lists the registered methods, ``POST /api/explain`` takes
``method`` and the 0/1 modifiers ``counterfactual``, ``aug_smooth``, ``eigen_smooth``, and answers
with the images of the CLI's files for the same options (``-method``, ``-counterfactual 1``, ...), named
as the CLI names them; an unknown method or a bad switch is a one-line 400.

The second method is the test-only ``test-mean+`` (``tests/mean_cam.py``), registered in this process
for this module only, and in the CLI's process by a wrapper script."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from conftest import run_script
from mean_cam import NAME, TOKEN, mean_cam_registered, wrapper_script

with warnings.catch_warnings():  # starlette's note that its TestClient will move to httpx2: not ours to act on
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from gradcam_core.engine.methods import lookup, method_names
from gradcam_core.tasks.vqa.model import VQASizes
from gradcam_core.web import app as web_app
from gradcam_core.web.demo import Demo, find_samples, load_captioning, load_classification, load_vqa

from .conftest import (
    CAPTION_MODEL,
    CLI_MODEL_ARGS,
    IMAGE,
    MODEL,
    PROTO,
    ROOT,
    SYNSET,
    VQA_FILES,
    VQA_SIZES,
    CliRun,
    assert_images_are_the_clis,
    read_pixels,
)

JPEG = IMAGE.read_bytes()
SCRIPT = {"classification": "classification.py", "vqa": "visual_question_answering.py", "captioning": "captioning.py"}
TARGET = {"classification": ("label", "243", "-label"), "vqa": ("answer", "dog", "-answer"),
          "captioning": ("caption", "a dog", "-caption")}
QUESTION = {"vqa": {"question": "What animal?"}}  # the CLI's default question


@pytest.fixture(scope="module", autouse=True)
def registered():
    with mean_cam_registered():
        yield


@pytest.fixture(scope="module")
def client(registered):
    tasks = {
        "classification": load_classification(MODEL, proto_file=PROTO, synset_file=SYNSET),
        "vqa": load_vqa(VQA_FILES["model_path"], VQA_FILES["vocab_file"], VQA_FILES["proto_file"],
                        VQA_FILES["model_file"], sizes=VQASizes(**VQA_SIZES)),
        "captioning": load_captioning(CAPTION_MODEL),
    }
    app = web_app.create_app(Demo(tasks, {}, find_samples(ROOT / "images")))
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as http:
        yield http


def explain(client, **fields: str):
    return client.post("/api/explain", data=fields, files={"image": ("cat_dog.jpg", JPEG, "image/jpeg")})


def ok(response) -> dict:
    assert response.status_code == 200, response.text[:500]
    return response.json()


def cli_files(tmp_path: Path, task: str, *args: str) -> CliRun:
    """The CLI's run of the task's script (the test method registered) with ``-save_overlay 1``."""
    script = SCRIPT[task]
    out = tmp_path / "cli"
    result = run_script(wrapper_script(tmp_path, script), *CLI_MODEL_ARGS[script], "-input_image_path", str(IMAGE),
                        *args, "-save_overlay", "1", "-out_path", f"{out}/")
    assert result.returncode == 0, result.stderr
    return CliRun(result.stdout, {p.name: read_pixels(p.read_bytes()) for p in out.glob("*.png")})


def test_config_lists_every_method_with_its_summary(client):
    body = ok(client.get("/api/config"))
    assert body["methods"] == [{"name": n, "summary": lookup(n).summary, "uses_target": lookup(n).uses_target}
                               for n in method_names()]
    assert {"gradcam", NAME} <= {m["name"] for m in body["methods"]} and body["methods"][0]["name"] == "gradcam"
    assert body["default_method"] == "gradcam" and body["modifiers"] == ["counterfactual", "aug_smooth", "eigen_smooth"]


# vqa: slow (1.7 s); classification and captioning stay quick
@pytest.mark.parametrize("task", ["classification", pytest.param("vqa", marks=pytest.mark.slow), "captioning"])
def test_a_method_gives_the_clis_files_of_that_method(client, tmp_path, task):
    field, value, option = TARGET[task]
    body = ok(explain(client, task=task, method=NAME, **{field: value}, **QUESTION.get(task, {})))
    name = value if task != "classification" else "243"
    prefix = {"classification": "classify", "vqa": "vqa", "captioning": "caption"}[task]
    assert body["method"] == NAME and body["modifiers"] == {"counterfactual": False, "aug_smooth": False,
                                                            "eigen_smooth": False}
    assert body["files"] == {"input": f"{prefix}_input_{name}.png", "gcam": f"{prefix}_{TOKEN}_hm_{name}.png",
                             "gb": f"{prefix}_gb_{name}.png", "gb_gcam": f"{prefix}_gb_{TOKEN}_{name}.png",
                             "overlay": f"{prefix}_overlay_{TOKEN}_{name}.png"}
    assert_images_are_the_clis(body["images"], body["files"], cli_files(tmp_path, task, option, value, "-method", NAME),
                               f"{task} {NAME}")
    default = ok(explain(client, task=task, **{field: value}, **QUESTION.get(task, {})))
    assert default["method"] == "gradcam" and default["images"]["gb"] == body["images"]["gb"]
    assert default["images"]["gcam"] != body["images"]["gcam"]


@pytest.mark.parametrize("fields, args, token, gb", [
    ({"counterfactual": "1"}, ["-counterfactual", "1"], "gradcam_cf", "gb_cf"),
    ({"eigen_smooth": "1", "counterfactual": "0"}, ["-eigen_smooth", "1"], "gcam", "gb"),
    ({"method": NAME, "counterfactual": "1"}, ["-method", NAME, "-counterfactual", "1"], f"{TOKEN}_cf", "gb_cf"),
])
def test_the_modifiers_are_the_clis(client, tmp_path, fields, args, token, gb):
    body = ok(explain(client, task="classification", label="243", **fields))
    assert body["modifiers"] == {k: fields.get(k) == "1" for k in ("counterfactual", "aug_smooth", "eigen_smooth")}
    overlay = "classify_overlay_243.png" if token == "gcam" else f"classify_overlay_{token}_243.png"
    assert (body["files"]["gcam"], body["files"]["gb"], body["files"]["overlay"]) == (
        f"classify_{token}_hm_243.png", f"classify_{gb}_243.png", overlay)
    assert_images_are_the_clis(body["images"], body["files"], cli_files(tmp_path, "classification", "-label", "243",
                                                                        *args), str(fields))


@pytest.mark.parametrize("fields, pattern", [
    ({"method": "nope"}, r"^unknown CAM method 'nope'; the methods are: {methods}$"),
    ({"method": "gradcam,nope"}, r"unknown CAM method 'gradcam,nope'"),
    ({"counterfactual": "yes"}, r"^counterfactual 'yes': expected 0 or 1$"),
    ({"eigen_smooth": "2"}, r"^eigen_smooth '2': expected 0 or 1$"),
])
def test_an_unknown_method_or_a_bad_switch_is_a_400(client, fields, pattern):
    pattern = pattern.replace("{methods}", re.escape(", ".join(method_names())))  # with the test method
    response = explain(client, task="captioning", **fields)
    assert response.status_code == 400 and list(response.json()) == ["error"], response.text
    assert re.search(pattern, response.json()["error"]), response.json()["error"]
    assert NAME in response.json()["error"] or "method" not in fields or "expected" in response.json()["error"]


# eigencam and scorecam: slow (1.5-2 s each); a gradient method stays quick, and every method's map
# through the task interface is checked in process by tests/test_cli_methods.py
@pytest.mark.parametrize("method", ["gradcam++", pytest.param("eigencam", marks=pytest.mark.slow),
                                    pytest.param("scorecam", marks=pytest.mark.slow)])
def test_a_registered_method_gives_the_clis_files(client, tmp_path, method):
    if method not in method_names():
        pytest.skip(f"{method} is not registered")
    from gradcam_core.run.task import method_token

    body = ok(explain(client, task="vqa", question="What animal?", answer="dog", method=method))
    token = method_token(method)
    assert body["method"] == method and body["files"]["gcam"] == f"vqa_{token}_hm_dog.png"
    assert_images_are_the_clis(body["images"], body["files"],
                               cli_files(tmp_path, "vqa", "-answer", "dog", "-method", method), method)
