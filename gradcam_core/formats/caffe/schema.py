"""The parts of caffe.proto (BVLC/caffe) the loader reads, and their meaning.

Three things live here:

* the message descriptors (field numbers, names, types, defaults) shared by the text parser's type
  coercion, the wire decoder and the writer;
* :class:`Msg`, the typed message tree both parsers produce (field name -> list of values);
* the interpretation of a NetParameter of either generation - V1 ``layers { type: CONVOLUTION }`` with
  legacy ``num/channels/height/width`` blobs, or V2 ``layer { type: "Convolution" }`` with ``shape``
  blobs - into ONE representation (:class:`NetSpec`, :class:`LayerSpec`, :class:`BlobSpec`), so that
  nothing after this module knows which generation a file was written in.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import GradCamError

# --------------------------------------------------------------------------------------------------
# Descriptors

#: Scalar kinds. "int32"/"int64" are signed varints (negative values take 10 bytes on the wire),
#: "uint32"/"bool"/"enum" plain varints, "float"/"double" fixed 32/64-bit little endian.
SCALAR_KINDS = ("int32", "uint32", "int64", "bool", "enum", "float", "double", "string")


@dataclass(frozen=True)
class Field:
    """One field of a message: ``kind`` is a scalar kind or "message" (then ``message`` names it)."""

    number: int
    name: str
    kind: str
    repeated: bool = False
    packed: bool = False  # written packed by Caffe ([packed = true] in caffe.proto)
    default: Any = None
    message: str | None = None
    enum: Mapping[str, int] | None = None
    #: Blob payloads (BlobProto data/diff/double_data/double_diff): the wire decoder does not decode
    #: them but records where they are (:class:`gradcam_core.caffe.wire.Segment`).
    bulk: bool = False

    @property
    def message_type(self) -> str:
        """The type name of a ``message`` field."""
        assert self.message is not None, f"field {self.name} is not a message"
        return self.message

    @property
    def enum_values(self) -> Mapping[str, int]:
        """The values of an ``enum`` field by name."""
        assert self.enum is not None, f"field {self.name} is not an enum"
        return self.enum


class MessageType:
    """A message descriptor: its fields by number and by name."""

    def __init__(self, name: str, *fields: Field) -> None:
        self.name = name
        self.by_number = {f.number: f for f in fields}
        self.by_name = {f.name: f for f in fields}

    def __repr__(self) -> str:
        return f"MessageType({self.name})"


def _f(number: int, name: str, kind: str, default: Any = None, **kw: Any) -> Field:
    if default is None and kind in SCALAR_KINDS and not kw.get("repeated"):
        default = {"string": "", "bool": False, "float": 0.0, "double": 0.0}.get(kind, 0)
    return Field(number, name, kind, default=default, **kw)


def _rep(number: int, name: str, kind: str, **kw: Any) -> Field:
    return Field(number, name, kind, repeated=True, **kw)


def _msg(number: int, name: str, message: str, repeated: bool = False) -> Field:
    return Field(number, name, "message", repeated=repeated, message=message)


POOL_METHOD = {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}
ROUND_MODE = {"CEIL": 0, "FLOOR": 1}
NORM_REGION = {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}
ENGINE = {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}
ELTWISE_OP = {"PROD": 0, "SUM": 1, "MAX": 2}

#: V1LayerParameter.LayerType -> the V2 type string Caffe's upgrade_proto.cpp gives it.
V1_LAYER_TYPES: dict[str, tuple[int, str]] = {
    "NONE": (0, ""), "ABSVAL": (35, "AbsVal"), "ACCURACY": (1, "Accuracy"), "ARGMAX": (30, "ArgMax"),
    "BNLL": (2, "BNLL"), "CONCAT": (3, "Concat"), "CONTRASTIVE_LOSS": (37, "ContrastiveLoss"),
    "CONVOLUTION": (4, "Convolution"), "DECONVOLUTION": (39, "Deconvolution"), "DATA": (5, "Data"),
    "DROPOUT": (6, "Dropout"), "DUMMY_DATA": (32, "DummyData"), "EUCLIDEAN_LOSS": (7, "EuclideanLoss"),
    "ELTWISE": (25, "Eltwise"), "EXP": (38, "Exp"), "FLATTEN": (8, "Flatten"), "HDF5_DATA": (9, "HDF5Data"),
    "HDF5_OUTPUT": (10, "HDF5Output"), "HINGE_LOSS": (28, "HingeLoss"), "IM2COL": (11, "Im2col"),
    "IMAGE_DATA": (12, "ImageData"), "INFOGAIN_LOSS": (13, "InfogainLoss"),
    "INNER_PRODUCT": (14, "InnerProduct"), "LRN": (15, "LRN"), "MEMORY_DATA": (29, "MemoryData"),
    "MULTINOMIAL_LOGISTIC_LOSS": (16, "MultinomialLogisticLoss"), "MVN": (34, "MVN"),
    "POOLING": (17, "Pooling"), "POWER": (26, "Power"), "RELU": (18, "ReLU"), "SIGMOID": (19, "Sigmoid"),
    "SIGMOID_CROSS_ENTROPY_LOSS": (27, "SigmoidCrossEntropyLoss"), "SILENCE": (36, "Silence"),
    "SOFTMAX": (20, "Softmax"), "SOFTMAX_LOSS": (21, "SoftmaxWithLoss"), "SPLIT": (22, "Split"),
    "SLICE": (33, "Slice"), "TANH": (23, "TanH"), "WINDOW_DATA": (24, "WindowData"),
    "THRESHOLD": (31, "Threshold"),
}
V1_TYPE_ENUM = {name: number for name, (number, _) in V1_LAYER_TYPES.items()}
V1_TYPE_TO_V2 = dict(V1_LAYER_TYPES.values())
V2_TO_V1_TYPE = {v2: name for name, (_, v2) in V1_LAYER_TYPES.items() if v2}

# The layer parameter messages, by their field name (identical in V1 and V2 where both have them).
_PARAM_FIELDS_V2 = {
    "convolution_param": (106, "ConvolutionParameter"), "dropout_param": (108, "DropoutParameter"),
    "flatten_param": (135, "FlattenParameter"), "inner_product_param": (117, "InnerProductParameter"),
    "input_param": (143, "InputParameter"), "lrn_param": (118, "LRNParameter"),
    "pooling_param": (121, "PoolingParameter"), "relu_param": (123, "ReLUParameter"),
    "softmax_param": (125, "SoftmaxParameter"),
    "batch_norm_param": (139, "BatchNormParameter"), "bias_param": (141, "BiasParameter"),
    "concat_param": (104, "ConcatParameter"), "crop_param": (144, "CropParameter"),
    "eltwise_param": (110, "EltwiseParameter"), "elu_param": (140, "ELUParameter"),
    "power_param": (122, "PowerParameter"), "prelu_param": (131, "PReLUParameter"),
    "reshape_param": (133, "ReshapeParameter"), "scale_param": (142, "ScaleParameter"),
    "sigmoid_param": (124, "SigmoidParameter"), "slice_param": (126, "SliceParameter"),
    "tanh_param": (127, "TanHParameter"),
}
_PARAM_FIELDS_V1 = {
    "convolution_param": (10, "ConvolutionParameter"), "dropout_param": (12, "DropoutParameter"),
    "inner_product_param": (17, "InnerProductParameter"), "lrn_param": (18, "LRNParameter"),
    "pooling_param": (19, "PoolingParameter"), "relu_param": (30, "ReLUParameter"),
    "softmax_param": (39, "SoftmaxParameter"),
    "concat_param": (9, "ConcatParameter"), "eltwise_param": (24, "EltwiseParameter"),
    "power_param": (21, "PowerParameter"), "sigmoid_param": (38, "SigmoidParameter"),
    "slice_param": (31, "SliceParameter"), "tanh_param": (37, "TanHParameter"),
}

#: Fields that widely used Caffe forks put in published deploy files, known here by name only: the
#: prototxt (text) names them, and their numbers (taken from a range caffe.proto never uses) keep
#: them apart from BVLC's own fields when a caffemodel is decoded.
_FORK_FIELD = 1000

MESSAGES: dict[str, MessageType] = {
    m.name: m
    for m in (
        MessageType(
            "NetParameter",
            _f(1, "name", "string"), _rep(3, "input", "string"), _msg(8, "input_shape", "BlobShape", True),
            _rep(4, "input_dim", "int32"), _msg(100, "layer", "LayerParameter", True),
            _msg(2, "layers", "V1LayerParameter", True),
        ),
        MessageType(
            "LayerParameter",
            _f(1, "name", "string"), _f(2, "type", "string"), _rep(3, "bottom", "string"),
            _rep(4, "top", "string"), _msg(7, "blobs", "BlobProto", True),
            *(_msg(n, name, t) for name, (n, t) in _PARAM_FIELDS_V2.items()),
        ),
        MessageType(
            "V1LayerParameter",
            # field 1 is the nested V0 layer: only its presence is looked at (V0 nets are refused).
            _msg(1, "layer", "V0LayerParameter"), _rep(2, "bottom", "string"), _rep(3, "top", "string"),
            _f(4, "name", "string"), _f(5, "type", "enum", enum=V1_TYPE_ENUM),
            _msg(6, "blobs", "BlobProto", True),
            *(_msg(n, name, t) for name, (n, t) in _PARAM_FIELDS_V1.items()),
        ),
        MessageType("V0LayerParameter", _f(1, "name", "string"), _f(2, "type", "string")),
        MessageType(
            "BlobProto",
            _f(1, "num", "int32"), _f(2, "channels", "int32"), _f(3, "height", "int32"),
            _f(4, "width", "int32"), _msg(7, "shape", "BlobShape"),
            _rep(5, "data", "float", packed=True, bulk=True), _rep(6, "diff", "float", packed=True, bulk=True),
            _rep(8, "double_data", "double", packed=True, bulk=True),
            _rep(9, "double_diff", "double", packed=True, bulk=True),
        ),
        MessageType("BlobShape", _rep(1, "dim", "int64", packed=True)),
        MessageType(
            "ConvolutionParameter",
            _f(1, "num_output", "uint32"), _f(2, "bias_term", "bool", True), _rep(3, "pad", "uint32"),
            _rep(4, "kernel_size", "uint32"), _f(5, "group", "uint32", 1), _rep(6, "stride", "uint32"),
            _f(9, "pad_h", "uint32"), _f(10, "pad_w", "uint32"), _f(11, "kernel_h", "uint32"),
            _f(12, "kernel_w", "uint32"), _f(13, "stride_h", "uint32"), _f(14, "stride_w", "uint32"),
            _f(15, "engine", "enum", enum=ENGINE), _f(16, "axis", "int32", 1), _rep(18, "dilation", "uint32"),
        ),
        MessageType(
            "PoolingParameter",
            _f(1, "pool", "enum", enum=POOL_METHOD), _f(2, "kernel_size", "uint32"), _f(3, "stride", "uint32", 1),
            _f(4, "pad", "uint32"), _f(5, "kernel_h", "uint32"), _f(6, "kernel_w", "uint32"),
            _f(7, "stride_h", "uint32"), _f(8, "stride_w", "uint32"), _f(9, "pad_h", "uint32"),
            _f(10, "pad_w", "uint32"), _f(11, "engine", "enum", enum=ENGINE),
            _f(12, "global_pooling", "bool"), _f(13, "round_mode", "enum", enum=ROUND_MODE),
            # ceil_mode: false (SENet's and other forks' deploy files) asks for floor rounding.
            _f(_FORK_FIELD + 13, "ceil_mode", "bool", True),
        ),
        MessageType(
            "LRNParameter",
            _f(1, "local_size", "uint32", 5), _f(2, "alpha", "float", 1.0), _f(3, "beta", "float", 0.75),
            _f(4, "norm_region", "enum", enum=NORM_REGION), _f(5, "k", "float", 1.0),
            _f(6, "engine", "enum", enum=ENGINE),
        ),
        MessageType(
            "InnerProductParameter",
            _f(1, "num_output", "uint32"), _f(2, "bias_term", "bool", True), _f(5, "axis", "int32", 1),
            _f(6, "transpose", "bool"),
        ),
        MessageType("DropoutParameter", _f(1, "dropout_ratio", "float", 0.5)),
        MessageType("InputParameter", _msg(1, "shape", "BlobShape", True)),
        MessageType("ReLUParameter", _f(1, "negative_slope", "float"), _f(2, "engine", "enum", enum=ENGINE)),
        MessageType("SoftmaxParameter", _f(1, "engine", "enum", enum=ENGINE), _f(2, "axis", "int32", 1)),
        MessageType("FlattenParameter", _f(1, "axis", "int32", 1), _f(2, "end_axis", "int32", -1)),
        MessageType("ConcatParameter", _f(2, "axis", "int32", 1), _f(1, "concat_dim", "uint32", 1)),
        MessageType(
            "EltwiseParameter",
            _f(1, "operation", "enum", ELTWISE_OP["SUM"], enum=ELTWISE_OP), _rep(2, "coeff", "float"),
            _f(3, "stable_prod_grad", "bool", True),
        ),
        MessageType(
            "BatchNormParameter",
            _f(1, "use_global_stats", "bool"), _f(2, "moving_average_fraction", "float", 0.999),
            _f(3, "eps", "float", 1e-5),
        ),
        MessageType("ScaleParameter", _f(1, "axis", "int32", 1), _f(2, "num_axes", "int32", 1),
                    _f(4, "bias_term", "bool")),
        MessageType("BiasParameter", _f(1, "axis", "int32", 1), _f(2, "num_axes", "int32", 1)),
        MessageType("SliceParameter", _f(3, "axis", "int32", 1), _rep(2, "slice_point", "uint32"),
                    _f(1, "slice_dim", "uint32", 1)),
        MessageType("ReshapeParameter", _msg(1, "shape", "BlobShape"), _f(2, "axis", "int32", 0),
                    _f(3, "num_axes", "int32", -1)),
        MessageType("PReLUParameter", _f(2, "channel_shared", "bool")),
        MessageType("ELUParameter", _f(1, "alpha", "float", 1.0)),
        MessageType("PowerParameter", _f(1, "power", "float", 1.0), _f(2, "scale", "float", 1.0),
                    _f(3, "shift", "float", 0.0)),
        MessageType("CropParameter", _f(1, "axis", "int32", 2), _rep(2, "offset", "uint32")),
        MessageType("SigmoidParameter", _f(1, "engine", "enum", enum=ENGINE)),
        MessageType("TanHParameter", _f(1, "engine", "enum", enum=ENGINE)),
    )
}
NET_PARAMETER = MESSAGES["NetParameter"]


class Msg:
    """A typed message: ``values[name]`` lists every occurrence of a field, in file order."""

    __slots__ = ("type", "values")

    def __init__(self, mtype: MessageType) -> None:
        self.type = mtype
        self.values: dict[str, list[Any]] = {}

    def add(self, name: str, value: Any) -> None:
        """Append one occurrence. A repeated occurrence of a singular sub-message merges into the
        first one, as protobuf parsers do."""
        fdesc = self.type.by_name[name]
        old = self.values.get(name)
        if old and fdesc.kind == "message" and not fdesc.repeated:
            for key, vals in value.values.items():
                for v in vals:
                    old[0].add(key, v)
        else:
            self.values.setdefault(name, []).append(value)

    def has(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str) -> Any:
        """The value of a singular field (the last occurrence wins), or its default."""
        vals = self.values.get(name)
        if vals:
            return vals[-1]
        fdesc = self.type.by_name[name]
        return Msg(MESSAGES[fdesc.message_type]) if fdesc.kind == "message" else fdesc.default

    def all(self, name: str) -> list[Any]:
        """Every value of a repeated field (empty if absent)."""
        return self.values.get(name, [])


# --------------------------------------------------------------------------------------------------
# The normalised representation

#: A blob shape without the batch axis, e.g. (C, H, W) or (K,); None marks a size that is unknown
#: before the first forward (nets whose input comes from a Data layer).
Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class BlobSpec:
    """A parameter blob of a caffemodel.

    ``shape`` is as stored: (num, channels, height, width) for legacy (V1) blobs, else ``shape.dim``.
    ``data`` holds the wire decoder's :class:`~gradcam_core.caffe.wire.Segment` records of the values
    (float32 ``data`` or, when present, float64 ``double_data``); ``count`` is checked against the
    shape when the spec is built, so nothing is allocated for a blob that lies about its size.
    """

    shape: tuple[int, ...]
    legacy: bool
    dtype: str  # "float32" or "float64"
    data: tuple[Any, ...]

    def matches(self, expected: tuple[int | None, ...]) -> bool:
        """Caffe's Blob::ShapeEquals; None in ``expected`` matches any size. Legacy blobs index their
        dims from the end (an InnerProduct weight is 1 x 1 x out x in, a bias 1 x 1 x 1 x out)."""
        got = self.shape
        if self.legacy:
            if len(expected) > 4:
                return False
            expected = (1,) * (4 - len(expected)) + tuple(expected)
        return len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got))


@dataclass(frozen=True)
class LayerSpec:
    """One layer, generation-agnostic: ``type`` is the V2 type string ("Convolution", "ReLU", ...) and
    ``params`` maps a parameter field name ("convolution_param", ...) to its :class:`Msg`."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: Mapping[str, Msg] = field(default_factory=dict)
    blobs: tuple[BlobSpec, ...] = ()
    #: Declared top shapes of an input layer, batch axis included (``input_param.shape``).
    input_shapes: tuple[tuple[int, ...], ...] = ()

    def param(self, name: str) -> Msg:
        """The layer's ``name`` parameter message (an empty one, i.e. all defaults, if absent)."""
        return self.params.get(name) or Msg(MESSAGES[_PARAM_FIELDS_V2[name][1]])


