#!/usr/bin/env python3
"""Regenerate the fuzz fixtures (fuzz/fixtures/), the seed corpus (fuzz/corpus/<target>/seed-*) and the
libFuzzer dictionaries (fuzz/dicts/) - deterministically, from the writers and tests/data.

    python fuzz/make_corpus.py

Seeds are small valid files of every kind each target reads, plus truncations and byte mutations of
the fixtures in tests/data. Regression inputs (``crash-*``, one per crash the fuzzer found) are written by
hand and never touched here.
"""
from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import caffe_writer as write  # noqa: E402
from t7_writer import Obj, Storage, Tensor, from_loaded, sample_file, t7, tensor  # noqa: E402

from gradcam_core.formats.caffe.schema import MESSAGES, V1_LAYER_TYPES  # noqa: E402
from gradcam_core.formats.torch7 import load_t7  # noqa: E402

FUZZ = ROOT / "fuzz"
FIXTURES = FUZZ / "fixtures"
CORPUS = FUZZ / "corpus"
DICTS = FUZZ / "dicts"
DATA = ROOT / "tests" / "data"


# --------------------------------------------------------------------------------------------------
# Caffe


def tiny_layers() -> list[dict[str, Any]]:
    """A 6x6 RGB net using most layer builders: conv, ReLU, LRN, max pool, grouped conv, average pool,
    inner product, dropout, softmax."""
    rng = np.random.default_rng(0)

    def blobs(*shape: int) -> list[np.ndarray]:
        return [rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape[0]).astype(np.float32)]

    def layer(name: str, type_: str, bottom: str, top: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "type": type_, "bottom": [bottom], "top": [top], **extra}

    return [
        layer("conv1", "Convolution", "data", "conv1", blobs=blobs(2, 3, 3, 3),
              convolution_param={"num_output": 2, "pad": 1, "kernel_size": 3}),
        layer("relu1", "ReLU", "conv1", "conv1"),
        layer("norm1", "LRN", "conv1", "norm1", lrn_param={"local_size": 3, "alpha": 0.1, "beta": 0.75}),
        layer("pool1", "Pooling", "norm1", "pool1", pooling_param={"pool": "MAX", "kernel_size": 2, "stride": 2}),
        layer("conv2", "Convolution", "pool1", "conv2", blobs=blobs(2, 1, 1, 1),
              convolution_param={"num_output": 2, "kernel_size": 1, "group": 2}),
        layer("pool2", "Pooling", "conv2", "pool2", pooling_param={"pool": "AVE", "kernel_size": 2, "stride": 1}),
        layer("fc", "InnerProduct", "pool2", "fc", blobs=blobs(3, 8), inner_product_param={"num_output": 3}),
        layer("drop", "Dropout", "fc", "fc", dropout_param={"dropout_ratio": 0.5}),
        layer("prob", "Softmax", "fc", "prob"),
    ]


def caffe_files() -> None:
    layers = tiny_layers()
    for version in (1, 2):
        write.write_prototxt(FIXTURES / f"tiny_v{version}.prototxt", layers, version=version, input_shape=(1, 3, 6, 6))
    write.write_caffemodel(FIXTURES / "tiny_v2.caffemodel", layers, version=2)
    models = CORPUS / "caffemodel"
    write.write_caffemodel(models / "seed-v2.caffemodel", layers, version=2)
    write.write_caffemodel(models / "seed-v1.caffemodel", layers, version=1)
    write.write_caffemodel(models / "seed-v2-unpacked.caffemodel", layers, version=2, packed=False)
    write.write_caffemodel(models / "seed-v1-double.caffemodel", layers, version=1, double=True)
    model = (models / "seed-v2.caffemodel").read_bytes()
    variants(models, "v2", model, ".caffemodel")
    alexnet = (DATA / "models" / "mini_alexnet_v1.caffemodel").read_bytes()
    (models / "seed-alexnet-head.caffemodel").write_bytes(alexnet[:700])
    shutil.rmtree(CORPUS / "wire", ignore_errors=True)
    shutil.copytree(models, CORPUS / "wire", ignore=shutil.ignore_patterns("crash-*"))

    protos = CORPUS / "prototxt"
    for version in (1, 2):
        shutil.copy(FIXTURES / f"tiny_v{version}.prototxt", protos / f"seed-tiny-v{version}.prototxt")
    for name in ("mini_alexnet_v2", "mini_alexnet_grouped", "mini_vgg16_v1"):
        shutil.copy(DATA / "models" / f"{name}.prototxt", protos / f"seed-{name}.prototxt")
    (protos / "seed-syntax.prototxt").write_text(SYNTAX)
    (protos / "seed-input-layer.prototxt").write_text(INPUT_LAYER)
    nets = CORPUS / "prototxt_net"
    for name in ("seed-tiny-v1", "seed-tiny-v2", "seed-input-layer", "seed-syntax"):
        shutil.copy(protos / f"{name}.prototxt", nets / f"{name}.prototxt")


