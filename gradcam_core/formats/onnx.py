"""ONNX files -> a torch module that Grad-CAM and guided backprop can run on: ``load_onnx(path)``.

ONNX runtimes compute no gradients, so the graph is converted to torch (onnx2torch builds a
``torch.fx.GraphModule`` with one submodule per ONNX node) and explained there like any torch model.
Before conversion the model is prepared so that onnx2torch can take it:

* **constant folding**: ``Constant`` nodes, and nodes whose inputs are all constants (``Identity`` of
  an initializer, ``Cast``, ``Transpose`` or ``Mul`` of weights, ...), are replaced by initializers
  holding their values (computed by ``onnx.reference``). onnx2torch's Conv, Gemm and
  BatchNormalization converters read weights from initializers only, and torch's exporter feeds
  weights it has de-duplicated (equal tensors, e.g. the zero biases of a randomly initialised ResNet)
  through ``Identity`` nodes;
* **Gelu** (opset 20+, torch's export of ``nn.GELU`` there; no onnx2torch converter) is written out
  in the Erf (or Tanh) operators torch exports it as at lower opsets;
* **opset downgrade** (``onnx.version_converter``, to opset 17), only when some node's operator has
  no onnx2torch converter at the model's opset and that opset is newer than 17: onnx2torch 1.5.15
  knows the operator versions up to opset 17 (Pad-19, Reshape-19, ReduceMean-18 ... are missing),
  while torch's exporter writes opset 18-20 by default. Pad, Split and ConstantOfShape, which the
  version converter cannot take back, are kept as they are where they mean the same at opset 17;
* **shape inference** (``onnx.shape_inference.infer_shapes``, which onnx2torch's ``convert`` runs
  itself): some converters read the inferred shapes.

Layers are named as in the ONNX file: by NODE NAME (``"/layer4/layer4.1/relu_1/Relu"``) or by the
name of the node's OUTPUT TENSOR (``"/layer4/layer4.1/relu_1/Relu_output_0"``). onnx2torch names a
node's submodule ``node.name`` with ``.`` replaced by ``/`` and a leading ``/`` stripped (the op type
for an unnamed node, ``_1``, ``_2`` ... for repeats), which is neither reversible nor always unique;
the nodes are therefore given unique module names before conversion and :meth:`OnnxNet.resolve_layer`
maps both kinds of ONNX names to them.

The modules onnx2torch makes for activations (what guided backprop sees; its guided rule applies to
``nn.ReLU`` modules only, as for every torch model): Relu -> ``nn.ReLU``; Clip(0, none) ->
``nn.ReLU``; Clip(0, 6) (torch's ReLU6) -> ``nn.ReLU6``; other Clips -> a clamp module; Sigmoid ->
``nn.Sigmoid``; HardSwish -> ``nn.Hardswish``; HardSigmoid -> a clamp module; LeakyRelu ->
``nn.LeakyReLU``; Tanh -> a function module; Softmax -> ``nn.Softmax`` (opset >= 13) or a
flatten-softmax module (older opsets). torch exports ``nn.SiLU`` as Sigmoid and Mul (two modules)
and ``nn.GELU`` as Div, Erf, Add, Mul, Mul (or one Gelu node at opset 20, written out as above), so
an activation module of the torch model is not always one module of the converted one.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import GradCamError
from ..fileio import open_regular
from .synset import MAX_SYNSET_BYTES, parse_synset

if TYPE_CHECKING:
    import numpy as np
    import onnx

# The newest opset whose operator versions onnx2torch 1.5.15 has converters for.
ONNX2TORCH_MAX_OPSET = 17

# Operators never folded: their value is not a function of their inputs, or they hold subgraphs.
_NOT_FOLDED = {
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
    "Bernoulli", "Dropout", "If", "Loop", "Scan", "SequenceMap",
}
# TensorProto data types of opset 9 (float, uint8, int8, uint16, int16, int32, int64, bool, float16,
# double, uint32, uint64): ConstantOfShape-9 takes a value of any of them.
_OPSET9_TYPES = {1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13}
FOLD_LIMIT_BYTES = 256 << 20
"""Constant folding computes at most this many bytes (all folded values together), or
:data:`FOLD_LIMIT_FACTOR` times the model's size if that is more (see :func:`fold_limit`)."""
FOLD_LIMIT_FACTOR = 4
_HIDDEN_DOMAIN = "gradcam_core.kept"  # nodes the opset downgrade must leave alone (see _downgrade)
_SHOWN_HEAD, _SHOWN_TAIL = 5, 15  # names listed for an unknown layer: the first and the last ones

