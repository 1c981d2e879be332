"""The web demo on an ONNX classifier, over real HTTP: its layers are listed by ONNX names, and a
request on the default layer, or on any listed layer, is explained."""
from __future__ import annotations

import warnings
from pathlib import Path

import httpx
import onnx
import pytest
import torch
from torch import nn

from .conftest import IMAGE, Server

pytestmark = pytest.mark.slow  # subprocesses, servers or large inputs: not in the quick run


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.classifier = nn.Sequential(nn.Conv2d(8, 5, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


@pytest.fixture(scope="module")
def onnx_server(tmp_path_factory) -> Server:
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TinyNet().eval(), torch.zeros(1, 3, 32, 32), str(path), dynamo=False,
                          input_names=["data"], dynamic_axes={"data": {0: "n", 2: "h", 3: "w"}})
    server = Server("-model_file", str(path), "-input_sz", "64")
    try:
        server.nodes = [n.name for n in onnx.load(str(path)).graph.node]
        yield server
    finally:
        server.stop()


def test_an_onnx_model_lists_onnx_layers_and_explains_on_each(onnx_server):
    assert onnx_server.lines[0] == "classification: tiny.onnx (onnx), layer /classifier/classifier.1/Relu"
    with httpx.Client(base_url=onnx_server.url, timeout=60) as http:
        config = http.get("/api/config").json()["tasks"]["classification"]
        assert config["default_layer"] == "/classifier/classifier.1/Relu"
        assert config["layers"] and set(config["layers"]) <= set(onnx_server.nodes), config["layers"]
        for layer in ["", *config["layers"]]:
            response = http.post("/api/explain", data={"task": "classification", "label": "2", "layer": layer},
                                 files={"image": ("cat_dog.jpg", Path(IMAGE).read_bytes(), "image/jpeg")})
            assert response.status_code == 200, (layer, response.text)
            assert response.json()["layer"] == (layer or config["default_layer"])


def test_the_demo_explains_a_fixed_size_onnx_model_at_its_size(tmp_path):
    from gradcam_core.errors import GradCamError
    from gradcam_core.web.demo import load_classification

    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TinyNet().eval(), torch.zeros(1, 3, 48, 48), str(path), dynamo=False)
    assert load_classification(path, input_sz=None).input_sz == 48  # -input_sz not given
    with pytest.raises(GradCamError, match=rf"^-input_sz 224: {path} takes only 48x48 inputs$"):
        load_classification(path, input_sz=224)