SYNTAX = r"""# every syntax the parser knows
name: 'syn' "tax" ; input: "data"
input_shape < dim: [1, 3, 0x6, 06] >
layer: { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 2 pad: 1 kernel_size: 3 bias_term: true engine: CAFFE } }
layer [{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: -0.0e0f } }]
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
  inner_product_param { num_output: 3 axis: -3 transpose: f } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" softmax_param { axis: 1 } }
layer { name: "esc\x41\101\u00e9\n" type: "Flatten" bottom: "prob" top: "flat" flatten_param { axis: 1 end_axis: -1 } }
"""

INPUT_LAYER = """name: "in"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 2 pad: 1 kernel_size: 3 } }
layer { name: "split" type: "Split" bottom: "conv1" top: "a" top: "b" }
layer { name: "relu1" type: "ReLU" bottom: "a" top: "a" }
layer { name: "sig" type: "Sigmoid" bottom: "a" top: "s" }
layer { name: "tanh" type: "TanH" bottom: "s" top: "t" }
"""


# --------------------------------------------------------------------------------------------------
# Torch7


def tiny_cnn(features: int) -> Obj:
    """An nn.Sequential of every supported module kind, on 3 x 4 x 4 inputs, ending in ``features``."""
    rng = np.random.default_rng(1)

    def weights(*shape: int) -> Tensor:
        return tensor("torch.FloatTensor", rng.standard_normal(shape).astype(np.float32))

    def module(typename: str, **fields: Any) -> Obj:
        return Obj(typename, fields)

    pool = dict(kH=2, kW=2, dH=2, dW=2, padH=0, padW=0, ceil_mode=True)
    sizes = Storage("torch.LongStorage", np.array([-1], dtype=np.int64))
    return module("nn.Sequential", modules=dict(enumerate([
        module("nn.SpatialConvolution", nInputPlane=3, nOutputPlane=2, kH=3, kW=3, dH=1, dW=1, padH=1, padW=1,
               weight=weights(2, 3, 3, 3), bias=weights(2), name="conv1"),
        module("nn.ReLU", inplace=True, threshold=0, val=0, name="relu1"),
        module("cudnn.SpatialCrossMapLRN", size=3, alpha=1e-4, beta=0.75, k=1),
        module("nn.SpatialMaxPooling", **pool, name="pool1"),
        module("nn.SpatialAveragePooling", kH=1, kW=1, dH=1, dW=1, count_include_pad=True),
        module("nn.View", size=sizes, numInputDims=3),
        module("nn.Linear", weight=weights(features, 8), bias=weights(features), name="fc"),
        module("nn.Dropout", p=0.5, v2=True),
        module("nn.Tanh"), module("nn.Normalize", p=2, eps=1e-10), module("nn.Identity"),
        module("nn.Reshape", size=Storage("torch.LongStorage", np.array([features], dtype=np.int64))),
        module("nn.SoftMax"),
    ], 1)))


def tiny_caption_checkpoint() -> bytes:
    """The neuraltalk2 fixture with a tiny CNN (its language model is small already)."""
    root = load_t7(DATA / "neuraltalk2" / "mini_caption_model.t7")
    encoding = root["protos"]["lm"]["input_encoding_size"]
    out = from_loaded(root)
    out["protos"]["cnn"] = tiny_cnn(encoding)
    return t7(out)


