"""Torch7 ``nn`` / ``cudnn`` module objects (as :func:`~gradcam_core.formats.torch7.load_t7` reads them) ->
PyTorch modules carrying the loaded weights.

Each module is built by the builder registered for its class (:mod:`gradcam_core.nets.registry`,
``@register("torch7", "nn.<Class>", "cudnn.<Class>")`` in :mod:`gradcam_core.nets.layers`), which reads
the object's fields through a :class:`T7Layer` and returns a module in eval semantics. Modules with
weights are created on the meta device (no random initialisation: VGG's fc6 alone holds 102 M weights)
and receive the file's arrays as their parameters (the reader already copied them out of the file).

Torch ran these modules on unbatched inputs (C, H, W) or (K,) in the Lua scripts; here every input has
a leading batch axis N, which the shape-changing modules (View, Reshape, SoftMax, Normalize) keep apart.

:func:`sequential_to_net` turns an ``nn.Sequential`` into a :class:`GraphNet` chain, so a Torch7 CNN is
looked up exactly like a loadcaffe one (``-layer 30`` or ``-layer relu5_3``).
"""
from __future__ import annotations

import builtins
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import GradCamError
from ...nets.graph import GraphNet, InputSpec
from ...nets.registry import LayerError, lookup
from .reader import T7Object

# --------------------------------------------------------------------------------------------------
# Field access


class T7Layer:
    """What a builder sees of one Torch7 module object: ``name`` (its ``.name`` field - loadcaffe gave
    every module its Caffe layer name - else its class name), ``type`` (the class name, e.g.
    "cudnn.SpatialConvolution"), ``dtype`` (of the parameters to make), and checked field access:
    :meth:`int`, :meth:`flag`, :meth:`number`, :meth:`sizes`, :meth:`array`, :meth:`parameter`, :meth:`get`.
    Unusable fields raise :class:`LayerError`."""

    def __init__(self, obj: T7Object, dtype: torch.dtype) -> None:
        self.obj, self.type, self.dtype = obj, obj.typename, dtype
        name = obj.get("name")
        self.name = name if isinstance(name, str) and name else obj.typename

    def get(self, name: str, default: Any = None) -> Any:
        """A field as stored (unchecked)."""
        return self.obj.get(name, default)

    def int(self, name: str, default: int | None = None) -> int:
        """A size, stride, ... field: a whole number in the range of the C ``int`` Torch kept it in."""
        value = self.obj.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise LayerError(f"field '{name}' should be a whole number, is {_show(value)}")
        if not -(2**31) <= value < 2**31:
            raise LayerError(f"field '{name}' is out of range, is {value:.3g}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        """A boolean field, with Lua's truth: anything but nil and false is true (a tensor too)."""
        value = self.obj.get(name, default)
        return value is not None and value is not False

    def sizes(self) -> tuple[builtins.int, ...]:
        """The ``size`` field of View/Reshape: a non-empty list of whole numbers (-1 = inferred)."""
        size = self.obj.get("size")
        if not isinstance(size, np.ndarray) or size.ndim != 1 or not size.size:
            raise LayerError(f"field 'size' should be a list of sizes, is {_show(size)}")
        values = size.tolist()
        if not all(float(v).is_integer() and abs(v) < 2**63 for v in values):  # NaN, inf: not integers
            raise LayerError(f"field 'size' should hold whole numbers, is {values[:8]}")
        return tuple(int(v) for v in values)

    def number(self, name: str, default: float | None = None) -> float:
        value = self.obj.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LayerError(f"field '{name}' should be a number, is {_show(value)}")
        return float(value)

    def array(self, name: str, *, required: bool = True) -> np.ndarray | None:
        """A tensor field as an array; None when absent or empty and not ``required``."""
        value = self.obj.get(name)
        if isinstance(value, np.ndarray) and value.size:
            return value
        if required:
            raise LayerError(f"field '{name}' should be a non-empty tensor, is {_show(value)}")
        return None

    def parameter(self, array: np.ndarray, shape: tuple[builtins.int, ...], what: str) -> nn.Parameter:
        """``array`` as a parameter of ``shape`` in ``dtype`` (any stored layout with that many elements)."""
        if array.size != math.prod(shape):
            raise LayerError(f"{what} has shape {array.shape}, expected {shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise LayerError(f"{what} holds {array.dtype} values, expected floating point")
        return nn.Parameter(torch.from_numpy(array).reshape(shape).to(self.dtype))


def _show(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, np.ndarray):
        return f"a tensor of shape {value.shape}"
    if isinstance(value, T7Object):
        return f"a {value.typename}"
    return repr(value) if isinstance(value, (int, float, str)) else type(value).__name__


# --------------------------------------------------------------------------------------------------
# Conversion


def convert_module(obj: Any, where: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """One Torch7 module object -> a PyTorch module with its weights, in ``dtype``.

    ``where`` names the module in errors (e.g. ``"protos.cnn module 39"``). Unknown classes and
    unusable fields raise :class:`GradCamError` naming ``where`` and the class.
    """
    if not isinstance(obj, T7Object):
        raise GradCamError(f"{where} should be a Torch module, is {_show(obj)}")
    builder = lookup("torch7", obj.typename, f"{where} is a {obj.typename}")
    try:
        built = builder(T7Layer(obj, dtype), [None]).build([])
    except LayerError as err:
        raise GradCamError(f"{where} ({obj.typename}): {err}") from None
    (_, module), = built  # a Torch7 module is one module
    return module.eval()


def is_inplace_relu(obj: T7Object) -> bool:
    """Whether ``obj`` is a ReLU that overwrote its input (``nn.ReLU(true)``, loadcaffe's kind)."""
    return obj.typename in ("nn.ReLU", "cudnn.ReLU") and T7Layer(obj, torch.float32).flag("inplace", False)


def sequential_entries(
    seq: Any, where: str = "the network", dtype: torch.dtype = torch.float32
) -> list[tuple[str, str, nn.Module]]:
    """An ``nn.Sequential`` -> ``(name, type, module)`` per child, in order, for ``GraphNet.from_modules``.

    name: :attr:`T7Layer.name`. type: ``"ReLU"`` for an in-place ReLU only - the one kind of module
    that overwrote the previous module's output, so Grad-CAM at a conv followed by one sees post-ReLU
    values, as in Lua - else the class name.
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
        name = T7Layer(child, dtype).name
        entries.append((name, "ReLU" if is_inplace_relu(child) else child.typename, module))
    return entries


def sequential_to_net(seq: Any, where: str = "the network", dtype: torch.dtype = torch.float32) -> GraphNet:
    """An ``nn.Sequential`` CNN as a :class:`GraphNet` chain (eval mode): 1-based module numbers and
    names as in Lua, ``resolve_layer`` honouring in-place ReLUs, ``torch7_ties`` set (the original ran
    it in Torch7). Input: (N, C, H, W) images."""
    entries = sequential_entries(seq, where, dtype)
    first = entries[0][2]
    channels = first.in_channels if isinstance(first, nn.Conv2d) else None
    return GraphNet.from_modules(entries, InputSpec("data", channels, None, None), torch7_ties=True).eval()
