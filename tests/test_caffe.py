"""The Caffe loader (gradcam_core.caffe): oracle scores, loadcaffe's module numbering, V1/V2 formats,
layer semantics against independent numpy versions of Caffe's formulas, and errors on bad input."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import caffe_writer as write
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from gradcam_core.caffe import load_caffe
from gradcam_core.data import bundled
from gradcam_core.errors import GradCamError
from gradcam_core.formats.caffe import planned_blobs, schema, wire
from gradcam_core.nets.graph import GraphNet, InputSpec

DATA = Path(__file__).parent / "data"
MODELS = DATA / "models"
CASES = DATA / "cases"
BUNDLED = bundled("squeezenet1_1")


def files(name: str) -> tuple[Path, Path]:
    return MODELS / f"{name}.prototxt", MODELS / f"{name}.caffemodel"


def random_input(net, seed: int = 0, batch: int = 1) -> torch.Tensor:
    spec = net.input_spec
    gen = torch.Generator().manual_seed(seed)
    return 50 * torch.randn(batch, spec.channels, spec.height, spec.width, generator=gen)


def write_net(folder: Path, prototxt: str, layers: Sequence[dict] = (), **caffemodel_options) -> tuple[Path, Path]:
    """A prototxt from text and a caffemodel holding ``layers`` (name, type, blobs)."""
    proto = folder / "net.prototxt"
    proto.write_text(prototxt)
    return proto, write.write_caffemodel(folder / "net.caffemodel", layers, **caffemodel_options)


def run(net, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def run_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, **kw) -> np.ndarray:
    return F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **kw).numpy()


# --------------------------------------------------------------------------------------------------
# The original's outputs


def _oracle_cases() -> list:
    cases = []
    for case in sorted(CASES.glob("cls_*")):
        command = json.loads((case / "case.json").read_text())["command"]
        opts = dict(re.findall(r"-(\w+) (\S+)", command))
        cases.append(pytest.param(case.name, Path(opts["proto_file"]).stem, opts["input_image_path"],
                                  int(opts.get("input_sz", 224)), id=case.name))
    return cases


def _preprocessed(image: str, size: int) -> np.ndarray | None:
    """The dumped preprocessed input of a full-dump case with the same image and size, if any."""
    for case in CASES.glob("cls_*"):
        command = json.loads((case / "case.json").read_text())["command"]
        dump = case / "tensors" / "preprocessed_input.npy"
        if f"-input_image_path {image} " in command and dump.exists():
            x = np.load(dump)
            if x.shape[-1] == size:
                return x.astype(np.float32)[None]
    return None


@pytest.mark.parametrize("case, model, image, size", _oracle_cases())
def test_scores_match_the_original(case, model, image, size):
    """classification.lua's scores: the loaded net minus its last module (cnn:remove()). For V2 files
    loadcaffe had dropped the Softmax, so its remove() took fc8 and the scores were the drop7 output;
    our V2 net keeps prob, and its drop7 output must equal those scores."""
    x = _preprocessed(image, size)
    if x is None:
        pytest.skip(f"no preprocessed {image} at {size} among the dumps (covered by the CLI tests)")
    net = load_caffe(*files(model))
    assert net.names[-1] == "prob" and isinstance(net.remove_last(), nn.Softmax)
    if model.endswith("_v2"):
        while net.names[-1] != "drop7":
            net.remove_last()
    expected = np.load(CASES / case / "tensors" / "scores.npy")
    got = run(net, x)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


# --------------------------------------------------------------------------------------------------
# Module numbering and lookup


@pytest.mark.parametrize(
    "model, expected",
    [
        ("mini_vgg16_v1", {"relu5_3": 30, "pool5": 31, "torch_view": 32, "fc6": 33, "fc8": 39, "prob": 40}),
        ("mini_vgg16_v2", {"relu5_3": 30, "torch_view": 32, "fc6": 33, "prob": 40}),
        ("mini_vgg19_v1", {"relu5_4": 36, "pool5": 37, "torch_view": 38, "relu7": 43, "prob": 46}),
        ("mini_alexnet_v1", {"norm1": 3, "relu5": 14, "torch_view": 16, "fc6": 17, "prob": 24}),
        ("mini_alexnet_grouped", {"conv2": 5, "relu5": 14, "prob": 24}),
    ],
)
def test_module_numbers_are_loadcaffes(model, expected):
    net = load_caffe(*files(model))
    assert {name: net.index_of(name) for name in expected} == expected
    assert len(net) == max(expected.values()) == len(net.names)
    assert [net.names[i - 1] for i in expected.values()] == list(expected)


def test_numeric_layer_names_are_module_indices():
    net = load_caffe(*files("mini_vgg16_v1"))
    assert net.index_of("30") == net.index_of(30) == net.index_of(" 30 ") == 30
    assert net.module_at("30") is net.module_at("relu5_3") is list(net)[29]


@pytest.mark.parametrize("layer", ["relu5_9", "", 0, 41, "41", "-1"])
def test_unknown_layers_are_refused_with_the_valid_names(layer):
    net = load_caffe(*files("mini_vgg16_v1"))
    with pytest.raises(GradCamError) as err:
        net.index_of(layer)
    message = str(err.value)
    assert repr(layer) in message and "1..40" in message
    assert "30=relu5_3" in message and "32=torch_view" in message and "\n" not in message


def test_resolve_layer_reproduces_the_in_place_relu():
    net = load_caffe(*files("mini_vgg16_v1"))
    at = net.module_at
    assert net.resolve_layer("conv5_3") == (at("conv5_3"), at("relu5_3"))
    assert net.resolve_layer("relu5_3") == (at("relu5_3"), at("relu5_3"))
    assert net.resolve_layer(29) == (at("conv5_3"), at("relu5_3"))
    assert net.resolve_layer("pool5") == (at("pool5"), at("pool5"))
    assert net.resolve_layer("fc7") == (at("fc7"), at("relu7"))  # drop7 is no ReLU


def test_in_place_relus_rectify_the_conv_output_as_loadcaffe_did():
    """VGG's ReLUs are in place in the prototxt (bottom == top): as loadcaffe's nn.ReLU(true), they
    rectify the convolution's output itself, so a hook on conv5_3 sees it rectified after the forward."""
    net = load_caffe(*files("mini_vgg16_v1"))
    relus = [m for name, m in zip(net.names, net) if name.startswith("relu")]
    assert len(relus) == 15 and all(type(m) is nn.ReLU and m.inplace for m in relus)
    outputs = {}
    for name in ("conv5_3", "relu5_3"):
        net.module_at(name).register_forward_hook(lambda m, i, o, name=name: outputs.update({name: o}))
    with torch.no_grad():
        net(random_input(net))
    assert outputs["relu5_3"].shape == (1, 16, 14, 14) and outputs["relu5_3"].min() == 0
    assert outputs["conv5_3"] is outputs["relu5_3"]


