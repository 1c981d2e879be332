"""Caffe -> ONNX: ``python -m gradcam_core.convert deploy.prototxt weights.caffemodel out.onnx``.

The net is loaded as for Grad-CAM (:func:`gradcam_core.caffe.load_caffe`) and written with torch's
TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) at opset 17 (the newest onnx2torch
1.5.15 reads, so :func:`gradcam_core.formats.onnx.load_onnx` takes the file back without conversion):
input ``"data"`` of shape (N, C, H, W) with a dynamic batch axis N and a fixed H x W (the prototxt's,
else 224 x 224, or ``--input-size``), one output named after the last Caffe layer (``"prob"`` for a
deploy file ending in Softmax). The exported graph is tidied: constant subgraphs (the pads of Caffe's
pooling) are folded into initializers, and each layer's node and output tensor take the Caffe layer's
name (``"conv5"``, ``"relu5"``; the helper nodes of a layer that needs several are ``"<layer>/<op>"``),
so Grad-CAM on the ONNX file is asked for by the same layer names as on the Caffe net. A Caffe layer
and its ONNX twin compute the same values; note that Caffe nets' in-place ReLUs make ``conv5`` mean
the rectified blob in a Caffe net's Grad-CAM, while in ONNX ``conv5`` is the convolution's own output
(ask for ``relu5`` in both).

Bad input (files, layers the loader does not support, a size too small for the net) gives one line
on stderr and exit code 2; the output file is written whole or not at all.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from .errors import GradCamError

OPSET = 17
PathLike = Union[str, "os.PathLike[str]"]


def caffe_to_onnx(proto_file: PathLike, model_file: PathLike, out_file: PathLike, *,
                  input_size: Optional[tuple[int, int]] = None, opset: int = OPSET) -> Path:
    """Write the Caffe net (``proto_file`` + ``model_file``) as ONNX to ``out_file``; returns its path.

    Args:
        input_size: (H, W) of the exported input; default the prototxt's declared input size, else
            224 x 224. The batch axis is dynamic.
        opset: the ONNX opset to write (onnx2torch reads up to 17).
    """
    from .extras import require

    require("onnx", "the converter (gradcam-convert) needs")
    import onnx

    from .caffe import load_caffe

    out = Path(out_file)
    if out.is_dir():
        raise GradCamError(f"output '{out}': it is a directory")
    if not out.parent.is_dir():
        raise GradCamError(f"output '{out}': folder '{out.parent}' does not exist")
    net = load_caffe(str(proto_file), str(model_file))
    spec = net.input_spec
    if input_size is None:
        input_size = (spec.height or 224, spec.width or 224)
    height, width = input_size
    if height < 1 or width < 1:
        raise GradCamError(f"input size {height}x{width}: must be at least 1x1")
    if not len(net):
        raise GradCamError(f"{proto_file}: the net has no layer to export")
    output_name = net.names[-1]
    x = torch.zeros(1, spec.channels or 3, height, width)
    try:
        with torch.no_grad():
            net(x)  # a size the net cannot take fails here, with the layer's own message
    except GradCamError:
        raise
    except RuntimeError as exc:
        raise GradCamError(f"{proto_file}: the net cannot run on a {height}x{width} input: "
                           f"{_first_line(exc)}") from None
    _use_onnx_lrn(net)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings about constant sizes: intended
            torch.onnx.export(
                net, (x,), buffer, dynamo=False, opset_version=opset, input_names=["data"],
                output_names=[output_name], dynamic_axes={"data": {0: "N"}, output_name: {0: "N"}},
                do_constant_folding=True,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds
        raise GradCamError(f"{proto_file}: cannot export the net to ONNX: {_first_line(exc)}") from None
    model = onnx.ModelProto.FromString(buffer.getvalue())
    from .formats.onnx import fold_constants

    fold_constants(model)
    _name_after_layers(model, net.names, output_name)
    model.producer_name, model.doc_string = "gradcam_core.convert", f"from {Path(proto_file).name}"
    onnx.checker.check_model(model)
    _write_whole(out, model.SerializeToString())
    return out


class _LRNFunction(torch.autograd.Function):
    """``F.local_response_norm`` that the exporter writes as ONE ONNX ``LRN`` node (traced, torch's
    version becomes some 40 shape and padding nodes, an ``If`` among them that onnx2torch cannot
    read). Both sum the squares over the same channels for the odd sizes Caffe allows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:  # type: ignore[override]
        return torch.nn.functional.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size: int, alpha: float, beta: float, k: float):  # type: ignore[no-untyped-def]
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class _OnnxLRN(torch.nn.Module):
    """An ``nn.LocalResponseNorm`` (Caffe's ACROSS_CHANNELS LRN) exported as ONNX ``LRN``."""

    def __init__(self, lrn: torch.nn.LocalResponseNorm) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = lrn.size, lrn.alpha, lrn.beta, lrn.k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LRNFunction.apply(x, self.size, self.alpha, self.beta, self.k)


