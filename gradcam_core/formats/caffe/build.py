"""`load_caffe`, our loadcaffe: a Caffe net as a :class:`~gradcam_core.nets.graph.GraphNet`.

The structure comes from the prototxt and the weights are matched by layer name from the caffemodel,
as Caffe's own ``Net(proto, weights)`` does (loadcaffe built the net from the caffemodel's layer list
instead; for a deploy prototxt and its caffemodel both agree). Each layer is built by the builder
registered for its type (:mod:`gradcam_core.nets.registry`, ``@register("caffe", "<type>")`` in
:mod:`gradcam_core.nets.layers`), which gets a :class:`CaffeLayer` and its bottoms' shapes. The layers
run in prototxt order over named blobs (bottom/top names), so a builder of a layer with several
bottoms or tops (Concat, Eltwise; Slice, one module per top with ``Plan.per_top``) needs no change here.

Module numbering is loadcaffe's: one module per Caffe layer that computes something (none for input
declarations and Split), plus the "torch_view" flatten loadcaffe inserted before an InnerProduct on an
image-shaped input. VGG-16: relu5_3 = 30, pool5 = 31, torch_view = 32, fc6 = 33, ..., prob = 40.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ...errors import GradCamError
from ...nets.graph import GraphNet, InputSpec, Node
from ...nets.registry import LayerError, lookup
from . import prototxt, schema, wire


def load_caffe(
    proto_file: str | Path,
    model_file: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> GraphNet:
    """Load a Caffe net: structure from ``proto_file`` (text), weights from ``model_file`` (binary).

    Either file may be in the V1 (``layers``, enum types, legacy blob dims) or V2 (``layer``, string
    types, blob ``shape``) format. Returns a :class:`GraphNet` in eval mode on ``device`` in ``dtype``.
    Problems with the files raise :class:`GradCamError` naming the file, layer and what is wrong.
    """
    proto_name, model_name = str(proto_file), str(model_file)
    tree = prototxt.to_msg(prototxt.parse_file(proto_file), schema.NET_PARAMETER, proto_name)
    structure = schema.interpret_net(tree, proto_name, with_blobs=False)
    with wire.WireFile(model_file) as source:
        trained = schema.interpret_net(source.decode(schema.NET_PARAMETER), model_name)
        # Only layers that have blobs matter; like Caffe's CopyTrainedLayersFrom, a later layer of
        # the same name wins and layers the prototxt lacks (data, loss, accuracy) are ignored.
        weights = {spec.name: spec for spec in trained.layers if spec.blobs}
        loader = _BlobLoader(source, weights, torch.device(device), dtype)
        net = _build(structure, loader, proto_name)
    return net.eval()


#: One layer's parameter blob shapes as its builder plans them (None: any size).
BlobShapes = list[tuple[int | None, ...]]


def planned_blobs(proto_file: str | Path) -> list[tuple[schema.LayerSpec, BlobShapes]]:
    """The parameter blobs the layers of a prototxt take, without a caffemodel: (layer, blob shapes) for
    each layer with blobs, in prototxt order. These are the shapes :func:`load_caffe` checks a
    caffemodel's blobs against, the bottoms' shapes followed through the net by the same builders: the
    net is built as :func:`load_caffe` builds it, on zero-filled blobs, so a prototxt it refuses raises
    the same :class:`GradCamError` here (e.g. a Convolution weight (out, in / group, kh, kw), an
    InnerProduct weight (out, C*H*W of its bottom))."""
    proto_name = str(proto_file)
    tree = prototxt.to_msg(prototxt.parse_file(proto_file), schema.NET_PARAMETER, proto_name)
    structure = schema.interpret_net(tree, proto_name, with_blobs=False)
    recorder = _PlannedBlobs()
    _build(structure, recorder, proto_name)
    return recorder.layers


class _Blobs(Protocol):
    def load(self, spec: schema.LayerSpec, expected: BlobShapes) -> list[torch.Tensor]: ...


class _PlannedBlobs:
    """A stand-in for the caffemodel: records the blob shapes each layer asks for, supplies zeros."""

    def __init__(self) -> None:
        self.layers: list[tuple[schema.LayerSpec, BlobShapes]] = []

    def load(self, spec: schema.LayerSpec, expected: BlobShapes) -> list[torch.Tensor]:
        if expected:
            self.layers.append((spec, list(expected)))
        return [torch.zeros(tuple(1 if n is None else n for n in shape)) for shape in expected]


class _BlobLoader:
    """Reads the blobs of a prototxt layer from the caffemodel into tensors of the requested
    device/dtype, after checking their number and shapes."""

    def __init__(self, source: wire.WireFile, weights: dict[str, schema.LayerSpec],
                 device: torch.device, dtype: torch.dtype) -> None:
        self.source, self.weights, self.device, self.dtype = source, weights, device, dtype

    def load(self, spec: schema.LayerSpec, expected: BlobShapes) -> list[torch.Tensor]:
        if not expected:
            return []
        trained = self.weights.get(spec.name)
        if trained is None:
            raise GradCamError(f"layer '{spec.name}' ({spec.type}) has no weights in '{self.source.path}'")
        if len(trained.blobs) != len(expected):
            what = {1: " (weight only)", 2: " (weight and bias)"}.get(len(expected), "") if spec.type in (
                "Convolution", "InnerProduct", "Deconvolution") else ""
            raise GradCamError(
                f"layer '{spec.name}' ({spec.type}): expected {len(expected)} blobs{what}, "
                f"'{self.source.path}' has {len(trained.blobs)}"
            )
        return [self._read(spec, i, blob, shape) for i, (blob, shape) in enumerate(zip(trained.blobs, expected))]

    def _read(self, spec: schema.LayerSpec, index: int, blob: schema.BlobSpec,
              expected: tuple[int | None, ...]) -> torch.Tensor:
        if not blob.matches(expected):
            raise GradCamError(
                f"layer '{spec.name}' ({spec.type}) blob {index}{_blob_role(spec.type, index)}: "
                f"expected shape {schema.format_shape(expected)}, got {schema.format_shape(blob.shape)} "
                f"in '{self.source.path}'"
            )
        shape = blob.shape[len(blob.shape) - len(expected) :]  # legacy blobs: the trailing dims
        count = math.prod(shape)
        stored = getattr(torch, blob.dtype)
        mapped = self.source.mapped(blob.data, count) if stored == self.dtype and self.device.type == "cpu" else None
        if mapped is not None:  # the file's bytes themselves, copy-on-write: no read, no copy
            return torch.from_numpy(mapped).view(shape)
        tensor = torch.empty(count, dtype=stored)
        self.source.read(blob.data, tensor.numpy())
        tensor = tensor.view(shape)
        if tensor.dtype != self.dtype or self.device.type != "cpu":
            tensor = tensor.to(device=self.device, dtype=self.dtype)
        return tensor


def _blob_role(layer_type: str, index: int) -> str:
    """" (weight)" / " (bias)" / " (mean)" ...: what blob ``index`` of a layer type holds, for messages."""
    roles = {"BatchNorm": ("mean", "variance", "scale factor"), "PReLU": ("slope",), "Scale": ("scale", "bias"),
             "Bias": ("bias",)}.get(layer_type, ("weight", "bias"))
    return f" ({roles[index]})" if index < len(roles) else ""


class CaffeLayer:
    """What a builder sees of one Caffe layer: ``name``, ``type``, ``bottoms``, ``tops``,
    ``input_shapes`` (an input layer's declared shapes, batch axis included), ``param(name)`` (the
    typed parameter message, all defaults if absent: ``.get``, ``.has``, ``.all``) and
    ``enum(param, field)`` (an enum field's value by name, e.g. "MAX"; None for a number caffe.proto
    does not name)."""

    def __init__(self, spec: schema.LayerSpec) -> None:
        self.spec = spec
        self.name, self.type, self.bottoms, self.tops = spec.name, spec.type, spec.bottoms, spec.tops
        self.input_shapes = spec.input_shapes

    def param(self, name: str) -> schema.Msg:
        return self.spec.param(name)

    def enum(self, param: str, field: str) -> str | None:
        msg = self.spec.param(param)
        names = {number: name for name, number in msg.type.by_name[field].enum_values.items()}
        return names.get(msg.get(field))


def _build(structure: schema.NetSpec, loader: _Blobs, proto_name: str) -> GraphNet:
    shapes: dict[str, schema.Shape] = {}  # blob name -> shape, as layers produce them
    alias: dict[str, str] = {}  # Split tops -> the blob they stand for
    inputs: list[tuple[str, schema.Shape]] = []
    split_layers: dict[str, str] = {}  # Split layer name -> the blob it passes on
    nodes: list[Node] = []
    modules: list[nn.Module] = []
    _check_blobs(structure, proto_name)
    for spec in structure.layers:
        bottoms = tuple(alias.get(b, b) for b in spec.bottoms)
        builder = lookup("caffe", spec.type, f"layer '{spec.name}' has type '{spec.type}'")
        try:
            plan = builder(CaffeLayer(spec), [shapes[b] for b in bottoms])
            built = plan.build(loader.load(spec, plan.blob_shapes))
        except LayerError as err:
            raise GradCamError(f"layer '{spec.name}' ({spec.type}): {err}") from None
        out_shapes = [s for s in plan.out_shapes if s is not None]
        assert len(out_shapes) == len(plan.out_shapes)  # Caffe builders give every top its shape
        for top, shape in zip(spec.tops, out_shapes):
            shapes[top] = shape
            alias.pop(top, None)
        if not built:
            if bottoms:
                alias.update((top, bottoms[0]) for top in spec.tops if top != bottoms[0])
                split_layers[spec.name] = bottoms[0]
            else:
                inputs.extend(zip(spec.tops, out_shapes))
            continue
        if plan.per_top:  # one module per top, each reading the bottoms
            if len(built) != len(spec.tops):
                raise GradCamError(f"layer '{spec.name}' ({spec.type}): built {len(built)} modules for "
                                   f"{len(spec.tops)} tops")
            for (name, module), top in zip(built, spec.tops):
                nodes.append(Node(name, spec.type, bottoms, (top,), len(bottoms) == 1 and bottoms == (top,)))
                modules.append(module)
            continue
        # the layer's modules run one after the other: the first reads the bottoms, the last writes the tops
        sources = bottoms
        for k, (name, module) in enumerate(built):
            targets = spec.tops if k == len(built) - 1 else (f"{spec.name}/{name}",)
            in_place = len(sources) == 1 and tuple(targets) == sources
            nodes.append(Node(name, spec.type if name == spec.name else name, sources, tuple(targets), in_place))
            modules.append(module)
            sources = tuple(targets)
    if not inputs:
        raise GradCamError(f"{proto_name}: the net declares no input (input/input_dim, input_shape or an Input layer)")
    image, image_shape = inputs[0]
    other_inputs = {name for name, _ in inputs[1:]}
    for node in nodes:
        for bottom in node.bottoms:
            if bottom in other_inputs:
                raise GradCamError(f"{proto_name}: layer '{node.name}' reads a second input '{bottom}'; "
                                   "only single-input nets are supported")
    if len(image_shape) != 3:
        raise GradCamError(f"{proto_name}: input '{image}' must be (N, C, H, W), is declared with "
                           f"{len(image_shape) + 1} axes")
    chain = _loadcaffe_chain(nodes, modules, image)
    if chain:
        # The original's semantics: loadcaffe made every ReLU nn.ReLU(true), in place on the module
        # before it whatever the prototxt said (the original's activations of conv5 were rectified),
        # and nothing else in place (a Dropout on fc7 in the prototxt was a separate nn.Dropout).
        nodes = [replace(node, in_place=node.type == "ReLU" and k > 0 and node.bottoms == nodes[k - 1].tops)
                 for k, node in enumerate(nodes)]
    _rectify_in_place(nodes, modules)
    # A net the original could have run (through loadcaffe, in Torch7): explain's guided forward
    # reproduces its numerics. Any other net has no Torch7 original to match, and that path (a
    # Python loop over groups) would be slow on depthwise convolutions.
    return GraphNet(nodes, modules, InputSpec(image, *image_shape), torch7_ties=chain,
                    aliases={**split_layers, **alias})


def _check_blobs(structure: schema.NetSpec, proto_name: str) -> None:
    """Caffe's rules for blob names, checked before any weight is read (Net::Init): a layer reads only
    blobs an earlier layer wrote (so there are no cycles: layers run in file order), and top i may
    name an existing blob only as bottom i (in place; Net::AppendTop)."""
    writers: dict[str, str] = {}  # blob name -> the layer that first wrote it
    for spec in structure.layers:
        for b in spec.bottoms:
            if b not in writers:
                raise GradCamError(f"{proto_name}: layer '{spec.name}' reads blob '{b}', which no earlier layer produces")
        for i, top in enumerate(spec.tops):
            if top in spec.tops[:i]:
                raise GradCamError(f"{proto_name}: layer '{spec.name}' names top '{top}' twice")
            in_place = i < len(spec.bottoms) and spec.bottoms[i] == top
            if top in writers and not in_place:
                raise GradCamError(f"{proto_name}: blob '{top}' is written by two layers, '{writers[top]}' and "
                                   f"'{spec.name}' (a layer may rewrite a blob only in place, as top and bottom)")
            writers.setdefault(top, spec.name)


#: The layer types loadcaffe built modules for (plus the flatten it inserted before an InnerProduct).
LOADCAFFE_TYPES = frozenset({"Convolution", "Pooling", "ReLU", "LRN", "InnerProduct", "Dropout", "Softmax",
                             "Sigmoid", "TanH", "torch_view"})


def _loadcaffe_chain(nodes: list[Node], modules: list[nn.Module], image: str) -> bool:
    """Whether loadcaffe could have built this net: a chain (each node reads the one blob the node
    before it wrote), only loadcaffe's layer types, no grouped convolution, no leaky ReLU."""
    source = (image,)
    for node, module in zip(nodes, modules):
        if node.bottoms != source or len(node.tops) != 1 or node.type not in LOADCAFFE_TYPES:
            return False
        if (isinstance(module, nn.Conv2d) and module.groups != 1) or type(module) is nn.LeakyReLU:
            return False
        source = node.tops
    return True