def tiny_vqa_model() -> bytes:
    """lstm.t7 for the fuzz vocabulary (2 words, 2 answers) and the sizes in fuzz/targets.py
    (E = H = 2, L = 1, C = 1): three flat float vectors of the lengths vqa.py checks."""
    from gradcam_core.tasks import vqa

    e, h, layers, c, a, words = 2, 2, 1, 1, 2, 2
    lengths = {
        "embedding_w_q": vqa.embedding_size(words, e),
        "encoder_w_q": vqa.encoder_size(e, h, layers),
        "multimodal_w": vqa.multimodal_size(2 * layers * h, c, a),
    }
    rng = np.random.default_rng(2)
    return t7({k: tensor("torch.FloatTensor", rng.standard_normal(n).astype(np.float32)) for k, n in lengths.items()})


def torch_files() -> None:
    (FIXTURES / "vqa_vocab.json").write_text(json.dumps(
        {"ix_to_word": {"1": "what", "2": "UNK"}, "ix_to_ans": {"1": "yes", "2": "no/maybe"}}))
    t7s = CORPUS / "t7"
    small = sample_file()
    (t7s / "seed-small.t7").write_bytes(small)
    variants(t7s, "small", small, ".t7")
    (t7s / "seed-sequential.t7").write_bytes(t7(tiny_cnn(4)))
    (t7s / "seed-lstm-head.t7").write_bytes((DATA / "VQA_LSTM_CNN" / "lstm.t7").read_bytes()[:600])
    (t7s / "seed-long4.t7").write_bytes(t7({"a": tensor("torch.LongTensor", np.arange(3))}, long_size=4))
    (CORPUS / "captioner" / "seed-tiny.t7").write_bytes(tiny_caption_checkpoint())
    vqa_model = tiny_vqa_model()
    (CORPUS / "vqa" / "seed-tiny.t7").write_bytes(vqa_model)
    variants(CORPUS / "vqa", "tiny", vqa_model[:2000], ".t7")


# --------------------------------------------------------------------------------------------------
# Variants and dictionaries


def variants(folder: Path, stem: str, data: bytes, suffix: str) -> None:
    """Truncations (a third, two thirds, all but one byte) and a few deterministic byte flips."""
    rng = np.random.default_rng(len(data))
    for i, cut in enumerate((len(data) // 3, 2 * len(data) // 3, len(data) - 1)):
        (folder / f"seed-{stem}-cut{i}{suffix}").write_bytes(data[:cut])
    for i in range(3):
        flipped = bytearray(data)
        for pos in rng.integers(0, len(data), 4):
            flipped[pos] ^= 1 << int(rng.integers(0, 8))
        (folder / f"seed-{stem}-flip{i}{suffix}").write_bytes(bytes(flipped))


def dictionaries() -> None:
    """libFuzzer dictionaries: prototxt field names, enum and layer type names; Torch class names."""
    words = {f.name for m in MESSAGES.values() for f in m.by_name.values()}
    words |= set(V1_LAYER_TYPES) | {v2 for _, v2 in V1_LAYER_TYPES.values() if v2} | {"MAX", "AVE", "CEIL", "FLOOR"}
    tokens = sorted(words) + ["{", "}", ":", "[", "]", "<", ">", "#", "\\\"", "0x", "-1", "inf", "nan", "true"]
    write_dict(DICTS / "prototxt.dict", tokens)
    from gradcam_core.formats.torch7.reader import _STORAGE_CLASSES, _TENSOR_CLASSES
    from gradcam_core.nets.registry import types

    names = types("torch7") + sorted(_TENSOR_CLASSES) + sorted(_STORAGE_CLASSES) + ["V 1", "nn.Sequential"]
    write_dict(DICTS / "t7.dict", names)


def write_dict(path: Path, tokens: list[str]) -> None:
    path.write_text("".join(f'"{t}"\n' for t in tokens))


def clean(folder: Path, keep: Callable[[Path], bool]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if not keep(path):
            path.unlink()


def main() -> None:
    from targets import TARGETS  # one corpus folder per target

    for folder in [FIXTURES, DICTS] + [CORPUS / name for name in TARGETS]:
        clean(folder, keep=lambda p: p.name.startswith("crash-"))
    caffe_files()
    torch_files()
    dictionaries()
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"corpus: {sum(1 for p in CORPUS.rglob('*') if p.is_file())} files, {total} bytes")


if __name__ == "__main__":
    sys.path.insert(0, str(FUZZ))
    main()