@dataclass(frozen=True)
class NetSpec:
    """A net: its name and its layers in file order. Net-level inputs (``input`` +
    ``input_dim``/``input_shape``) become a leading "Input" layer named "input", as Caffe's
    UpgradeNetInput does."""

    name: str
    layers: tuple[LayerSpec, ...]


def interpret_net(msg: Msg, source: str, with_blobs: bool = True) -> NetSpec:
    """Turn a NetParameter of either generation (from a prototxt or a caffemodel) into a
    :class:`NetSpec`. ``source`` names the file in error messages; ``with_blobs=False`` ignores any
    blobs (a prototxt's: weights come from the caffemodel)."""
    if msg.all("layer") and msg.all("layers"):
        raise GradCamError(f"{source}: the net has both V2 'layer' and V1 'layers' entries; Caffe refuses such nets")
    if msg.all("layers"):
        layers = [_v1_layer(m, source, with_blobs) for m in msg.all("layers")]
    else:
        layers = [_v2_layer(m, source, with_blobs) for m in msg.all("layer")]
    inputs = _net_inputs(msg, source)
    return NetSpec(msg.get("name"), tuple(([inputs] if inputs else []) + layers))


def _net_inputs(msg: Msg, source: str) -> LayerSpec | None:
    names = msg.all("input")
    if not names:
        return None
    if msg.all("input_shape"):
        shapes = [tuple(s.all("dim")) for s in msg.all("input_shape")]
    else:
        dims = msg.all("input_dim")
        shapes = [tuple(dims[i : i + 4]) for i in range(0, len(dims), 4)]
    if shapes and len(shapes) != len(names):
        raise GradCamError(f"{source}: {len(names)} input(s) but {len(shapes)} input shape(s)")
    return LayerSpec("input", "Input", (), tuple(names), input_shapes=tuple(shapes))