# The model's own explaining settings, in the ONNX file's ``metadata_props`` (written by
# ``gradcam_core.convert``; see :func:`read_gradcam_metadata`).
METADATA_PREPROCESSING = "gradcam_core.preprocessing"
"""JSON object: the fields of :class:`gradcam_core.image.preprocessing.Preprocessing` but the mean
image, ``{"channel_order": "bgr"|"rgb", "value_scale": float, "mean": [floats] or null,
"input_scale": float, "std": [floats] or null}``."""
METADATA_INPUT_SIZE = "gradcam_core.input_size"
"""``"HxW"`` (e.g. ``"224x224"``): the input size to explain at when none is asked for."""
METADATA_CLASS_NAMES = "gradcam_core.class_names"
"""The class names file's text (``synset_words.txt`` format, one line per output)."""
PREPROCESSING_FIELDS = ("channel_order", "value_scale", "mean", "input_scale", "std")
_MAX_METADATA_CHARS = {METADATA_PREPROCESSING: 4096, METADATA_INPUT_SIZE: 32,
                       METADATA_CLASS_NAMES: MAX_SYNSET_BYTES}


class OnnxNet(nn.Module):
    """An ONNX model converted to torch: ``forward(x)`` maps the model's single input, (N, C, H, W)
    for an image model, to its single output (e.g. (N, K) class scores).

    Attributes:
        net: the onnx2torch ``torch.fx.GraphModule`` (one submodule per ONNX node).
        input_name, output_name: the ONNX graph's input and output tensor names.
        input_shape: the input's (C, H, W) as declared, None for a dynamic or undeclared axis (all
            None when the input is not 4-D).
        batch_size: the input's batch size N when the file fixes it (exports without a dynamic
            batch axis often bake N = 1 into their reshapes: feed such a model N images at a
            time), None when dynamic.
        nodes: ONNX node name -> module path in :attr:`net`, in graph order.
        tensors: ONNX output tensor name -> (node name, output index, number of node outputs).
        metadata: the file's own explaining settings (:func:`read_gradcam_metadata`), checked.
    """

    def __init__(self, net: nn.Module, input_name: str, output_name: str,
                 input_shape: tuple[int | None, int | None, int | None], batch_size: int | None,
                 nodes: dict[str, str], tensors: dict[str, tuple[str, int, int]],
                 op_types: dict[str, str], source: str, metadata: dict[str, object] | None = None) -> None:
        super().__init__()
        self.net = net
        self.input_name, self.output_name, self.input_shape = input_name, output_name, input_shape
        self.batch_size = batch_size
        self.nodes, self.tensors, self._op_types, self._source = nodes, tensors, op_types, source
        self.metadata = metadata or {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input -> its output."""
        return self.net(x)

    @property
    def layer_names(self) -> list[str]:
        """The ONNX node names, in graph order."""
        return list(self.nodes)

    def named_layers(self) -> list[tuple[str, nn.Module]]:
        """(ONNX node name, its torch module) of every node, in graph order: the names a layer
        list shows (:func:`gradcam_core.engine.layers.spatial_layers`) and :meth:`resolve_layer`
        takes back. Nodes onnx2torch made no submodule for are left out."""
        out = []
        for node, path in self.nodes.items():
            try:
                out.append((node, self.net.get_submodule(path)))
            except AttributeError:
                continue
        return out

    def resolve_layer(self, layer: str | nn.Module) -> tuple[nn.Module, nn.Module]:
        """(grad_module, value_module) for Grad-CAM at ``layer``, an ONNX node name or output tensor
        name (a node name wins where one string is both); both are the node's module: the gradient
        and the activations are those of the named output itself. Unknown names raise
        :class:`GradCamError` listing valid ones."""
        if isinstance(layer, nn.Module):
            return layer, layer
        name = str(layer)
        node = name if name in self.nodes else None
        if node is None and name in self.tensors:
            node, index, count = self.tensors[name]
            if count > 1:
                raise GradCamError(
                    f"layer {name!r}: tensor {name!r} is output {index} of node {node!r} "
                    f"({self._op_types[node]}), which has {count} outputs; name a layer with one output"
                )
        if node is None:
            if name == self.input_name:
                raise GradCamError(f"layer {name!r} is the input of {self._source}, not a layer's output")
            raise GradCamError(
                f"unknown layer {name!r} in {self._source}: give an ONNX node name or output tensor name; "
                f"node names: {_shown(list(self.nodes))}; output tensor names: {_shown(list(self.tensors))}"
            )
        module = self.net.get_submodule(self.nodes[node])
        return module, module


def load_onnx(path: str | os.PathLike[str], device: str | torch.device = "cpu", *,
              strip_softmax: bool = False, dtype: torch.dtype = torch.float32) -> OnnxNet:
    """Load an ONNX model as a torch module in eval mode on ``device`` in ``dtype``.

    Args:
        path: the ``.onnx`` file (external data, if any, beside it as the file says).
        strip_softmax: if the graph's output is computed by a final Softmax, drop it, so that the
            model outputs the Softmax's input (logits) and Grad-CAM explains logits (as the
            classifier does for Caffe nets).

    Raises :class:`GradCamError` (one line) for a file that is not a valid ONNX model, a model with
    other than one input or one output, and an operator onnx2torch cannot convert (naming the
    operator and the node).
    """
    from ..extras import require

    require("onnx")
    source = str(path)
    model = _read_model(path)
    metadata = read_gradcam_metadata(model, source)
    model = _prepare(model, source)
    graph = model.graph
    if strip_softmax:
        _strip_softmax(graph)
    input_name, output_name = graph.input[0].name, graph.output[0].name
    input_shape, batch_size = _input_shape(graph.input[0])

    # The name users know each node by: its ONNX name (its module path when unnamed or repeated).
    originals: list[str] = []
    op_types: dict[str, str] = {}
    nodes: dict[str, str] = {}
    tensors: dict[str, tuple[str, int, int]] = {}
    for node, module_path in zip(graph.node, _module_names(graph)):
        original = node.name if node.name and node.name not in nodes else module_path
        node.name = module_path  # onnx2torch names the submodule exactly this
        originals.append(original)
        nodes[original] = module_path
        op_types[original] = node.op_type
        for i, out in enumerate(node.output):
            if out:
                tensors[out] = (original, i, len(node.output))
    _check_converters(model, originals, source)
    net = _convert(model, originals, source)
    onnx_net = OnnxNet(net, input_name, output_name, input_shape, batch_size, nodes, tensors, op_types, source,
                       metadata)
    return onnx_net.to(device=torch.device(device), dtype=dtype).eval()


# --- reading -------------------------------------------------------------------------------------


def _read_model(path: str | os.PathLike[str]):
    """The ModelProto in ``path``, checked, with external tensor data read in."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        with open_regular(path) as f:
            data = f.read()
    except OSError as exc:
        raise GradCamError(f"cannot read ONNX model '{path}': {exc.strerror or exc}") from None
    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise GradCamError(f"{path}: not a valid ONNX model (protobuf: {_first_line(exc)})") from None
    if not model.HasField("graph") or not model.ir_version or not model.opset_import:
        raise GradCamError(f"{path}: not a valid ONNX model (no graph, IR version or opset)")
    external = _load_external_data(model, Path(path).parent, str(path))
    try:
        # The file's bytes (no re-serialisation), or, with external data (which the checker would
        # look for relative to the working directory), the model with that data read in, if it
        # fits one protobuf message.
        if not external:
            onnx.checker.check_model(data)
        elif model.ByteSize() < 2**31:
            onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise GradCamError(f"{path}: not a valid ONNX model ({_first_line(exc)})") from None
    return model


