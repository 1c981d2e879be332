"""Caffe DAG networks: every layer type against an independent numpy forward written from Caffe's formulas
(tests/caffe_reference.py), and each published deploy file (tests/data/prototxts/, random weights written
here) loading, matching that forward, and explaining a named inner layer."""
from __future__ import annotations

from pathlib import Path

import caffe_writer as write
import numpy as np
import pytest
import torch
from caffe_reference import materialize
from conftest import DATA

from gradcam_core import GradCamError, explain
from gradcam_core.caffe import load_caffe
from gradcam_core.formats.caffe import prototxt, schema

PROTOTXTS = DATA / "prototxts"


def parse(path: Path) -> schema.NetSpec:
    return schema.interpret_net(prototxt.to_msg(prototxt.parse_file(path), schema.NET_PARAMETER, str(path)),
                                str(path), with_blobs=False)


def write_weights(path: Path, net: schema.NetSpec, blobs: dict[str, list[np.ndarray]], version: int = 2) -> Path:
    layers = [{"name": s.name, "type": s.type, "blobs": [b.astype(np.float32) for b in blobs[s.name]]}
              for s in net.layers if blobs.get(s.name)]
    return write.write_caffemodel(path, layers, version=version)


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def check_against_reference(tmp_path: Path, layers: list[dict], input_shape=(2, 3, 9, 9), tol: float = 2e-5,
                            seed: int = 0, version: int = 2) -> tuple[dict, object]:
    """Write ``layers`` as a prototxt, draw weights with the reference, load, and compare every top."""
    proto = write.write_prototxt(tmp_path / "net.prototxt", layers, input_shape=(1, *input_shape[1:]), version=version)
    spec = parse(proto)
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, input_shape)
    blobs, ref = materialize(spec, x, rng)
    model = write_weights(tmp_path / "net.caffemodel", spec, blobs, version=version)
    net = load_caffe(proto, model, dtype=torch.float64)
    out = net(torch.from_numpy(x)).detach().numpy()
    last = spec.layers[-1].tops[0]
    assert out.shape == ref[last].shape
    assert rel_err(out, ref[last]) < tol, (last, rel_err(out, ref[last]))
    return ref, net


def conv(name, bottom, top, n, k=3, **kw):
    return {"name": name, "type": "Convolution", "bottom": [bottom], "top": [top],
            "convolution_param": {"num_output": n, "kernel_size": k, **kw}}


# ------------------------------------------------------------------------------------ layer types


@pytest.mark.parametrize("pool", [
    dict(pool="MAX", kernel_size=3, stride=2),                    # 9 -> ceil(6/2)+1 = 4
    dict(pool="MAX", kernel_size=2, stride=2, pad=1),             # the last window would start in the padding
    dict(pool="AVE", kernel_size=3, stride=2, pad=1),             # padded cells count in the divisor
    dict(pool="AVE", kernel_size=4, stride=3),                    # the ceil overhang does not count
    dict(pool="AVE", kernel_size=3, stride=2, round_mode="FLOOR"),
    dict(pool="MAX", kernel_size=3, stride=2, ceil_mode=False),   # a fork's field: floor rounding
    dict(pool="AVE", global_pooling=True),
])
def test_pooling_matches_caffe_rules(tmp_path, pool):
    layers = [conv("c", "data", "c", 4, pad=1), {"name": "p", "type": "Pooling", "bottom": ["c"], "top": ["p"],
                                                "pooling_param": pool}]
    check_against_reference(tmp_path, layers)


def test_pooling_sizes_are_caffes():
    """The ceil rule and its last-window exception, written out: 5 + 2 - 2 = 5, ceil(5 / 2) + 1 = 4, but the
    4th window would start at 6 >= 5 + 1 (in the padding), so 3."""
    from caffe_reference import _pooled
    assert _pooled(5, 2, 2, 1, True) == 3 and _pooled(6, 3, 2, 1, True) == 4 and _pooled(9, 3, 2, 0, True) == 4
    assert _pooled(9, 3, 2, 0, False) == 4 and _pooled(10, 3, 2, 0, False) == 4 and _pooled(10, 3, 2, 0, True) == 5


