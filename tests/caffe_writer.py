"""A small writer of prototxt text and caffemodel binaries: the tests' fixtures, the fuzz corpus and the
benchmark's VGG-16 (not part of the package).

Nets are described as a list of layer dicts using V2 ``LayerParameter`` field names::

    {"name": "conv1", "type": "Convolution", "bottom": ["data"], "top": ["conv1"],
     "convolution_param": {"num_output": 8, "kernel_size": 3}, "blobs": [weight, bias]}

with numpy arrays as blobs. :func:`net_message` turns such a list into a NetParameter tree (dicts, by
field name) of either generation - V1 writes ``layers`` with enum types and legacy
num/channels/height/width blob dims (an InnerProduct weight becomes 1 x 1 x out x in), V2 writes
``layer`` with string types and blob ``shape`` - and :func:`write_text`/:func:`write_binary` encode any
tree against the :mod:`gradcam_core.formats.caffe.schema` descriptors. Blob payloads are streamed from
the arrays' memory (packed, or unpacked with one tag per value), with no per-value Python work.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradcam_core.formats.caffe.schema import MESSAGES, NET_PARAMETER, V2_TO_V1_TYPE, Field, MessageType


def net_message(
    layers: Sequence[dict[str, Any]],
    *,
    version: int = 2,
    input_shape: Sequence[int] | None = None,
    name: str = "net",
    blobs: bool = True,
    double: bool = False,
) -> dict[str, Any]:
    """A NetParameter tree for ``layers``: V1 (``version=1``) or V2. ``input_shape`` (N, C, H, W)
    declares an input blob "data" (``input_dim`` in V1, ``input_shape`` in V2). ``blobs=False`` leaves
    the weights out (a prototxt); ``double`` stores them as float64 ``double_data``."""
    tree: dict[str, Any] = {"name": name}
    if input_shape is not None:
        tree["input"] = ["data"]
        if version == 1:
            tree["input_dim"] = list(input_shape)
        else:
            tree["input_shape"] = [{"dim": list(input_shape)}]
    tree["layers" if version == 1 else "layer"] = [_layer(layer, version, blobs, double) for layer in layers]
    return tree


def _layer(layer: dict[str, Any], version: int, with_blobs: bool, double: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in layer.items():
        if key == "blobs":
            if with_blobs:
                out[key] = [_blob(np.asarray(a), version, double) for a in value]
        elif key == "type" and version == 1:
            out[key] = V2_TO_V1_TYPE[value]
        else:
            out[key] = value
    return out


def _blob(array: np.ndarray, version: int, double: bool) -> dict[str, Any]:
    # Fields in field-number order, as Caffe writes them: legacy dims 1-4, data 5, shape 7, double_data 8.
    blob: dict[str, Any] = {}
    if version == 1:
        dims = (1,) * (4 - array.ndim) + array.shape
        blob.update(zip(("num", "channels", "height", "width"), dims))
    if not double:
        blob["data"] = array.reshape(-1)
    if version != 1:
        blob["shape"] = {"dim": list(array.shape)}
    if double:
        blob["double_data"] = array.reshape(-1)
    return blob


def write_text(path: str | Path, tree: dict[str, Any], mtype: MessageType = NET_PARAMETER) -> Path:
    """Write ``tree`` as protobuf text (blob payloads are left out)."""
    path = Path(path)
    path.write_text("\n".join(_text(tree, mtype, 0)) + "\n")
    return path


def write_binary(path: str | Path, tree: dict[str, Any], mtype: MessageType = NET_PARAMETER,
                 *, packed: bool = True) -> Path:
    """Write ``tree`` in the protobuf wire format; blob data packed or (``packed=False``) one tagged
    entry per value."""
    path = Path(path)
    with open(path, "wb") as f:
        for chunk in _wire(tree, mtype, packed):
            f.write(chunk if isinstance(chunk, bytes) else chunk.reshape(-1).view(np.uint8))
    return path


def write_prototxt(path: str | Path, layers: Sequence[dict[str, Any]], *, version: int = 2,
                   input_shape: Sequence[int] | None = (1, 3, 224, 224), name: str = "net") -> Path:
    """Write a deploy prototxt for ``layers`` (V1 or V2)."""
    return write_text(path, net_message(layers, version=version, input_shape=input_shape, name=name, blobs=False))


def write_caffemodel(path: str | Path, layers: Sequence[dict[str, Any]], *, version: int = 2,
                     double: bool = False, packed: bool = True, name: str = "net") -> Path:
    """Write a caffemodel holding ``layers`` and their blobs (V1 or V2, float or double)."""
    return write_binary(path, net_message(layers, version=version, name=name, double=double), packed=packed)


# --------------------------------------------------------------------------------------------------
# Encoders


def _field(mtype: MessageType, name: str) -> Field:
    if name not in mtype.by_name:
        raise ValueError(f"{mtype.name} has no field {name!r} (see gradcam_core.formats.caffe.schema)")
    return mtype.by_name[name]


def _values(fdesc: Field, value: Any) -> list[Any]:
    if fdesc.repeated and isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _text(tree: dict[str, Any], mtype: MessageType, depth: int) -> list[str]:
    indent = "  " * depth
    lines = []
    for name, value in tree.items():
        fdesc = _field(mtype, name)
        if fdesc.bulk:
            continue
        for v in _values(fdesc, value):
            if fdesc.kind == "message":
                lines += [f"{indent}{name} {{", *_text(v, MESSAGES[fdesc.message_type], depth + 1), f"{indent}}}"]
            else:
                lines.append(f"{indent}{name}: {_text_scalar(fdesc, v)}")
    return lines


def _text_scalar(fdesc: Field, value: Any) -> str:
    if fdesc.kind == "string":
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if fdesc.kind == "enum":
        return value if isinstance(value, str) else {v: k for k, v in fdesc.enum_values.items()}[value]
    if fdesc.kind == "bool":
        return "true" if value else "false"
    return repr(float(value)) if fdesc.kind in ("float", "double") else str(int(value))


def varint(value: int) -> bytes:
    """A protobuf varint (negative numbers as 10-byte two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def _size(chunks: list[Any]) -> int:
    return sum(len(c) if isinstance(c, bytes) else c.nbytes for c in chunks)


def _wire(tree: dict[str, Any], mtype: MessageType, packed: bool) -> list[Any]:
    chunks: list[Any] = []
    for name, value in tree.items():
        fdesc = _field(mtype, name)
        if fdesc.bulk:
            chunks += _bulk(fdesc, np.asarray(value), packed)
        elif fdesc.kind == "message":
            for v in _values(fdesc, value):
                body = _wire(v, MESSAGES[fdesc.message_type], packed)
                chunks += [_key(fdesc.number, 2) + varint(_size(body)), *body]
        elif fdesc.packed:
            run = b"".join(_scalar(fdesc, v) for v in _values(fdesc, value))
            chunks.append(_key(fdesc.number, 2) + varint(len(run)) + run)
        else:
            for v in _values(fdesc, value):
                wire_type = {"float": 5, "double": 1, "string": 2}.get(fdesc.kind, 0)
                chunks.append(_key(fdesc.number, wire_type) + _scalar(fdesc, v))
    return chunks


def _scalar(fdesc: Field, value: Any) -> bytes:
    if fdesc.kind == "string":
        raw = value.encode()
        return varint(len(raw)) + raw
    if fdesc.kind == "float":
        return struct.pack("<f", value)
    if fdesc.kind == "double":
        return struct.pack("<d", value)
    if fdesc.kind == "enum" and isinstance(value, str):
        value = fdesc.enum_values[value]
    return varint(int(value))


def _bulk(fdesc: Field, array: np.ndarray, packed: bool) -> list[Any]:
    """Blob values: one length-delimited run, or one (tag, value) entry per value."""
    dtype = np.dtype("<f4" if fdesc.kind == "float" else "<f8")
    array = np.ascontiguousarray(array.reshape(-1), dtype=dtype)
    if packed:
        return [_key(fdesc.number, 2) + varint(array.nbytes), array]
    tag = _key(fdesc.number, 5 if fdesc.kind == "float" else 1)
    entries = np.empty(array.size, dtype=[("tag", f"V{len(tag)}"), ("value", dtype)])
    entries["tag"] = np.frombuffer(tag, f"V{len(tag)}")[0]
    entries["value"] = array
    return [entries]


# --------------------------------------------------------------------------------------------------
# A full-size VGG-16 (the benchmark's model)

_VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg16_layers(seed: int = 0, classes: int = 1000, fc: int = 4096) -> list[dict[str, Any]]:
    """VGG-16 as in the Oxford deploy prototxt (same layer names and sizes; ``fc`` is the width of
    fc6/fc7) with random float32 weights: He-normal, biases uniform in [0, 0.01)."""
    rng = np.random.default_rng(seed)

    def blobs(out: int, *fan_in_shape: int) -> list[np.ndarray]:
        weight = rng.standard_normal((out, *fan_in_shape), dtype=np.float32)
        weight *= np.float32(math.sqrt(2.0 / math.prod(fan_in_shape)))
        return [weight, rng.uniform(0.0, 0.01, out).astype(np.float32)]

    def simple(name: str, type_: str, bottom: str, top: str, **params: Any) -> dict[str, Any]:
        return {"name": name, "type": type_, "bottom": [bottom], "top": [top], **params}

    layers, blob, channels = [], "data", 3
    for block, (width, convs) in enumerate(_VGG16_BLOCKS, 1):
        for i in range(1, convs + 1):
            name = f"conv{block}_{i}"
            param = {"num_output": width, "pad": 1, "kernel_size": 3}
            layers.append(simple(name, "Convolution", blob, name, convolution_param=param,
                                 blobs=blobs(width, channels, 3, 3)))
            layers.append(simple(f"relu{block}_{i}", "ReLU", name, name))
            blob, channels = name, width
        pool = {"pool": "MAX", "kernel_size": 2, "stride": 2}
        layers.append(simple(f"pool{block}", "Pooling", blob, f"pool{block}", pooling_param=pool))
        blob = f"pool{block}"
    fan_in = channels * 7 * 7
    for i, out in ((6, fc), (7, fc), (8, classes)):
        name = f"fc{i}"
        layers.append(simple(name, "InnerProduct", blob, name, inner_product_param={"num_output": out},
                             blobs=blobs(out, fan_in)))
        blob, fan_in = name, out
        if i < 8:
            layers.append(simple(f"relu{i}", "ReLU", name, name))
            layers.append(simple(f"drop{i}", "Dropout", name, name, dropout_param={"dropout_ratio": 0.5}))
    layers.append(simple("prob", "Softmax", "fc8", "prob"))
    return layers


def build_vgg16(folder: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write a full-size VGG-16 in the V1 format (as the Oxford files are) with random weights into
    ``folder``: (VGG_ILSVRC_16_layers_deploy.prototxt, VGG_ILSVRC_16_layers.caffemodel), ~553 MB."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = vgg16_layers(seed)
    name = "VGG_ILSVRC_16_layers"
    proto = write_prototxt(folder / f"{name}_deploy.prototxt", layers, version=1, input_shape=(10, 3, 224, 224),
                           name=name)
    model = write_caffemodel(folder / f"{name}.caffemodel", layers, version=1, name=name)
    return proto, model