def _load_external_data(model, folder: Path, source: str) -> bool:
    """Read tensors stored beside the model (``data_location: EXTERNAL``) through ``open_regular``:
    relative paths inside the model's folder only (symbolic links resolved: one leading out is
    refused), a pipe or device refused, offsets and lengths checked against the file. Whether there
    were any."""
    from onnx import TensorProto
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    tensors = list(model.graph.initializer)
    tensors += [a.t for node in model.graph.node for a in node.attribute if a.HasField("t")]
    external = False
    for tensor in tensors:
        if not uses_external_data(tensor):
            continue
        external = True
        try:
            info = ExternalDataInfo(tensor)
        except ValueError as exc:  # a negative or non-numeric offset or length
            raise GradCamError(f"{source}: tensor '{tensor.name}' has bad external data: {_first_line(exc)}") from None
        location = PurePath(info.location)
        if not info.location or location.is_absolute() or ".." in location.parts:
            raise GradCamError(f"{source}: tensor '{tensor.name}' names external data '{info.location}' "
                               "outside the model's folder")
        file = folder / location
        real, inside = os.path.realpath(file), os.path.realpath(folder)
        if os.path.commonpath([real, inside]) != inside:  # a symbolic link on the way leads out
            raise GradCamError(f"{source}: tensor '{tensor.name}': external data '{info.location}' is a "
                               "symbolic link leading outside the model's folder")
        try:
            with open_regular(file) as f:
                size = os.fstat(f.fileno()).st_size
                try:
                    same = os.path.samestat(os.fstat(f.fileno()), os.stat(real))
                except OSError:
                    same = False
                if not same:  # the link was changed after the check
                    raise GradCamError(f"{source}: tensor '{tensor.name}': external data '{info.location}' "
                                       "changed while it was opened")
                offset = int(info.offset or 0)
                length = size - offset if info.length is None else int(info.length)
                if offset < 0 or length < 0 or offset + length > size:
                    raise GradCamError(f"{source}: tensor '{tensor.name}' wants bytes {offset}..{offset + length} "
                                       f"of '{file}', which has {size}")
                f.seek(offset)
                data = f.read(length)
        except OSError as exc:
            raise GradCamError(f"{source}: cannot read external data '{file}' of tensor '{tensor.name}': "
                               f"{exc.strerror or exc}") from None
        tensor.raw_data = data
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]
    return external