@pytest.mark.parametrize("factor", [0.0, 1.0, 999.0])
def test_batchnorm_scale_factor(tmp_path, factor):
    layers = [conv("c", "data", "c", 4, pad=1),
              {"name": "bn", "type": "BatchNorm", "bottom": ["c"], "top": ["c"],
               "batch_norm_param": {"use_global_stats": True, "eps": 1e-3}},
              {"name": "sc", "type": "Scale", "bottom": ["c"], "top": ["c"], "scale_param": {"bias_term": True}},
              {"name": "r", "type": "ReLU", "bottom": ["c"], "top": ["c"]}]
    proto = write.write_prototxt(tmp_path / "net.prototxt", layers, input_shape=(1, 3, 6, 6))
    spec = parse(proto)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (2, 3, 6, 6))
    blobs, _ = materialize(spec, x, rng)
    blobs["bn"][2] = np.array([factor])
    from caffe_reference import forward
    ref = forward(spec, blobs, x)
    net = load_caffe(proto, write_weights(tmp_path / "net.caffemodel", spec, blobs), dtype=torch.float64)
    assert rel_err(net(torch.from_numpy(x)).detach().numpy(), ref["c"]) < 1e-10


@pytest.mark.parametrize("op", [dict(operation="SUM", coeff=[1.0, -0.5]), dict(operation="PROD"), dict(operation="MAX")])
def test_eltwise(tmp_path, op):
    layers = [conv("a", "data", "a", 4, pad=1), conv("b", "data", "b", 4, pad=1),
              {"name": "e", "type": "Eltwise", "bottom": ["a", "b"], "top": ["e"], "eltwise_param": op}]
    check_against_reference(tmp_path, layers)


def test_concat_split_slice_several_tops(tmp_path):
    layers = [conv("a", "data", "a", 4, pad=1),
              {"name": "sp", "type": "Split", "bottom": ["a"], "top": ["a1", "a2"]},
              conv("b", "a1", "b", 5, k=1),
              {"name": "cat", "type": "Concat", "bottom": ["a2", "b"], "top": ["cat"]},
              {"name": "sl", "type": "Slice", "bottom": ["cat"], "top": ["s1", "s2", "s3"],
               "slice_param": {"axis": 1, "slice_point": [2, 7]}},
              {"name": "cat2", "type": "Concat", "bottom": ["s3", "s1"], "top": ["cat2"], "concat_param": {"axis": 2}}]
    ref, net = check_against_reference(tmp_path, layers)
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (2, 3, 9, 9)))
    for top in ("s1", "s2", "s3"):  # each top of the Slice is a Grad-CAM layer
        expl = explain(net, x, top, [2, 5])
        torch.testing.assert_close(expl.activations, torch.from_numpy(ref[top]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer", [
    {"type": "Sigmoid"}, {"type": "TanH"}, {"type": "AbsVal"}, {"type": "BNLL"},
    {"type": "ELU", "elu_param": {"alpha": 0.7}},
    {"type": "Power", "power_param": {"power": 2.0, "scale": 0.5, "shift": 1.5}},
    {"type": "PReLU", "prelu_param": {"channel_shared": False}},
    {"type": "PReLU", "prelu_param": {"channel_shared": True}},
    {"type": "ReLU", "relu_param": {"negative_slope": 0.1}},
])
def test_elementwise_layers_in_place(tmp_path, layer):
    layers = [conv("c", "data", "c", 4, pad=1), {"name": "act", "bottom": ["c"], "top": ["c"], **layer}]
    check_against_reference(tmp_path, layers)


def test_flatten_reshape_innerproduct(tmp_path):
    layers = [conv("c", "data", "c", 4),
              {"name": "rs", "type": "Reshape", "bottom": ["c"], "top": ["rs"],
               "reshape_param": {"shape": {"dim": [0, 2, -1, 7]}}},
              {"name": "fl", "type": "Flatten", "bottom": ["rs"], "top": ["fl"]},
              {"name": "ip", "type": "InnerProduct", "bottom": ["fl"], "top": ["ip"],
               "inner_product_param": {"num_output": 5}}]
    check_against_reference(tmp_path, layers)


@pytest.mark.parametrize("geom", [dict(kernel_size=4, stride=2, pad=1), dict(kernel_size=3, stride=1, group=2),
                                  dict(kernel_size=2, stride=3)])
def test_deconvolution(tmp_path, geom):
    layers = [conv("c", "data", "c", 4, pad=1),
              {"name": "d", "type": "Deconvolution", "bottom": ["c"], "top": ["d"],
               "convolution_param": {"num_output": 6, **geom}}]
    check_against_reference(tmp_path, layers)