def test_relus_stay_out_of_place_where_in_place_would_change_results(tmp_path):
    """A ReLU declared out of place (bottom != top), one on the input image, and one on a blob that a
    Split also shows under another name do not overwrite their input."""
    text = """input: "data" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }
    layer { name: "relu0" type: "ReLU" bottom: "data" top: "data" }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
            convolution_param { num_output: 2 kernel_size: 1 } }
    layer { name: "relu1" type: "ReLU" bottom: "conv" top: "r1" }
    layer { name: "split" type: "Split" bottom: "r1" top: "s1" top: "s2" }
    layer { name: "relu2" type: "ReLU" bottom: "s1" top: "s1" }
    layer { name: "flat" type: "Flatten" bottom: "s1" top: "flat" }
    layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "ip" inner_product_param { num_output: 3 } }
    layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2" inner_product_param { num_output: 3 } }
    layer { name: "relu3" type: "ReLU" bottom: "ip" top: "ip" }
    layer { name: "ip3" type: "InnerProduct" bottom: "ip" top: "ip3" inner_product_param { num_output: 2 } }
    """
    rng = np.random.default_rng(0)
    w, b = -np.ones((2, 2, 1, 1), np.float32), np.zeros(2, np.float32)
    fc = [rng.standard_normal(shape).astype(np.float32) for shape in ((3, 18), (3,), (3, 3), (3,), (2, 3), (2,))]
    net = load_caffe(*write_net(tmp_path, text, [
        {"name": "conv", "blobs": [w, b]}, {"name": "ip", "blobs": fc[0:2]}, {"name": "ip2", "blobs": fc[2:4]},
        {"name": "ip3", "blobs": fc[4:6]}]))
    relus = [m for m in net if type(m) is nn.ReLU]
    # relu3 follows an inner product, in place, but ip2 read its blob first (and keeps it for its backward)
    assert [m.inplace for m in relus] == [False, False, False, False]
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    before = x.detach().clone()
    out = net(x)
    assert torch.equal(x.detach(), before)
    hidden = F.conv2d(before.clamp(min=0), torch.from_numpy(w)).clamp(min=0).flatten(1) @ torch.from_numpy(fc[0]).T
    torch.testing.assert_close(out, (hidden + torch.from_numpy(fc[1])).clamp(min=0) @ torch.from_numpy(fc[4]).T
                               + torch.from_numpy(fc[5]))
    out.sum().backward()  # nothing a backward needs was overwritten