# --- the file's own settings --------------------------------------------------------------------


def read_gradcam_metadata(model: onnx.ModelProto, source: str) -> dict[str, object]:
    """The explaining settings a model file carries in its ``metadata_props``, checked: for each of
    the keys present,

    * ``"preprocessing"``: dict of the :data:`PREPROCESSING_FIELDS` in :data:`METADATA_PREPROCESSING`
      (``channel_order`` str; ``value_scale``, ``input_scale`` finite floats, 1.0 when left out;
      ``mean``, ``std`` lists of finite floats or None);
    * ``"input_size"``: (H, W) from :data:`METADATA_INPUT_SIZE`;
    * ``"class_names"``: :class:`~gradcam_core.formats.synset.ClassNames` of :data:`METADATA_CLASS_NAMES`.

    Other keys are ignored. A value that is too long, not JSON, of the wrong type or not finite raises
    :class:`GradCamError` naming ``source`` and the key."""
    props = {p.key: p.value for p in model.metadata_props if p.key in _MAX_METADATA_CHARS}
    out: dict[str, object] = {}
    for key, value in props.items():
        if len(value) > _MAX_METADATA_CHARS[key]:
            raise GradCamError(f"{source}: metadata '{key}' is longer than {_MAX_METADATA_CHARS[key]} characters")
    if METADATA_PREPROCESSING in props:
        out["preprocessing"] = _metadata_preprocessing(props[METADATA_PREPROCESSING], source)
    if METADATA_INPUT_SIZE in props:
        out["input_size"] = _metadata_input_size(props[METADATA_INPUT_SIZE], source)
    if METADATA_CLASS_NAMES in props:
        out["class_names"] = parse_synset(props[METADATA_CLASS_NAMES],
                                          f"{source} metadata '{METADATA_CLASS_NAMES}'")
    return out