def test_depthwise_convolution_and_crop(tmp_path):
    layers = [conv("c", "data", "c", 6, pad=1),
              conv("dw", "c", "dw", 6, group=6, pad=1),
              conv("small", "dw", "small", 3, k=5),
              {"name": "crop", "type": "Crop", "bottom": ["dw", "small"], "top": ["crop"],
               "crop_param": {"axis": 2, "offset": [1, 2]}}]
    check_against_reference(tmp_path, layers)


@pytest.mark.parametrize("version", [1, 2])
def test_v1_nets_with_dag_layers(tmp_path, version):
    layers = [conv("a", "data", "a", 4, pad=1), conv("b", "data", "b", 4, pad=1),
              {"name": "e", "type": "Eltwise", "bottom": ["a", "b"], "top": ["e"]},
              {"name": "cat", "type": "Concat", "bottom": ["e", "a"], "top": ["cat"]}]
    check_against_reference(tmp_path, layers, version=version)


def test_any_layer_or_blob_name_is_a_gradcam_layer(tmp_path):
    """Named by layer or by blob: an in-place chain (conv, BatchNorm, Scale, ReLU on one blob) gives the
    blob's final values as activations, the gradient at the first writer, as Caffe's blob holds them."""
    layers = [conv("c", "data", "c", 4, pad=1),
              {"name": "bn", "type": "BatchNorm", "bottom": ["c"], "top": ["c"], "batch_norm_param": {}},
              {"name": "sc", "type": "Scale", "bottom": ["c"], "top": ["c"], "scale_param": {"bias_term": True}},
              {"name": "relu", "type": "ReLU", "bottom": ["c"], "top": ["c"]},
              conv("d", "c", "d", 4),
              {"name": "ip", "type": "InnerProduct", "bottom": ["d"], "top": ["ip"],
               "inner_product_param": {"num_output": 5}}]
    ref, net = check_against_reference(tmp_path, layers, input_shape=(2, 3, 8, 8))
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (2, 3, 8, 8)))
    for name in ("c", "bn", "relu"):
        expl = explain(net, x, name, [1], guided=False)
        assert torch.all(expl.activations >= 0), name  # post-ReLU: the blob's final values
    with pytest.raises(GradCamError, match="unknown layer"):
        explain(net, x, "nope", [1], guided=False)


def test_split_tops_and_split_layers_name_the_blob_they_pass_on(tmp_path):
    layers = [conv("a", "data", "a", 4, pad=1),
              {"name": "sp", "type": "Split", "bottom": ["a"], "top": ["a1", "a2"]},
              {"name": "r", "type": "ReLU", "bottom": ["a1"], "top": ["a1"]},  # not in place on "a": a2 is "a" too
              {"name": "cat", "type": "Concat", "bottom": ["a1", "a2"], "top": ["cat"]}]
    _, net = check_against_reference(tmp_path, layers)
    for name in ("a2", "sp"):
        assert net.resolve_layer(name) == (net.module_at("a"), net.module_at("a"))
    assert net.resolve_layer("a1") == (net.module_at("r"), net.module_at("r"))


def test_bad_dags_are_one_line(tmp_path):
    cases = {
        "reads blob 'ghost'": [conv("a", "ghost", "a", 4)],
        "written by two layers": [conv("a", "data", "x", 4, pad=1), conv("b", "data", "x", 4, pad=1),
                                  {"name": "e", "type": "Eltwise", "bottom": ["x", "x"], "top": ["e"]}],
        "Frobnicate": [{"name": "f", "type": "Frobnicate", "bottom": ["data"], "top": ["f"]}],
    }
    for needle, layers in cases.items():
        proto = write.write_prototxt(tmp_path / "bad.prototxt", layers, input_shape=(1, 3, 8, 8))
        model = write.write_caffemodel(tmp_path / "bad.caffemodel", [])
        with pytest.raises(GradCamError, match=needle):
            load_caffe(proto, model)


# ---------------------------------------------------------------------------- published topologies

TOPOLOGIES = {
    # file: (input (C, H, W), an inner layer to explain)
    "bvlc_googlenet_deploy.prototxt": ((3, 224, 224), "inception_4e/output"),
    "ResNet-50-deploy.prototxt": ((3, 224, 224), "res5c"),
    "squeezenet_v1.0_deploy.prototxt": ((3, 227, 227), "fire9/concat"),
    "squeezenet_v1.1_deploy.prototxt": ((3, 227, 227), "fire9/concat"),
    "mobilenet_deploy.prototxt": ((3, 224, 224), "conv6/sep"),
    "bvlc_alexnet_deploy.prototxt": ((3, 227, 227), "conv5"),
    "bvlc_reference_caffenet_deploy.prototxt": ((3, 227, 227), "conv5"),
}