def test_remove_last_drops_the_softmax_and_leaves_logits():
    net = load_caffe(*files("mini_vgg16_v1"))
    x = random_input(net, batch=2)
    with torch.no_grad():
        probs = net(x)
        assert isinstance(net.remove_last(), nn.Softmax)
        logits = net(x)
    assert len(net) == 39 and net.names[-1] == "fc8" and logits.shape == (2, 10)
    torch.testing.assert_close(torch.softmax(logits, 1), probs)


def test_chain_from_modules_numbers_and_resolves_like_loadcaffe():
    """GraphNet.from_modules (used for Torch7 CNNs): a chain with the same lookup rules."""
    convs = [nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)]
    entries = [("conv1", "Conv2d", convs[0]), ("relu1", "ReLU", nn.ReLU()), ("conv2", "Conv2d", convs[1]),
               ("pool", "SpatialMaxPooling", nn.MaxPool2d(2))]
    net = GraphNet.from_modules(entries, InputSpec("data", 3, None, None))
    assert net.names == ["conv1", "relu1", "conv2", "pool"] and net.index_of("3") == 3
    assert net.resolve_layer("conv1") == (convs[0], entries[1][2])
    assert net.resolve_layer("conv2") == (convs[1], convs[1])
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        assert torch.equal(net(x), nn.Sequential(*(m for _, _, m in entries))(x))


def test_dtype_and_device_conversion():
    proto, model = files("mini_alexnet_v1")
    single = load_caffe(proto, model)
    double = load_caffe(proto, model, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in double.parameters())
    x = random_input(single)
    with torch.no_grad():
        torch.testing.assert_close(double(x.double()).float(), single(x), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(single.to(torch.float64)(x.double()), double(x.double()))
    assert not single.training and not double.training


# --------------------------------------------------------------------------------------------------
# File generations


@pytest.mark.parametrize("model", ["mini_vgg16", "mini_alexnet"])
@pytest.mark.parametrize("proto_gen, model_gen", [("v1", "v2"), ("v2", "v2"), ("v2", "v1")])
def test_v1_and_v2_files_give_identical_nets(model, proto_gen, model_gen):
    """Same weights in both formats, every combination of prototxt and caffemodel generation; the
    V2 net keeps its Softmax ("prob")."""
    reference = load_caffe(*files(f"{model}_v1"))
    net = load_caffe(MODELS / f"{model}_{proto_gen}.prototxt", MODELS / f"{model}_{model_gen}.caffemodel")
    assert net.names == reference.names and net.names[-1] == "prob"
    x = random_input(net, batch=2)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))