#: Layer types whose module always returns a new tensor that its backward does not keep: a ReLU may
#: rectify their output in place.
_FRESH_OUTPUT = ("Convolution", "InnerProduct", "Deconvolution", "BatchNorm", "Scale", "Bias", "Eltwise")


def _rectify_in_place(nodes: list[Node], modules: list[nn.Module]) -> None:
    """Make a ReLU in place where the prototxt has it in place (bottom == top, as VGG's, AlexNet's and
    ResNet's are) and its blob is the fresh output of a convolution, inner product, BatchNorm, Scale,
    Bias or Eltwise (:data:`_FRESH_OUTPUT`): Caffe and loadcaffe (``nn.ReLU(true)``) rectified that
    blob itself, and later readers of the name see the rectified values either way. Saves allocating
    every activation twice (6% of a guided batch of 8 on VGG-16). Never the input image, a blob that
    a Split makes visible under another name, or a blob another layer has read first (it may have
    kept it for its backward); the other in-place layers (BatchNorm, Scale, Dropout, ...) run out of
    place, so no module overwrites a tensor autograd keeps."""
    writer: dict[str, str] = {}
    read_since_written: set[str] = set()
    for node, module in zip(nodes, modules):
        if (type(module) is nn.ReLU and len(node.bottoms) == 1 and node.bottoms == node.tops
                and node.bottoms[0] not in read_since_written
                and writer.get(node.bottoms[0]) in _FRESH_OUTPUT):
            module.inplace = True
        read_since_written.update(node.bottoms)
        read_since_written.difference_update(node.tops)
        writer.update((top, node.type) for top in node.tops)