# the four largest nets and SqueezeNet 1.0 (1.1's twin) are in the slow run; SqueezeNet 1.1 and MobileNet
# stay in the quick one
_LARGE = {"ResNet-50-deploy.prototxt", "bvlc_googlenet_deploy.prototxt", "bvlc_alexnet_deploy.prototxt",
          "bvlc_reference_caffenet_deploy.prototxt", "squeezenet_v1.0_deploy.prototxt"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _LARGE else n
                                  for n in sorted(TOPOLOGIES)])
def test_published_topologies_match_the_reference_and_explain(tmp_path, name):
    (c, h, w), layer = TOPOLOGIES[name]
    proto = PROTOTXTS / name
    spec = parse(proto)
    rng = np.random.default_rng(7)
    x = rng.normal(0, 30, (1, c, h, w)).astype(np.float32).astype(np.float64)
    blobs, ref = materialize(spec, x, rng)
    net = load_caffe(proto, write_weights(tmp_path / "w.caffemodel", spec, blobs))
    if isinstance(list(net.layers)[-1], torch.nn.Softmax):
        net.remove_last()
    xt = torch.from_numpy(x).float()
    logits = net(xt).detach().double().numpy().reshape(1, -1)
    last = [s for s in spec.layers if s.type != "Softmax"][-1].tops[0]
    assert rel_err(logits, ref[last].reshape(1, -1)) < 1e-3, rel_err(logits, ref[last].reshape(1, -1))
    assert net.check_input_size(c, h, w) == ref[last].shape[1:]  # the shape plan knows every layer

    expl = explain(net, xt, layer, [3], guided=True)
    a = expl.activations.double().numpy()
    assert a.shape == ref[layer].shape
    assert rel_err(a, ref[layer]) < 1e-3
    # Grad-CAM against Captum's (mean of gradients instead of their sum: a factor h * w)
    from captum.attr import LayerGradCam
    assert expl.guided is not None and torch.isfinite(expl.guided).all()
    grad_module, value_module = net.resolve_layer(layer)
    if grad_module is value_module:  # Captum reads the module's own output (not the blob after in-place layers)
        captum = LayerGradCam(net, grad_module).attribute(xt, target=3, relu_attributions=True).detach()
        ours = expl.cam_raw[:, 0]
        hw = ours.shape[-1] * ours.shape[-2]
        torch.testing.assert_close(ours, captum[:, 0] * hw, rtol=1e-3, atol=1e-6 * float(ours.abs().max()))


# ------------------------------------------------------------------------- rules beyond the layers


def test_pooling_ceil_mode_false_rounds_down(tmp_path):
    """A fork's ``ceil_mode: false``: 10 -> floor(7 / 2) + 1 = 4 rows, where Caffe's default ceil gives 5."""
    pool = {"name": "p", "type": "Pooling", "bottom": ["c"], "top": ["p"],
            "pooling_param": dict(pool="MAX", kernel_size=3, stride=2, ceil_mode=False)}
    ref, net = check_against_reference(tmp_path, [conv("c", "data", "c", 4, pad=1), pool], input_shape=(2, 3, 10, 10))
    assert ref["p"].shape == (2, 4, 4, 4) and net.check_input_size(3, 10, 10) == (4, 4, 4)


def _load(tmp_path: Path, layers: list[dict], input_shape=(1, 3, 8, 8), weighted: int | None = None):
    """Load ``layers`` with random weights for the first ``weighted`` of them (default all)."""
    proto = write.write_prototxt(tmp_path / "n.prototxt", layers, input_shape=input_shape)
    spec = parse(write.write_prototxt(tmp_path / "w.prototxt", layers[:weighted], input_shape=input_shape))
    blobs, _ = materialize(spec, np.zeros(input_shape), np.random.default_rng(0))
    return load_caffe(proto, write_weights(tmp_path / "n.caffemodel", spec, blobs))