def test_grouped_convolution_equals_block_diagonal_dense(tmp_path):
    grouped = load_caffe(*files("mini_alexnet_grouped"))
    assert [m.groups for m in grouped if isinstance(m, nn.Conv2d)] == [1, 2, 1, 2, 2]
    layers = []
    for name, module in zip(grouped.names, grouped):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight.detach().numpy()
            if isinstance(module, nn.Conv2d):
                g, out = module.groups, weight.shape[0]
                dense = np.zeros((out, weight.shape[1] * g, *weight.shape[2:]), np.float32)
                for j in range(g):
                    rows = slice(j * out // g, (j + 1) * out // g)
                    dense[rows, j * weight.shape[1] : (j + 1) * weight.shape[1]] = weight[rows]
                weight = dense
            layers.append({"name": name, "blobs": [weight, module.bias.detach().numpy()]})
    text = files("mini_alexnet_grouped")[0].read_text()
    dense_net = load_caffe(*write_net(tmp_path, text.replace("group: 2", ""), layers))
    assert all(m.groups == 1 for m in dense_net if isinstance(m, nn.Conv2d))
    x = random_input(grouped, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(dense_net(x), grouped(x), rtol=1e-5, atol=1e-7)


def test_v2_input_layer_declares_the_input_without_a_module(tmp_path):
    text = """
    name: "tiny"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 7 } } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
            convolution_param { num_output: 3 kernel_size: 3 } }
    layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
    """
    w, b = np.ones((3, 2, 3, 3), np.float32), np.arange(3, dtype=np.float32)
    net = load_caffe(*write_net(tmp_path, text, [{"name": "conv", "blobs": [w, b]}]))
    assert (net.input_spec.name, net.input_spec.channels, net.input_spec.height, net.input_spec.width) == (
        "data", 2, 5, 7)
    assert net.names == ["conv", "relu"]
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(run(net, x), np.maximum(run_conv(x, w, b), 0), rtol=1e-5, atol=1e-5)


def test_prototxt_syntax_variants(tmp_path):
    """Comments, both quote styles, escapes, adjacent strings, ':' before '{', '<>' messages, lists,
    separators, enum names and numbers, exponents - all as protobuf's text format allows."""
    text = r"""# a comment line
    name: 'syntax' ;  # trailing comment
    input: "da" "ta"
    input_shape: { dim: [1, 0x3, 6, 6] }
    layer: {
      name: 'conv\x31'  type: "Convolution", bottom: 'data' top: "c"
      convolution_param < num_output: 2 kernel_size: 3 pad: 1 bias_term: true >
    }
    layer { name: "pool" type: "Pooling" bottom: "c" top: "p"
            pooling_param { pool: 1 kernel_size: 2 stride: 2 } }
    layer { name: "leaky" type: "ReLU" bottom: "p" top: "p" relu_param { negative_slope: 2.5e-1 } }
    """
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((2, 3, 3, 3)).astype(np.float32), np.zeros(2, np.float32)
    net = load_caffe(*write_net(tmp_path, text, [{"name": "conv1", "blobs": [w, b]}]))
    assert net.names == ["conv1", "pool", "leaky"] and net.input_spec.name == "data"
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    pooled = F.avg_pool2d(torch.from_numpy(run_conv(x, w, b, padding=1)), 2).numpy()
    np.testing.assert_allclose(run(net, x), np.where(pooled > 0, pooled, 0.25 * pooled), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Layer semantics


@pytest.mark.parametrize("size, conv1, pool1", [(227, 55, 27), (224, 54, 27)])
def test_alexnet_pools_with_caffes_ceil_rounding(size, conv1, pool1):
    """At 224 conv1 gives 54 rows; ceil((54 - 3) / 2) + 1 = 27 (floor would give 26), so the net
    still reaches the 6 x 6 pool5 that fc6 expects."""
    net = load_caffe(*files("mini_alexnet_v1"))
    shapes = {}
    for name in ("conv1", "pool1", "pool2", "pool5"):
        net.module_at(name).register_forward_hook(lambda m, i, o, name=name: shapes.update({name: o.shape[-2:]}))
    with torch.no_grad():
        out = net(torch.zeros(1, 3, size, size))
    assert shapes == {"conv1": (conv1, conv1), "pool1": (pool1, pool1), "pool2": (13, 13), "pool5": (6, 6)}
    assert out.shape == (1, 10)



@pytest.mark.parametrize("proto, model", [
    (BUNDLED / "deploy.prototxt", BUNDLED / "squeezenet1_1.caffemodel"),  # written by Caffe itself
    files("mini_alexnet_v1"), files("mini_alexnet_grouped"), files("mini_vgg16_v2"),
])
def test_planned_blobs_are_the_blob_shapes_of_the_caffemodel(proto, model):
    """planned_blobs (the prototxt alone) names every layer that has blobs in the caffemodel, with
    the caffemodel's shapes (a V1 blob's legacy leading 1s aside): the shapes bench/run.py writes."""
    with wire.WireFile(model) as source:
        trained = schema.interpret_net(source.decode(schema.NET_PARAMETER), str(model))
    stored = {spec.name: [b.shape for b in spec.blobs] for spec in trained.layers if spec.blobs}
    planned = {spec.name: shapes for spec, shapes in planned_blobs(proto)}
    assert planned.keys() == stored.keys()
    for name, shapes in planned.items():
        assert len(shapes) == len(stored[name])
        for want, got in zip(shapes, stored[name]):
            lead = len(got) - len(want)
            assert lead >= 0 and got[lead:] == want and all(d == 1 for d in got[:lead]), (name, want, got)

def caffe_pool(x, kernel, stride, pad, method, ceil):
    """pooling_layer.cpp Forward_cpu, literally; None if some window covers no input (Caffe then
    outputs -FLT_MAX or garbage)."""
    _, height, width = x.shape
    sizes = []
    for n, k, s, p in zip((height, width), kernel, stride, pad):
        out = (math.ceil if ceil else math.floor)((n + 2 * p - k) / s) + 1
        if p and (out - 1) * s >= n + p:
            out -= 1
        sizes.append(out)
    result = np.zeros((x.shape[0], *sizes))
    for i in range(sizes[0]):
        for j in range(sizes[1]):
            hs, ws = i * stride[0] - pad[0], j * stride[1] - pad[1]
            if method == "MAX":
                he, we, hs, ws = min(hs + kernel[0], height), min(ws + kernel[1], width), max(hs, 0), max(ws, 0)
                if he <= hs or we <= ws:
                    return None
                result[:, i, j] = x[:, hs:he, ws:we].max(axis=(1, 2))
            else:
                he, we = min(hs + kernel[0], height + pad[0]), min(ws + kernel[1], width + pad[1])
                area = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, height), min(we, width)
                if he <= hs or we <= ws:
                    return None
                result[:, i, j] = x[:, hs:he, ws:we].sum(axis=(1, 2)) / area
    return result


POOL_NET = """
input: "data" input_dim: 1 input_dim: 2 input_dim: {h} input_dim: {w}
layers {{ name: "pool" type: POOLING bottom: "data" top: "pool"
  pooling_param {{ pool: {method} kernel_h: {kh} kernel_w: {kw} stride_h: {sh} stride_w: {sw}
                  pad_h: {ph} pad_w: {pw} round_mode: {round} }} }}
"""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 5), kw=st.integers(1, 5),
    sh=st.integers(1, 4), sw=st.integers(1, 4), pad=st.data(),
    method=st.sampled_from(["MAX", "AVE"]), ceil=st.booleans(),
)
def test_pooling_matches_caffe(tmp_path, h, w, kh, kw, sh, sw, pad, method, ceil):
    """Output sizes (ceil/floor, the last-window rule) and values - MAX ignoring padding, AVE with
    Caffe's divisor that counts padded border cells but not the ceil overhang - for pads up to
    kernel - 1 (PyTorch's own pooling refuses pads above kernel / 2)."""
    ph, pw = pad.draw(st.integers(0, kh - 1)), pad.draw(st.integers(0, kw - 1))
    assume(h + 2 * ph >= kh and w + 2 * pw >= kw)
    x = np.random.default_rng(h * 100 + w).standard_normal((2, h, w))
    expected = caffe_pool(x, (kh, kw), (sh, sw), (ph, pw), method, ceil)
    assume(expected is not None)
    text = POOL_NET.format(h=h, w=w, method=method, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw,
                           round="CEIL" if ceil else "FLOOR")
    net = load_caffe(*write_net(tmp_path, text), dtype=torch.float64)
    np.testing.assert_allclose(run(net, x[None])[0], expected, rtol=1e-12, atol=1e-12)


