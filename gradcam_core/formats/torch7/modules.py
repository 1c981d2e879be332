"""Torch7 ``nn`` / ``cudnn`` module objects (as :func:`~gradcam_core.torch7.load_t7` reads them) ->
PyTorch modules carrying the loaded weights.

:data:`MODULES` is the ONE table: Torch class name -> builder. A builder reads the object's fields and
returns an ``nn.Module`` in eval semantics. Modules with weights are created on the meta device (no
random initialisation: VGG's fc6 alone holds 102 M weights) and receive the file's arrays as their
parameters without a copy (the reader already copied them out of the file).

Torch ran these modules on unbatched inputs (C, H, W) or (K,) in the Lua scripts; here every input has
a leading batch axis N, which the shape-changing modules (View, Reshape, SoftMax, Normalize) keep apart.

:func:`sequential_entries` turns an ``nn.Sequential`` into the ``(name, type, module)`` triples that
:meth:`GraphNet.from_modules` chains, so a Torch7 CNN is looked up exactly like a loadcaffe one
(``-layer 30`` or ``-layer relu5_3``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from ...errors import GradCamError
from ...nets.graph import GraphNet, InputSpec
from ...nets.modules import Normalize, Scale, View
from .reader import T7Object

Builder = Callable[[T7Object, torch.dtype], nn.Module]


class _BadModule(Exception):
    """A field of the module being converted is missing or unusable (wrapped with its location)."""


# --------------------------------------------------------------------------------------------------
# Field access


def _int(obj: T7Object, name: str, default: Optional[int] = None) -> int:
    """A size, stride, ... field: a whole number in the range of the C ``int`` Torch kept it in."""
    value = obj.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadModule(f"field '{name}' should be a whole number, is {_show(value)}")
    if not -(2**31) <= value < 2**31:
        raise _BadModule(f"field '{name}' is out of range, is {value:.3g}")
    return value


def _flag(obj: T7Object, name: str, default: bool) -> bool:
    """A boolean field, with Lua's truth: anything but nil and false is true (a tensor too)."""
    value = obj.get(name, default)
    return value is not None and value is not False


def _sizes(obj: T7Object) -> tuple[int, ...]:
    """The ``size`` field of View/Reshape: a non-empty list of whole numbers (-1 = inferred)."""
    size = obj.get("size")
    if not isinstance(size, np.ndarray) or size.ndim != 1 or not size.size:
        raise _BadModule(f"field 'size' should be a list of sizes, is {_show(size)}")
    values = size.tolist()
    if not all(float(v).is_integer() and abs(v) < 2**63 for v in values):  # NaN, inf: not integers
        raise _BadModule(f"field 'size' should hold whole numbers, is {values[:8]}")
    return tuple(int(v) for v in values)


def _number(obj: T7Object, name: str, default: Optional[float] = None) -> float:
    value = obj.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadModule(f"field '{name}' should be a number, is {_show(value)}")
    return float(value)


def _array(obj: T7Object, name: str, *, required: bool = True) -> Optional[np.ndarray]:
    """A tensor field as an array; None when absent or empty and not ``required``."""
    value = obj.get(name)
    if isinstance(value, np.ndarray) and value.size:
        return value
    if required:
        raise _BadModule(f"field '{name}' should be a non-empty tensor, is {_show(value)}")
    return None


def _show(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, np.ndarray):
        return f"a tensor of shape {value.shape}"
    if isinstance(value, T7Object):
        return f"a {value.typename}"
    return repr(value) if isinstance(value, (int, float, str)) else type(value).__name__