def _use_onnx_lrn(net) -> None:
    """Swap the net's odd-sized across-channel LRNs for :class:`_OnnxLRN` (this net is only exported)."""
    for i, module in enumerate(net.layers):
        if type(module) is torch.nn.LocalResponseNorm and module.size % 2 == 1:
            net.layers[i] = _OnnxLRN(module)


def _name_after_layers(model, layer_names: Sequence[str], output_name: str) -> None:
    """Node and output tensor names from the Caffe layers: the exporter names a node after the
    module it comes from (``/layers.5/Relu``: module 5 of the GraphNet); the last node of each module
    computes the layer's output and takes the layer's name, the others ``<layer>/<op>``."""
    from .formats.onnx import unique_name

    graph = model.graph
    taken_tensors = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    by_module: dict[int, list] = {}
    for node in graph.node:
        match = re.match(r"/layers\.(\d+)/", node.name)
        if match and int(match.group(1)) < len(layer_names):
            by_module.setdefault(int(match.group(1)), []).append(node)
    renamed: dict[str, str] = {}
    used_nodes: set[str] = set()

    for index, nodes in sorted(by_module.items()):
        layer = layer_names[index]
        *helpers, last = nodes
        for node in helpers:
            node.name = unique_name(f"{layer}/{node.op_type}", used_nodes)
        last.name = unique_name(layer, used_nodes)
        if len(last.output) == 1 and last.output[0] != output_name and layer not in taken_tensors:
            renamed[last.output[0]] = layer
            taken_tensors.add(layer)
    for node in graph.node:
        if node.name not in used_nodes:  # a node outside the layers' scopes (none expected)
            node.name = unique_name(node.name or node.op_type, used_nodes)
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for value in graph.value_info:
        value.name = renamed.get(value.name, value.name)


def _write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and move it into place."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise GradCamError(f"output '{path}': cannot write in '{path.parent}' ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise GradCamError(f"output '{path}': {exc.strerror or exc}") from None
    except BaseException:
        os.unlink(tmp)
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: give N (square) or HxW, e.g. 224 or 227x227")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line: returns the exit code (0, or 2 after one line on stderr)."""
    parser = argparse.ArgumentParser(
        prog=Path(sys.argv[0]).name if argv is None and not sys.argv[0].endswith("convert.py") else
        "python -m gradcam_core.convert",
        description="Write a Caffe net (deploy prototxt + caffemodel) as an ONNX file.",
    )
    parser.add_argument("proto_file", help="the deploy .prototxt")
    parser.add_argument("model_file", help="the .caffemodel with the weights")
    parser.add_argument("out_file", help="the .onnx file to write")
    parser.add_argument("--input-size", type=_size, default=None, metavar="HxW",
                        help="input height x width (N for square); default the prototxt's, else 224")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # library warnings would break the one-line promise
    try:
        out = caffe_to_onnx(args.proto_file, args.model_file, args.out_file, input_size=args.input_size,
                            opset=args.opset)
    except GradCamError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: error: interrupted", file=sys.stderr)
        return 130
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
