"""The web demo says in its JSON what guided backprop could not guide (the CLI's stderr warning), and
says nothing where everything was guided."""
from __future__ import annotations

import pytest
from test_guided_functional import write_elu_net

from gradcam_core.web.demo import Demo, load_classification

from .conftest import MODEL, PROTO, SYNSET
from .test_api import Client, ok


@pytest.mark.filterwarnings("ignore:guided backprop has no rule")  # the engine's, on the engine thread
def test_the_json_names_what_guided_backprop_could_not_guide(tmp_path):
    proto, model = write_elu_net(tmp_path)
    task = load_classification(model, proto_file=proto, input_sz=32, layer="conv2")
    with Client(Demo({"classification": task}), tmp_path / "up") as c:
        body = ok(c.explain(task="classification", label="2"))
    assert body["unguided"] == ["torch.nn.functional.elu"]
    assert body["warning"].startswith("guided backprop has no rule for torch.nn.functional.elu in this model")


def test_a_fully_guided_model_has_no_warning(tmp_path):
    task = load_classification(MODEL, proto_file=PROTO, synset_file=SYNSET, input_sz=64)
    with Client(Demo({"classification": task}), tmp_path) as c:
        body = ok(c.explain(task="classification"))
    assert "unguided" not in body and "warning" not in body