def test_global_pooling(tmp_path):
    text = """input: "data" input_shape { dim: 1 dim: 3 dim: 5 dim: 4 }
    layer { name: "gmax" type: "Pooling" bottom: "data" top: "m" pooling_param { pool: MAX global_pooling: true } }
    layer { name: "gave" type: "Pooling" bottom: "m" top: "a" pooling_param { pool: AVE global_pooling: true } }
    """
    net = load_caffe(*write_net(tmp_path, text))
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 4)).astype(np.float32)
    net.remove_last()
    np.testing.assert_array_equal(run(net, x), x.max(axis=(2, 3), keepdims=True))
    net = load_caffe(*write_net(tmp_path, text.replace("pool: MAX", "pool: AVE")))
    np.testing.assert_allclose(run(net, x), x.mean(axis=(2, 3), keepdims=True), rtol=1e-6)


def caffe_lrn(x, size, alpha, beta, k, region):
    """lrn_layer.cpp: ACROSS_CHANNELS scale = k + alpha/size * sum of squares over `size` channels;
    WITHIN_CHANNEL scale = 1 + alpha * mean of squares over a zero-padded size x size window."""
    pre = (size - 1) // 2
    square = x.astype(np.float64) ** 2
    if region == "ACROSS_CHANNELS":
        channels = x.shape[1]
        padded = np.pad(square, ((0, 0), (pre, size - 1 - pre), (0, 0), (0, 0)))
        scale = k + alpha / size * sum(padded[:, c : c + channels] for c in range(size))
    else:
        height, width = x.shape[2:]
        padded = np.pad(square, ((0, 0), (0, 0), (pre, pre), (pre, pre)))
        window = sum(padded[:, :, i : i + height, j : j + width] for i in range(size) for j in range(size))
        scale = 1 + alpha * window / size**2
    return x * scale**-beta


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
@pytest.mark.parametrize("size, alpha, beta, k", [(5, 1e-4, 0.75, 1.0), (3, 0.5, 0.6, 2.0), (1, 1.0, 1.0, 0.5)])
def test_lrn_matches_caffe(tmp_path, region, size, alpha, beta, k):
    text = f"""input: "data" input_dim: 1 input_dim: 6 input_dim: 5 input_dim: 5
    layers {{ name: "norm" type: LRN bottom: "data" top: "norm"
      lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: {k} norm_region: {region} }} }}"""
    net = load_caffe(*write_net(tmp_path, text))
    x = 3 * np.random.default_rng(3).standard_normal((2, 6, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(run(net, x), caffe_lrn(x, size, alpha, beta, k, region), rtol=2e-5, atol=1e-6)


def test_convolution_geometry_dilation_and_no_bias(tmp_path):
    text = """input: "data" input_shape { dim: 1 dim: 4 dim: 11 dim: 13 }
    layer { name: "a" type: "Convolution" bottom: "data" top: "a"
      convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 2 pad_w: 0
                          dilation: 2 dilation: 3 group: 2 bias_term: false } }
    layer { name: "b" type: "Convolution" bottom: "a" top: "b"
      convolution_param { num_output: 2 kernel_size: 3 kernel_size: 1 stride: 2 pad: 1 pad: 0 } }
    """
    rng = np.random.default_rng(4)
    wa = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    wb, bb = rng.standard_normal((2, 6, 3, 1)).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    net = load_caffe(*write_net(tmp_path, text, [{"name": "a", "blobs": [wa]}, {"name": "b", "blobs": [wb, bb]}]))
    assert net.module_at("a").bias is None
    x = rng.standard_normal((2, 4, 11, 13)).astype(np.float32)
    a = F.conv2d(torch.from_numpy(x), torch.from_numpy(wa), stride=(2, 1), padding=(2, 0), dilation=(2, 3), groups=2)
    expected = run_conv(a.numpy(), wb, bb, stride=2, padding=(1, 0))
    np.testing.assert_allclose(run(net, x), expected, rtol=1e-5, atol=1e-5)


def test_inner_product_transpose_and_other_layers(tmp_path):
    """InnerProduct with transpose (weight stored in x out) and without bias, Split, Sigmoid, TanH,
    Flatten, Dropout (identity), Softmax over channels."""
    text = """input: "data" input_shape { dim: 1 dim: 2 dim: 3 dim: 2 }
    layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }
    layer { name: "split" type: "Split" bottom: "flat" top: "s1" top: "s2" }
    layer { name: "ip" type: "InnerProduct" bottom: "s2" top: "ip"
            inner_product_param { num_output: 5 transpose: true bias_term: false } }
    layer { name: "sig" type: "Sigmoid" bottom: "ip" top: "ip" }
    layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" dropout_param { dropout_ratio: 0.9 } }
    layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2" inner_product_param { num_output: 3 } }
    layer { name: "tanh" type: "TanH" bottom: "ip2" top: "t" }
    layer { name: "prob" type: "Softmax" bottom: "t" top: "prob" }
    """
    rng = np.random.default_rng(5)
    w_in_out = rng.standard_normal((12, 5)).astype(np.float32)
    w2, b2 = rng.standard_normal((3, 5)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    net = load_caffe(*write_net(tmp_path, text, [{"name": "ip", "blobs": [w_in_out]}, {"name": "ip2", "blobs": [w2, b2]}]))
    assert net.names == ["flat", "ip", "sig", "drop", "ip2", "tanh", "prob"]  # Flatten, so no torch_view
    x = rng.standard_normal((4, 2, 3, 2)).astype(np.float32)
    hidden = 1 / (1 + np.exp(-(x.reshape(4, 12) @ w_in_out)))
    t = np.tanh(hidden @ w2.T + b2)
    expected = np.exp(t) / np.exp(t).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(run(net, x), expected, rtol=1e-5, atol=1e-6)


TINY = """name: "tiny" input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "conv" top: "fc" inner_product_param { num_output: 3 } }
"""


def tiny_layers(dtype=np.float32):
    rng = np.random.default_rng(6)
    return [
        {"name": "conv", "type": "Convolution", "blobs": [rng.standard_normal((2, 3, 3, 3)).astype(dtype),
                                                         rng.standard_normal(2).astype(dtype)]},
        {"name": "fc", "type": "InnerProduct", "blobs": [rng.standard_normal((3, 8)).astype(dtype),
                                                        rng.standard_normal(3).astype(dtype)]},
    ]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("double, packed", [(False, False), (True, True), (True, False)])
def test_double_data_and_unpacked_floats(tmp_path, version, double, packed):
    """Blob values stored as float64 double_data, or as unpacked float entries (one tag each), load
    exactly - in both generations (V1 InnerProduct blobs carry the legacy 1 x 1 x out x in dims)."""
    layers = tiny_layers(np.float64)
    net = load_caffe(*write_net(tmp_path, TINY, layers, version=version, double=double, packed=packed),
                     dtype=torch.float64)
    assert net.names == ["conv", "torch_view", "fc"]
    stored = np.float64 if double else np.float32
    for layer in layers:
        module = net.module_at(layer["name"])
        for param, blob in zip((module.weight, module.bias), layer["blobs"]):
            np.testing.assert_array_equal(param.detach().numpy(), blob.astype(stored))


@pytest.mark.parametrize("packed", [True, False])
def test_written_caffemodels_are_valid_protobuf(tmp_path, packed):
    """Cross-check of the writer with the protobuf runtime (schema-free: every field is 'unknown')."""
    empty_pb2 = pytest.importorskip("google.protobuf.empty_pb2")
    from google.protobuf.unknown_fields import UnknownFieldSet

    def fields(data: bytes):
        message = empty_pb2.Empty()
        message.ParseFromString(data)
        return list(UnknownFieldSet(message))

    layers = tiny_layers()
    model = write.write_caffemodel(tmp_path / "net.caffemodel", layers, version=2, packed=packed)
    layer_fields = [f for f in fields(model.read_bytes()) if f.field_number == 100]
    assert len(layer_fields) == 2
    blob = [f for f in fields(layer_fields[1].data) if f.field_number == 7][0]  # fc's weight
    data = [f for f in fields(blob.data) if f.field_number == 5]
    if packed:
        assert [f.wire_type for f in data] == [2]
        values = np.frombuffer(data[0].data, "<f4")
    else:
        assert {f.wire_type for f in data} == {5}
        values = np.array([f.data for f in data], np.uint32).view("<f4")
    np.testing.assert_array_equal(values, layers[1]["blobs"][0].ravel())


# --------------------------------------------------------------------------------------------------
# Bad input


def in_blob(blob: bytes) -> bytes:
    """A caffemodel whose one V2 layer holds one BlobProto with the given bytes (then the net's name)."""
    layer = b"\x0a\x02fc" + b"\x3a" + write.varint(len(blob)) + blob
    return b"\xa2\x06" + write.varint(len(layer)) + layer + b"\x0a\x03net"


def raises(match: str, *args, **kwargs) -> str:
    with pytest.raises(GradCamError, match=match) as err:
        load_caffe(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_missing_files_and_directories_are_named(tmp_path):
    proto, model = files("mini_vgg16_v1")
    raises(re.escape(str(tmp_path / "nope.prototxt")), tmp_path / "nope.prototxt", model)
    raises(re.escape(str(tmp_path / "nope.caffemodel")), proto, tmp_path / "nope.caffemodel")
    raises(f"{re.escape(str(tmp_path))}.*directory", tmp_path, model)
    raises(f"{re.escape(str(tmp_path))}.*directory", proto, tmp_path)


@pytest.mark.parametrize("cut", [1, 2, 30, 31, 100, 1000, 444_500, 868_000, -1])
def test_truncated_caffemodel(tmp_path, cut):
    proto, model = files("mini_vgg16_v1")
    data = model.read_bytes()
    truncated = tmp_path / "cut.caffemodel"
    truncated.write_bytes(data[:cut])
    message = raises(re.escape(str(truncated)), proto, truncated)
    assert re.search(r"at byte \d+: .*runs past the end of the file", message), message


def test_random_garbage_is_refused(tmp_path):
    proto, _ = files("mini_vgg16_v1")
    for seed in range(5):
        garbage = tmp_path / f"garbage{seed}.caffemodel"
        garbage.write_bytes(np.random.default_rng(seed).bytes(5000))
        raises(re.escape(str(garbage)), proto, garbage)


@pytest.mark.parametrize(
    "payload, what",
    [
        (b"\x0f", "invalid wire type 7"),
        (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x53" * 200, "nested more than 100 deep"),
        (b"\x00", "field number 0"),
        (in_blob(b"\x2d\x00\x00"), "float value runs past the end of its enclosing message"),
        (in_blob(b"\x2d\x00\x00\x80\x3f" * 3 + b"\x2d\x00"), "float value runs past the end of its enclosing"),
        (in_blob(b"\x2a\x03\x00\x00\x00"), "packed float data of 3 bytes is not a whole number"),
        (in_blob(b"\x3a\x03\x0a\x01\xff"), "packed varint runs past the end of its enclosing message"),
        (in_blob(b"\x3a\x02\x0a\x09"), "a 9-byte field runs past the end of its enclosing message"),
    ],
)
def test_corrupt_wire_data_errors_name_the_offset(tmp_path, payload, what):
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(payload)
    raises(f"at byte \\d+: .*{what}", files("mini_vgg16_v1")[0], bad)


def test_prototxt_syntax_error_names_file_and_line(tmp_path):
    proto = tmp_path / "broken.prototxt"
    text = files("mini_vgg16_v1")[0].read_text().splitlines()
    text[6] = "layers {{"
    proto.write_text("\n".join(text))
    raises(f"^{re.escape(str(proto))}:7: expected a field name, found '{{'$", proto, files("mini_vgg16_v1")[1])
    proto.write_text('name: "x"\ninput_dim: 3.5\n')
    raises(r":2: field 'input_dim' expects an integer, found 3.5", proto, files("mini_vgg16_v1")[1])
    proto.write_text("layer {\n  name: 'unclosed\n}")
    raises(r":2: unexpected character", proto, files("mini_vgg16_v1")[1])


def test_unknown_layer_type_names_layer_and_type(tmp_path):
    text = TINY.replace("type: INNER_PRODUCT", "type: ARGMAX")  # (Concat is supported since DAG nets load)
    raises(r"layer 'fc' has type 'ArgMax', which is not supported", *write_net(tmp_path, text, tiny_layers()))
    v2 = 'input: "data" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2\n' \
         'layer { name: "odd" type: "Frobnicate" bottom: "data" top: "x" }'
    raises(r"layer 'odd' has type 'Frobnicate'", *write_net(tmp_path, v2))


def test_blob_shape_mismatch_names_layer_and_shapes(tmp_path):
    text = TINY.replace("num_output: 3", "num_output: 4")
    raises(r"layer 'fc' \(InnerProduct\) blob 0 \(weight\): expected shape \(4, 8\), got \(1, 1, 3, 8\)",
           *write_net(tmp_path, text, tiny_layers(), version=1))
    text = TINY.replace("input_dim: 3", "input_dim: 5")
    raises(r"layer 'conv' \(Convolution\) blob 0 \(weight\): expected shape \(2, 5, 3, 3\), got \(2, 3, 3, 3\)",
           *write_net(tmp_path, text, tiny_layers(), version=2))


def test_missing_weights_are_refused(tmp_path):
    raises(r"layer 'fc' \(InnerProduct\) has no weights in .*net.caffemodel",
           *write_net(tmp_path, TINY, tiny_layers()[:1]))
    text = TINY.replace("num_output: 3 }", "num_output: 3 bias_term: false }")
    raises(r"layer 'fc' \(InnerProduct\): expected 1 blobs \(weight only\), .* has 2",
           *write_net(tmp_path, text, tiny_layers()))


def test_huge_blob_claims_are_refused_before_allocating(tmp_path):
    proto = files("mini_vgg16_v1")[0]
    claims = {"name": "fc", "blobs": [{"data": np.zeros(4, np.float32), "shape": {"dim": [10**6, 10**6]}}]}
    model = write.write_binary(tmp_path / "huge.caffemodel", {"layer": [claims]})
    raises(r"layer 'fc' blob 0 declares shape \(1000000, 1000000\) \(1000000000000 values\) but holds 4",
           proto, model)
    long = tmp_path / "long.caffemodel"  # a data field whose length claims 4 * 10^12 bytes
    long.write_bytes(in_blob(b"\x2a" + write.varint(4 * 10**12) + b"\0" * 16))
    raises(r"a 4000000000000-byte field runs past the end of its enclosing message", proto, long)


# --------------------------------------------------------------------------------------------------
# Size


def test_loads_a_200mb_caffemodel(tmp_path):
    """A VGG-16 with 1280-wide fc layers (~200 MB, V1): loads with its weights intact. (Speed is
    measured by the benchmark, not asserted here.)"""
    layers = write.vgg16_layers(seed=1, fc=1280)
    proto = write.write_prototxt(tmp_path / "vgg.prototxt", layers, version=1, input_shape=(1, 3, 224, 224))
    model = write.write_caffemodel(tmp_path / "vgg.caffemodel", layers, version=1)
    assert model.stat().st_size > 195e6
    net = load_caffe(proto, model)
    by_name = {layer["name"]: layer for layer in layers}
    for name in ("conv1_1", "conv5_3", "fc6", "fc8"):
        weight, bias = by_name[name]["blobs"]
        assert np.array_equal(net.module_at(name).weight.detach().numpy(), weight)
        assert np.array_equal(net.module_at(name).bias.detach().numpy(), bias)
    assert net.index_of("fc6") == 33 and net.input_spec.height == 224