def _metadata_preprocessing(text: str, source: str) -> dict[str, object]:
    import json
    import math

    where = f"{source}: metadata '{METADATA_PREPROCESSING}'"

    def refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not a finite number")

    try:
        value = json.loads(text, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; so are huge ints
        raise GradCamError(f"{where} is not valid JSON ({_first_line(exc)})") from None
    if not isinstance(value, dict):
        raise GradCamError(f"{where} must be a JSON object with {', '.join(PREPROCESSING_FIELDS)}")
    unknown = sorted(set(value) - set(PREPROCESSING_FIELDS))
    if unknown:
        raise GradCamError(f"{where}: unknown field {unknown[0]!r} (the fields: {', '.join(PREPROCESSING_FIELDS)})")

    def number(x: object) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    fields: dict[str, object] = {}
    order = value.get("channel_order")
    if order not in ("bgr", "rgb"):
        raise GradCamError(f"{where}: channel_order must be \"bgr\" or \"rgb\", not {json.dumps(order)[:40]}")
    fields["channel_order"] = order
    for name in ("value_scale", "input_scale"):
        x = value.get(name, 1.0)
        if not number(x) or x <= 0:
            raise GradCamError(f"{where}: {name} must be a positive finite number, not {json.dumps(x)[:40]}")
        fields[name] = float(x)
    for name in ("mean", "std"):
        x = value.get(name)
        if x is not None and (not isinstance(x, list) or len(x) not in (1, 3) or not all(map(number, x))):
            raise GradCamError(f"{where}: {name} must be null or a list of 1 or 3 finite numbers, "
                               f"not {json.dumps(x)[:60]}")
        fields[name] = None if x is None else [float(v) for v in x]
    return fields


def _metadata_input_size(text: str, source: str) -> tuple[int, int]:
    import re

    match = re.fullmatch(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})", text.strip())
    if match is None:
        raise GradCamError(f"{source}: metadata '{METADATA_INPUT_SIZE}' must be HxW (e.g. 224x224), "
                           f"not {text[:40]!r}")
    return int(match.group(1)), int(match.group(2))


# --- preparing -----------------------------------------------------------------------------------


def _prepare(model, source: str):
    """The input/output checks, constant folding and the opset downgrade (see the module docstring;
    onnx2torch's ``convert`` runs the shape inference)."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise GradCamError(f"{source}: the model has {len(inputs)} inputs ({names}); "
                           "only models with one (image) input are supported")
    if len(inputs) != len(graph.input):  # initializers listed as inputs (old exporters): not inputs
        del graph.input[:]
        graph.input.extend(inputs)
    if len(graph.output) != 1:
        names = ", ".join(repr(o.name) for o in graph.output)
        raise GradCamError(f"{source}: the model has {len(graph.output)} outputs ({names}); "
                           "only models with one output are supported")
    _expand_gelu(model)
    limit = fold_limit(model)
    fold_constants(model, source, limit)
    opset = _default_opset(model)
    if opset > ONNX2TORCH_MAX_OPSET and _unconvertible(model):
        model = _downgrade(model, source, opset)
        fold_constants(model, source, limit)  # the converter may have turned attributes into Constant nodes
    return model


def _expand_gelu(model) -> None:
    """Gelu nodes (opset 20+, where torch exports ``nn.GELU`` as one) written out in the operators
    torch's exporter uses for it at lower opsets, which onnx2torch converts: ``x * 0.5 * (1 +
    erf(x / sqrt 2))``, or with ``approximate="tanh"`` ``x * 0.5 * (1 + tanh(sqrt(2 / pi) * (x +
    0.044715 x^3)))``. The last node keeps the Gelu's name and output tensor."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    if not any(n.op_type == "Gelu" and n.domain in ("", "ai.onnx") for n in graph.node):
        return
    names = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    names |= {o for n in graph.node for o in n.output}

    def fresh(base: str) -> str:
        return unique_name(base, names)

    def constant(base: str, value: float) -> str:
        name = fresh(base)
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    nodes = []
    for node in graph.node:
        if node.op_type != "Gelu" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        x, y, name = node.input[0], node.output[0], node.name or "Gelu"
        tanh = any(a.name == "approximate" and a.s == b"tanh" for a in node.attribute)
        steps: list[tuple[str, list[str]]] = []  # (op, inputs); each step's output feeds the next
        if tanh:
            steps = [("Mul", [x, x]), ("Mul", ["<", x]), ("Mul", ["<", constant(f"{name}/c", 0.044715)]),
                     ("Add", ["<", x]), ("Mul", ["<", constant(f"{name}/k", float(np.sqrt(2 / np.pi)))]),
                     ("Tanh", ["<"])]
        else:
            steps = [("Div", [x, constant(f"{name}/sqrt2", float(np.sqrt(2.0)))]), ("Erf", ["<"])]
        steps += [("Add", ["<", constant(f"{name}/one", 1.0)]), ("Mul", [x, "<"]),
                  ("Mul", ["<", constant(f"{name}/half", 0.5)])]
        previous = ""
        for i, (op, inputs) in enumerate(steps):
            last = i == len(steps) - 1
            out = y if last else fresh(f"{y}/{op.lower()}{i}")
            nodes.append(helper.make_node(op, [previous if v == "<" else v for v in inputs], [out],
                                          name=name if last else f"{name}/{op}{i}"))
            previous = out
    del graph.node[:]
    graph.node.extend(nodes)