def _common(m: Msg, type_: str, params: Mapping[str, tuple[int, str]], source: str, with_blobs: bool) -> LayerSpec:
    name = m.get("name")
    found = {p: m.get(p) for p in params if m.has(p)}
    blobs = tuple(_blob(b, name, i, source) for i, b in enumerate(m.all("blobs"))) if with_blobs else ()
    input_shapes: tuple[tuple[Any, ...], ...] = ()
    if "input_param" in found:
        input_shapes = tuple(tuple(s.all("dim")) for s in found["input_param"].all("shape"))
    return LayerSpec(name, type_, tuple(m.all("bottom")), tuple(m.all("top")), found, blobs, input_shapes)


def _v2_layer(m: Msg, source: str, with_blobs: bool) -> LayerSpec:
    return _common(m, m.get("type"), _PARAM_FIELDS_V2, source, with_blobs)


def _v1_layer(m: Msg, source: str, with_blobs: bool) -> LayerSpec:
    if m.has("layer"):
        raise GradCamError(
            f"{source}: V0 layer definitions (layers {{ layer {{ ... }} }}) are not supported; "
            "upgrade the file with Caffe's upgrade_net_proto_text/upgrade_net_proto_binary"
        )
    number = m.get("type")  # an enum number, or the identifier of a type the enum does not know
    type_ = number if isinstance(number, str) else V1_TYPE_TO_V2.get(number, f"V1 type {number}")
    return _common(m, type_, _PARAM_FIELDS_V1, source, with_blobs)


def _blob(m: Msg, layer: str, index: int, source: str) -> BlobSpec:
    legacy_fields = ("num", "channels", "height", "width")
    legacy = any(m.has(f) for f in legacy_fields)
    shape = tuple(m.get(f) for f in legacy_fields) if legacy else tuple(m.get("shape").all("dim"))
    data, dtype = (m.all("double_data"), "float64") if m.all("double_data") else (m.all("data"), "float32")
    count = sum(seg.count for seg in data)
    if any(d < 0 for d in shape) or math.prod(shape) != count:
        raise GradCamError(
            f"{source}: layer '{layer}' blob {index} declares shape {format_shape(shape)} "
            f"({math.prod(shape)} values) but holds {count} values"
        )
    return BlobSpec(shape, legacy, dtype, tuple(data))


def format_shape(shape: tuple[Any, ...]) -> str:
    """(1, 3, ?, ?) style, "?" for an unknown size."""
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"