def test_torch7_ties_only_for_nets_loadcaffe_could_build(tmp_path):
    relu = {"name": "r", "type": "ReLU", "bottom": ["c"], "top": ["c"]}
    ip = {"name": "ip", "type": "InnerProduct", "bottom": ["c"], "top": ["ip"], "inner_product_param": {"num_output": 3}}
    bn = {"name": "bn", "type": "BatchNorm", "bottom": ["c"], "top": ["c"]}
    nets = {
        "chain": ([conv("c", "data", "c", 4), relu, ip], True),
        "grouped": ([conv("c0", "data", "c0", 4), conv("c", "c0", "c", 4, group=2), relu, ip], False),
        "batchnorm": ([conv("c", "data", "c", 4), bn, relu, ip], False),
        "dag": ([conv("a", "data", "a", 4), conv("b", "data", "b", 4),
                 {"name": "e", "type": "Eltwise", "bottom": ["a", "b"], "top": ["c"]}, ip], False),
    }
    for name, (layers, expected) in nets.items():
        assert _load(tmp_path, layers).torch7_ties is expected, name


def test_in_place_layers_give_caffes_blob_semantics_with_a_backward(tmp_path):
    """conv -> BatchNorm -> Scale -> ReLU in place on one blob, against the same net (same weights) with
    four blobs: at "c" the gradient is the conv output's and the activations the ReLU's; at "bn" the
    gradient is BatchNorm's output's; the guided backward through the in-place ReLU (which does run in
    place here) equals the out-of-place one."""
    def layers(in_place: bool) -> list[dict]:
        t = (lambda name: "c") if in_place else (lambda name: name)
        return [conv("c", "data", "c", 4, pad=1),
                {"name": "bn", "type": "BatchNorm", "bottom": [t("c")], "top": [t("bn")]},
                {"name": "sc", "type": "Scale", "bottom": [t("bn")], "top": [t("sc")], "scale_param": {"bias_term": True}},
                {"name": "relu", "type": "ReLU", "bottom": [t("sc")], "top": [t("relu")]},
                conv("d", t("relu"), "d", 4),
                {"name": "ip", "type": "InnerProduct", "bottom": ["d"], "top": ["ip"],
                 "inner_product_param": {"num_output": 5}}]

    shape = (2, 3, 8, 8)
    spec = parse(write.write_prototxt(tmp_path / "a.prototxt", layers(True), input_shape=(1, *shape[1:])))
    blobs, _ = materialize(spec, np.zeros(shape), np.random.default_rng(3))
    model = write_weights(tmp_path / "w.caffemodel", spec, blobs)
    nets = [load_caffe(write.write_prototxt(tmp_path / f"{k}.prototxt", layers(k == "a"), input_shape=(1, *shape[1:])),
                       model, dtype=torch.float64) for k in ("a", "b")]
    in_place, apart = nets
    assert in_place.module_at("relu").inplace and not apart.module_at("relu").inplace
    x = torch.from_numpy(np.random.default_rng(4).normal(0, 1, shape))
    ours = explain(in_place, x, "c", [1, 2])
    grad_c, value = explain(apart, x, "c", [1, 2]), explain(apart, x, "relu", [1, 2])
    torch.testing.assert_close(ours.weights, grad_c.weights, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours.activations, value.activations, rtol=0, atol=0)
    torch.testing.assert_close(ours.guided, grad_c.guided, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(explain(in_place, x, "bn", [1]).weights, explain(apart, x, "bn", [1]).weights,
                               rtol=1e-12, atol=0)
    assert in_place.resolve_layer("c") == (in_place.module_at("c"), in_place.module_at("relu"))


def test_reshape_keeps_the_batch_axis(tmp_path):
    base = [conv("c", "data", "c", 4)]
    ok = {"name": "rs", "type": "Reshape", "bottom": ["c"], "top": ["rs"], "reshape_param": {"shape": {"dim": [-1, 144]}}}
    assert _load(tmp_path, base + [ok]).check_input_size(3, 8, 8) == (144,)
    bad = {"name": "rs", "type": "Reshape", "bottom": ["c"], "top": ["rs"], "reshape_param": {"shape": {"dim": [2, -1]}}}
    with pytest.raises(GradCamError, match=r"layer 'rs' \(Reshape\): .*keep the batch axis"):
        _load(tmp_path, base + [bad])


def test_scale_and_bias_with_a_second_bottom_and_with_blobs(tmp_path):
    """A squeeze-excitation gate (Scale of two bottoms, axis 0), then Bias and Scale blobs over two axes."""
    layers = [conv("a", "data", "a", 4, pad=1),
              {"name": "gap", "type": "Pooling", "bottom": ["a"], "top": ["gap"],
               "pooling_param": {"pool": "AVE", "global_pooling": True}},
              {"name": "flat", "type": "Flatten", "bottom": ["gap"], "top": ["flat"]},
              {"name": "gate", "type": "Sigmoid", "bottom": ["flat"], "top": ["flat"]},
              {"name": "se", "type": "Scale", "bottom": ["a", "flat"], "top": ["se"], "scale_param": {"axis": 0}},
              {"name": "b", "type": "Bias", "bottom": ["se"], "top": ["se"]},
              {"name": "s2", "type": "Scale", "bottom": ["se"], "top": ["s2"],
               "scale_param": {"axis": 2, "num_axes": 2, "bias_term": True}}]
    check_against_reference(tmp_path, layers)


@pytest.mark.parametrize("bad, needle", [
    ({"type": "Concat", "bottom": ["a", "p"]}, "differ outside the concatenation axis 1"),
    ({"type": "Concat", "bottom": ["a", "a"], "concat_param": {"axis": 0}}, "batch axis"),
    ({"type": "Eltwise", "bottom": ["a", "p"]}, "different shapes"),
    ({"type": "Eltwise", "bottom": ["a", "a"], "eltwise_param": {"operation": "PROD", "coeff": [1, 2]}}, "coeff"),
    ({"type": "Slice", "bottom": ["a"], "top": ["x", "y", "z"]}, "does not split into 3 equal parts"),
    ({"type": "Slice", "bottom": ["a"], "top": ["x", "y"], "slice_param": {"slice_point": [9]}}, "slice_point"),
    ({"type": "Crop", "bottom": ["p", "a"]}, "exceeds axis 2"),
    ({"type": "Reshape", "bottom": ["a"], "reshape_param": {"shape": {"dim": [0, 7, -1]}}}, "cannot reshape"),
    ({"type": "Scale", "bottom": ["a"], "scale_param": {"axis": 2, "num_axes": 3}}, "does not fit"),
    ({"type": "Scale", "bottom": ["a", "p"], "scale_param": {"axis": 0}}, "does not match"),
    ({"type": "Deconvolution", "bottom": ["a"], "convolution_param": {"num_output": 3, "kernel_size": 2, "group": 2}},
     "group 2 does not divide"),
])
def test_bad_dag_layers_are_one_line_naming_the_layer(tmp_path, bad, needle):
    layers = [conv("a", "data", "a", 4, pad=1),
              {"name": "p", "type": "Pooling", "bottom": ["a"], "top": ["p"],
               "pooling_param": {"pool": "MAX", "kernel_size": 2, "stride": 2}},
              {"name": "bad", "top": ["bad"], **bad}]
    with pytest.raises(GradCamError) as err:
        _load(tmp_path, layers, weighted=2)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"layer 'bad' ({bad['type']}): ") and needle in message, message