def _downgrade(model, source: str, opset: int):
    """The model at opset 17 (``onnx.version_converter``). The converter has no adapter back for
    Pad-18/19, Split-18 and ConstantOfShape-20; those nodes mean the same at opset 17 when they use
    nothing the newer version added (Pad: an ``axes`` input, mode "wrap"; Split: ``num_outputs``;
    ConstantOfShape: a new value type), so they are kept out of its way (in a private domain) and
    restored unchanged."""
    import onnx

    hidden = [n for n in model.graph.node if n.domain in ("", "ai.onnx") and _same_at_17(n)]
    for node in hidden:
        node.domain = _HIDDEN_DOMAIN
    model.opset_import.append(onnx.helper.make_opsetid(_HIDDEN_DOMAIN, 1))
    try:
        model = onnx.version_converter.convert_version(model, ONNX2TORCH_MAX_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter raises bare RuntimeErrors and more
        for node in hidden:
            node.domain = ""
        node = model.graph.node[_unconvertible(model)[0]]
        raise GradCamError(
            f"{source}: operator {_op_name(node)} (node {node.name!r}) at opset {opset} has no onnx2torch "
            f"converter and the model could not be converted to opset {ONNX2TORCH_MAX_OPSET} "
            f"({_first_line(exc)}); export it at opset {ONNX2TORCH_MAX_OPSET} or lower"
        ) from None
    for node in model.graph.node:
        if node.domain == _HIDDEN_DOMAIN:
            node.domain = ""
    kept = [o for o in model.opset_import if o.domain != _HIDDEN_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def _same_at_17(node) -> bool:
    """Whether ``node`` (Pad, Split or ConstantOfShape of a newer opset) means the same at opset 17."""
    if node.op_type == "Pad":
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        return (len(node.input) < 4 or not node.input[3]) and mode != b"wrap"
    if node.op_type == "Split":
        return not any(a.name == "num_outputs" for a in node.attribute)
    if node.op_type == "ConstantOfShape":  # 20, 21: new value types (bfloat16, float8, 4-bit) only
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        return value is None or value.data_type in _OPSET9_TYPES
    return False


def _default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _unconvertible(model) -> list[int]:
    """Indices of the nodes onnx2torch has no converter for at the model's opsets."""
    from onnx2torch.node_converters.registry import get_converter

    opsets = {o.domain: o.version for o in model.opset_import}
    missing = []
    for index, node in enumerate(model.graph.node):
        try:
            get_converter(operation_type=node.op_type, version=opsets.get(node.domain, 1), domain=node.domain)
        except NotImplementedError:
            missing.append(index)
    return missing


def _op_name(node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def fold_limit(model: onnx.ModelProto) -> int:
    """The most bytes :func:`fold_constants` may compute for a model: the larger of
    :data:`FOLD_LIMIT_BYTES` and :data:`FOLD_LIMIT_FACTOR` times the model's size."""
    return max(FOLD_LIMIT_BYTES, FOLD_LIMIT_FACTOR * model.ByteSize())


def fold_constants(model: onnx.ModelProto, source: str = "the ONNX model", limit: int | None = None) -> None:
    """Replace, in place, Constant nodes and nodes whose inputs are all constant by initializers of
    their values (computed by ``onnx.reference``; nodes it cannot evaluate, random ones and nodes
    with subgraphs stay). Initializers nothing reads any more are dropped.

    A node's output shape is inferred (``onnx.shape_inference.infer_node_outputs``, from its
    constant inputs) before it is computed: a node whose output shape cannot be inferred is left to
    onnx2torch, and one whose outputs, or all folded values together, would take more than
    ``limit`` bytes (default :func:`fold_limit`; a tiny file can ask ConstantOfShape, Expand, Tile or
    Range for gigabytes) raises :class:`GradCamError` naming ``source`` and the node."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    limit = fold_limit(model) if limit is None else limit
    total = 0
    graph = model.graph
    values: dict[str, np.ndarray | None] = {t.name: None for t in graph.initializer}  # numpy once computed
    initializers = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    opsets = {o.domain: o.version for o in model.opset_import}
    kept, folded = [], []
    for node in graph.node:
        foldable = (
            node.domain in ("", "ai.onnx") and node.op_type not in _NOT_FOLDED
            and all(not i or i in values for i in node.input)
            and not any(o in outputs for o in node.output)
            and not any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute)
            and (node.input or node.op_type == "Constant")
        )
        if not foldable:
            kept.append(node)
            continue
        feeds: dict[str, np.ndarray] = {}
        for name in node.input:
            if name:
                value = values[name]
                if value is None:
                    value = values[name] = numpy_helper.to_array(initializers[name])
                feeds[name] = value
        size = _folded_size(node, feeds, initializers, opsets)
        if size is None:  # its output shape is unknown: not computed here
            kept.append(node)
            continue
        total += size
        if size > limit or total > limit:
            what = "its outputs" if size > limit else "the constants folded up to it"
            raise GradCamError(
                f"{source}: node {node.name or node.op_type!r} ({node.op_type}): {what} would take "
                f"{_megabytes(size if size > limit else total)}, more than the {_megabytes(limit)} allowed for "
                f"constants (the larger of {_megabytes(FOLD_LIMIT_BYTES)} and {FOLD_LIMIT_FACTOR}x the model's size)")
        try:
            results = ReferenceEvaluator(node, opsets=opsets).run(None, feeds)
        except Exception:  # noqa: BLE001 - an op the evaluator lacks: leave it to onnx2torch
            kept.append(node)
            continue
        for name, value in zip(node.output, results):
            if name:
                tensor = numpy_helper.from_array(value, name)
                values[name], initializers[name] = value, tensor
                folded.append(tensor)
    if folded:
        used = {i for node in kept for i in node.input} | outputs
        originals = [t for t in graph.initializer if t.name in used]
        del graph.node[:]
        graph.node.extend(kept)
        del graph.initializer[:]
        graph.initializer.extend(originals + [t for t in folded if t.name in used])
        # Stale value_info of the folded tensors would shadow nothing, but keep the graph tidy.
        folded_names = {t.name for t in folded}
        info = [v for v in graph.value_info if v.name not in folded_names]
        del graph.value_info[:]
        graph.value_info.extend(info)


_SHAPE_DATA_ELEMENTS = 4096  # constant inputs up to this size are given to shape inference as data


def _folded_size(node, feeds: dict, initializers: dict, opsets: dict[str, int]) -> int | None:
    """The bytes of ``node``'s outputs for the constant inputs ``feeds`` (name -> numpy array), from
    onnx's shape inference (given the small inputs' values: shapes, repeats, limits), without
    computing them; None when a shape or type is not known."""
    import numpy as np
    from onnx import defs, helper, shape_inference

    try:
        schema = defs.get_schema(node.op_type, opsets.get(node.domain, opsets.get("", 1)), node.domain)
        types, data = {}, {}
        for name, value in feeds.items():
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            types[name] = helper.make_tensor_type_proto(elem, list(value.shape))
            if value.size <= _SHAPE_DATA_ELEMENTS:
                data[name] = initializers[name] if name in initializers else helper.make_tensor(
                    name, elem, list(value.shape), value.flatten().tolist())
        outputs = shape_inference.infer_node_outputs(
            schema, node, types, data, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    except Exception:  # noqa: BLE001 - no schema, an inference error: the shape is not known
        return None
    total = 0
    for name in node.output:
        if not name:
            continue
        tensor_type = outputs.get(name)
        if tensor_type is None or not tensor_type.HasField("tensor_type") \
                or not tensor_type.tensor_type.HasField("shape"):
            return None
        dims = tensor_type.tensor_type.shape.dim
        if not all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
            return None
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor_type.tensor_type.elem_type).itemsize
        except Exception:  # noqa: BLE001 - strings and types numpy lacks: the widest numbers'
            itemsize = 8
        total += int(np.prod([d.dim_value for d in dims], dtype=object)) * max(itemsize, 1)
    return total


def _megabytes(size: int) -> str:
    return f"{size / (1 << 20):,.0f} MB" if size >= 1 << 20 else f"{size:,} bytes"


def _strip_softmax(graph) -> None:
    """If the graph's output is a Softmax's, make the Softmax's input the output instead."""
    from onnx import helper

    out = graph.output[0].name
    producer = next((n for n in graph.node if out in n.output), None)
    if producer is None or producer.op_type != "Softmax" or not producer.input:
        return
    logits = producer.input[0]
    if any(i.name == logits for i in graph.input):
        return
    info = next((v for v in graph.value_info if v.name == logits), None)
    new_out = helper.make_value_info(logits, graph.output[0].type) if info is None else info
    graph.node.remove(producer)
    del graph.output[:]
    graph.output.append(new_out)


def _input_shape(value_info) -> tuple[tuple[int | None, int | None, int | None], int | None]:
    """((C, H, W), N) as declared, None for dynamic or undeclared axes."""
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value_info.type.tensor_type.shape.dim]
    if len(dims) != 4:
        return (None, None, None), dims[0] if dims else None
    return (dims[1], dims[2], dims[3]), dims[0]


# --- converting ----------------------------------------------------------------------------------


def _module_names(graph) -> list[str]:
    """A unique module path per node, as close to the node name as torch allows: no ``.`` (module
    paths split at dots), not empty, no leading ``/`` (onnx2torch strips it), and not an attribute
    a torch module already has (``forward``, ``training``, ``initializers``...)."""
    from torch import fx

    taken = {"initializers"}
    names = []
    for node in graph.node:
        base = (node.name.replace(".", "/").lstrip("/") or node.op_type)
        name, k = base, 0
        while name in taken or hasattr(fx.GraphModule, name) or hasattr(nn.Module(), name):
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        names.append(name)
    return names


def _check_converters(model, originals: list[str], source: str) -> None:
    missing = _unconvertible(model)
    if missing:
        node = model.graph.node[missing[0]]
        raise GradCamError(
            f"{source}: operator {_op_name(node)} (node {originals[missing[0]]!r}) cannot be converted to "
            f"torch: onnx2torch {_onnx2torch_version()} has no converter for it at opset {_default_opset(model)}"
            + (f" ({len(missing) - 1} more unconvertible nodes)" if len(missing) > 1 else "")
        )


def _convert(model, originals: list[str], source: str) -> nn.Module:
    """onnx2torch's GraphModule; a converter's failure names the node and the operator."""
    from onnx2torch import convert

    try:
        return convert(model)
    except Exception as exc:  # noqa: BLE001 - converters raise NotImplementedError, KeyError, ValueError...
        failing = _failing_node(model, originals)
        if failing is None:  # e.g. onnx's shape inference, which convert runs first
            raise GradCamError(f"{source}: cannot convert the model to torch: {_first_line(exc)}") from None
        node, op, err = failing
        raise GradCamError(f"{source}: operator {op} (node {node!r}) cannot be converted to torch: "
                           f"{_first_line(err)}") from None


def _failing_node(model, originals: list[str]) -> tuple[str, str, BaseException] | None:
    """The first node whose onnx2torch converter raises (only run after a failed conversion)."""
    from onnx2torch.node_converters.registry import get_converter
    from onnx2torch.onnx_graph import OnnxGraph

    opsets = {o.domain: o.version for o in model.opset_import}
    graph = OnnxGraph(model.graph)
    for original, node in zip(originals, graph.nodes.values()):
        try:
            get_converter(node.operation_type, opsets.get(node.domain, 1), node.domain)(node, graph)
        except Exception as exc:  # noqa: BLE001
            return original, node.operation_type, exc
    return None


def _onnx2torch_version() -> str:
    from importlib.metadata import version

    try:
        return version("onnx2torch")
    except Exception:  # noqa: BLE001
        return "(unknown version)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _shown(names: list[str]) -> str:
    """The first and last names (the last layers are where Grad-CAM is usually taken)."""
    if len(names) <= _SHOWN_HEAD + _SHOWN_TAIL:
        return ", ".join(names)
    hidden = len(names) - _SHOWN_HEAD - _SHOWN_TAIL
    return ", ".join(names[:_SHOWN_HEAD]) + f", ... ({hidden} more) ..., " + ", ".join(names[-_SHOWN_TAIL:])


def unique_name(base: str, used: set[str]) -> str:
    """``base``, or ``base_1``, ``base_2``, ... : the first not in ``used``, which it is added to."""
    name, k = base, 0
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name