def _param(array: np.ndarray, shape: tuple[int, ...], what: str, dtype: torch.dtype) -> nn.Parameter:
    """``array`` as a parameter of ``shape`` in ``dtype`` (any stored layout with that many elements)."""
    if array.size != math.prod(shape):
        raise _BadModule(f"{what} has shape {array.shape}, expected {shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise _BadModule(f"{what} holds {array.dtype} values, expected floating point")
    return nn.Parameter(torch.from_numpy(array).reshape(shape).to(dtype))


# --------------------------------------------------------------------------------------------------
# Builders


def _linear(obj: T7Object, dtype: torch.dtype) -> nn.Module:
    weight = _array(obj, "weight")
    if weight.ndim != 2:
        raise _BadModule(f"weight has shape {weight.shape}, expected (outputs, inputs)")
    n_out, n_in = weight.shape
    bias = _array(obj, "bias", required=False)
    linear = nn.Linear(n_in, n_out, bias=bias is not None, device="meta")
    linear.weight = _param(weight, (n_out, n_in), "weight", dtype)
    if bias is not None:
        linear.bias = _param(bias, (n_out,), "bias", dtype)
    return linear


def _convolution(obj: T7Object, dtype: torch.dtype) -> nn.Module:
    # nn stores the weight as (out, in, kH, kW) or, in older files, (out, in*kH*kW); cudnn's has
    # in/groups input planes. Any layout with the right element count is reshaped.
    n_in, n_out = _int(obj, "nInputPlane"), _int(obj, "nOutputPlane")
    kernel = (_int(obj, "kH"), _int(obj, "kW"))
    stride = (_int(obj, "dH", 1), _int(obj, "dW", 1))
    pad = (_int(obj, "padH", 0), _int(obj, "padW", 0))
    groups = _int(obj, "groups", 1)
    if min(n_in, n_out, groups, *kernel, *stride) < 1 or n_in % groups or n_out % groups:
        raise _BadModule(
            f"bad geometry: {n_in} -> {n_out} planes, groups {groups}, kernel {kernel}, stride {stride}"
        )
    # The weight is checked first: the file's array bounds the geometry before torch sizes anything.
    weight = _param(_array(obj, "weight"), (n_out, n_in // groups, *kernel), "weight", dtype)
    bias = _array(obj, "bias", required=False)
    conv = nn.Conv2d(n_in, n_out, kernel, stride, pad, groups=groups, bias=bias is not None, device="meta")
    conv.weight = weight
    if bias is not None:
        conv.bias = _param(bias, (n_out,), "bias", dtype)
    return conv


def _pool_geometry(obj: T7Object) -> dict[str, Any]:
    # Torch's ceil mode (an output window may start in the last partial stride, but not in the
    # padding) is PyTorch's ceil_mode rule.
    return dict(
        kernel_size=(_int(obj, "kH"), _int(obj, "kW")),
        stride=(_int(obj, "dH", 1), _int(obj, "dW", 1)),
        padding=(_int(obj, "padH", 0), _int(obj, "padW", 0)),
        ceil_mode=_flag(obj, "ceil_mode", False),
    )


def _max_pooling(obj: T7Object, dtype: torch.dtype) -> nn.Module:
    return nn.MaxPool2d(**_pool_geometry(obj))


def _average_pooling(obj: T7Object, dtype: torch.dtype) -> nn.Module:
    return nn.AvgPool2d(**_pool_geometry(obj), count_include_pad=_flag(obj, "count_include_pad", True))


def _relu(obj: T7Object, dtype: torch.dtype) -> nn.Module:
    # Never in place here: the engine hooks plain nn.ReLU modules; the in-place effect on the layer
    # before it is reproduced by the chain's lookup (see sequential_entries).
    if _number(obj, "threshold", 0) != 0 or _number(obj, "val", 0) != 0:
        raise _BadModule("only a ReLU with threshold 0 and value 0 is supported")
    return nn.ReLU()


def _dropout(obj: T7Object, dtype: torch.dtype) -> nn.Module:
    p = _number(obj, "p", 0.5)
    if not 0 <= p <= 1:  # NaN included
        raise _BadModule(f"dropout probability p must be between 0 and 1, is {p}")
    # "v2" dropout (Torch's default since 2015) scales while training: identity at evaluation.
    return nn.Dropout(p) if _flag(obj, "v2", False) else Scale(1 - p)


def _view(obj: T7Object, dtype: torch.dtype) -> nn.Module:
    dims = obj.get("numInputDims")
    return View(_sizes(obj), None if dims is None else _int(obj, "numInputDims"))


def _reshape(obj: T7Object, dtype: torch.dtype) -> nn.Module:
    # nn.Reshape treats a leading dimension beyond `size` as the batch: our batch axis.
    return View(_sizes(obj), None)


def _normalize(obj: T7Object, dtype: torch.dtype) -> nn.Module:
    p = _number(obj, "p")
    if p <= 0:
        raise _BadModule(f"norm p must be positive, is {p}")
    return Normalize(p, _number(obj, "eps", 1e-10))


def _cross_map_lrn(obj: T7Object, dtype: torch.dtype) -> nn.Module:
    # scale = k + alpha/size * (sum of x^2 over `size` channels); y = x * scale^-beta: PyTorch's LRN.
    size, alpha, beta, k = _int(obj, "size"), _number(obj, "alpha"), _number(obj, "beta"), _number(obj, "k", 1)
    return nn.LocalResponseNorm(size, alpha, beta, k)


def _fixed(make: Callable[[], nn.Module]) -> Builder:
    return lambda obj, dtype: make()


#: Torch7 class name -> builder. SoftMax/LogSoftMax act over dim 1: the classes of (N, K) or the
#: channels of (N, C, H, W), as Torch's did over the unbatched (K,) or (C, H, W).
MODULES: dict[str, Builder] = {
    "nn.Linear": _linear,
    "nn.SpatialConvolution": _convolution,
    "nn.SpatialConvolutionMM": _convolution,
    "cudnn.SpatialConvolution": _convolution,
    "nn.SpatialMaxPooling": _max_pooling,
    "cudnn.SpatialMaxPooling": _max_pooling,
    "nn.SpatialAveragePooling": _average_pooling,
    "cudnn.SpatialAveragePooling": _average_pooling,
    "nn.SpatialCrossMapLRN": _cross_map_lrn,
    "cudnn.SpatialCrossMapLRN": _cross_map_lrn,
    "nn.ReLU": _relu,
    "cudnn.ReLU": _relu,
    "nn.Tanh": _fixed(nn.Tanh),
    "cudnn.Tanh": _fixed(nn.Tanh),
    "nn.Sigmoid": _fixed(nn.Sigmoid),
    "cudnn.Sigmoid": _fixed(nn.Sigmoid),
    "nn.SoftMax": _fixed(lambda: nn.Softmax(dim=1)),
    "cudnn.SoftMax": _fixed(lambda: nn.Softmax(dim=1)),
    "nn.LogSoftMax": _fixed(lambda: nn.LogSoftmax(dim=1)),
    "cudnn.LogSoftMax": _fixed(lambda: nn.LogSoftmax(dim=1)),
    "nn.Dropout": _dropout,
    "nn.View": _view,
    "nn.Reshape": _reshape,
    "nn.Identity": _fixed(nn.Identity),
    "nn.Normalize": _normalize,
}


# --------------------------------------------------------------------------------------------------
# Conversion


def convert_module(obj: Any, where: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """One Torch7 module object -> a PyTorch module with its weights, in ``dtype``.

    ``where`` names the module in errors (e.g. ``"protos.cnn module 39"``). Unknown classes and
    unusable fields raise :class:`GradCamError` naming ``where`` and the class.
    """
    if not isinstance(obj, T7Object):
        raise GradCamError(f"{where} should be a Torch module, is {_show(obj)}")
    builder = MODULES.get(obj.typename)
    if builder is None:
        supported = ", ".join(sorted({name.split(".", 1)[1] for name in MODULES}))
        raise GradCamError(
            f"{where} is a {obj.typename}, which is not supported (supported: nn/cudnn {supported})"
        )
    try:
        return builder(obj, dtype).eval()
    except _BadModule as err:
        raise GradCamError(f"{where} ({obj.typename}): {err}") from None


def is_inplace_relu(obj: T7Object) -> bool:
    """Whether ``obj`` is a ReLU that overwrote its input (``nn.ReLU(true)``, loadcaffe's kind)."""
    return obj.typename in ("nn.ReLU", "cudnn.ReLU") and _flag(obj, "inplace", False)


def sequential_entries(
    seq: Any, where: str = "the network", dtype: torch.dtype = torch.float32
) -> list[tuple[str, str, nn.Module]]:
    """An ``nn.Sequential`` -> ``(name, type, module)`` per child, in order, for ``GraphNet.from_modules``.

    name: the child's ``.name`` field (loadcaffe gave every module its Caffe layer name), else its
    class name. type: ``"ReLU"`` for an in-place ReLU only - the one kind of module that overwrote
    the previous module's output, so Grad-CAM at a conv followed by one sees post-ReLU values, as in
    Lua - else the class name.
    """
    if not isinstance(seq, T7Object) or seq.typename != "nn.Sequential":
        raise GradCamError(f"{where} should be an nn.Sequential, is {_show(seq)}")
    children = seq.get("modules")
    children = children.as_list() if hasattr(children, "as_list") else None
    if not children:
        raise GradCamError(f"{where}: an nn.Sequential without modules")
    entries = []
    for i, child in enumerate(children, 1):
        module = convert_module(child, f"{where} module {i}", dtype)
        name = child.get("name")
        name = name if isinstance(name, str) and name else child.typename
        entries.append((name, "ReLU" if is_inplace_relu(child) else child.typename, module))
    return entries


def sequential_to_net(seq: Any, where: str = "the network", dtype: torch.dtype = torch.float32) -> GraphNet:
    """An ``nn.Sequential`` CNN as a :class:`GraphNet` chain (eval mode): 1-based module numbers and
    names as in Lua, ``resolve_layer`` honouring in-place ReLUs. Input: (N, C, H, W) images."""
    entries = sequential_entries(seq, where, dtype)
    first = entries[0][2]
    channels = first.in_channels if isinstance(first, nn.Conv2d) else None
    return GraphNet.from_modules(entries, InputSpec("data", channels, None, None)).eval()