@pytest.mark.parametrize("version", [1, 2])
def test_deprecated_concat_dim_and_slice_dim(tmp_path, version):
    layers = [conv("a", "data", "a", 4, pad=1), conv("b", "data", "b", 4, pad=1),
              {"name": "cat", "type": "Concat", "bottom": ["a", "b"], "top": ["cat"], "concat_param": {"concat_dim": 2}},
              {"name": "sl", "type": "Slice", "bottom": ["cat"], "top": ["s1", "s2"], "slice_param": {"slice_dim": 2}},
              {"name": "e", "type": "Eltwise", "bottom": ["s1", "s2"], "top": ["e"], "eltwise_param": {"operation": "MAX"}}]
    ref, _ = check_against_reference(tmp_path, layers, version=version)
    assert ref["e"].shape == (2, 4, 9, 9)


def test_reshape_inferring_a_size_after_an_input_of_unknown_sizes_is_one_clear_error(tmp_path):
    """An Input without a shape (sizes known only at the first forward) reshaped with a -1: the size to
    infer is unknown when the net is built, which is said in one line naming the layer (not a TypeError)."""
    proto = tmp_path / "n.prototxt"
    proto.write_text('layer { name: "data" type: "Input" top: "data" }\n'
                     'layer { name: "rs" type: "Reshape" bottom: "data" top: "rs" '
                     'reshape_param { shape { dim: 0 dim: 0 dim: -1 } } }\n')
    with pytest.raises(GradCamError, match=r"^layer 'rs' \(Reshape\): the sizes of \?x\?x\? must be known"):
        load_caffe(proto, write.write_caffemodel(tmp_path / "n.caffemodel", []))
