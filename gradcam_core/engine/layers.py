"""Which layer Grad-CAM looks at when none is named: the last module whose output is a spatial map."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import GradCamError


def spatial_layers(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every layer whose output is a spatial map, (N, C, H, W) with H, W > 1, in
    the order their forwards finish, found by one forward of ``example_input`` (N, C, H, W) under
    ``no_grad`` with a forward hook on every module (the hooks are removed afterwards, also on errors).

    A container finishes after its children, so it comes after them: a torchvision ResNet lists
    ``layer4.2`` then ``layer4``. A module called more than once is listed at its last call. Names
    are what ``explain(layer=...)`` takes: ``named_modules()`` names, or for a net with a Caffe layer
    list (``names`` beside a ``layers`` ModuleList) the layer name, or its 1-based module number where
    an earlier layer has the same name; for a net with ``named_layers()`` (an ONNX net) those names.
    The model is run in whatever mode it is in (put it in ``eval()``: in training mode the forward
    would update batch-norm statistics).
    """
    names = _layer_names(model)
    finished: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(_m: nn.Module, _inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[-2:]) > 1:
                finished.pop(name, None)  # re-inserted: dicts keep insertion order, i.e. the last call
                finished[name] = tuple(output.shape)

        return hook

    handles = []
    try:
        for module, name in names:
            handles.append(module.register_forward_hook(record(name)))
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return list(finished.items())


def parameter_dtype(model: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype of the model's first parameter (what an example input should be), ``default`` for a
    model without parameters."""
    first = next(model.parameters(), None)
    return first.dtype if first is not None and first.is_floating_point() else default


def default_layer(model: nn.Module, example_input: torch.Tensor) -> str:
    """The name of the LAST layer whose output is a spatial map for ``example_input`` (see
    :func:`spatial_layers`), e.g. ``"layer4"`` for a torchvision ResNet, ``"features"`` for VGG's
    convolutional part.

    Raises GradCamError when no layer gives an (N, C, H, W) output with H, W > 1.
    """
    found = spatial_layers(model, example_input)
    if not found:
        raise GradCamError(
            f"no layer of the model gives a spatial map (N, C, H, W with H, W > 1) for an input of shape "
            f"{tuple(example_input.shape)}: name a layer (-layer_name)"
        )
    return found[-1][0]


def _layer_names(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, name) of every layer that can be named: a Caffe net's layers by their Caffe names, a net
    with a ``named_layers()`` method ((name, module) pairs) by those names, else every submodule (not
    the model itself) by its ``named_modules()`` name."""
    caffe = _caffe_layer_names(model)
    if caffe is not None:
        return caffe
    named_layers = getattr(model, "named_layers", None)
    if callable(named_layers):  # a net with its own layer names (an ONNX net: its node names)
        return [(m, name) for name, m in named_layers()]
    return [(m, name) for name, m in model.named_modules() if name]


def _caffe_layer_names(model: nn.Module) -> list[tuple[nn.Module, str]] | None:
    layers, names = getattr(model, "layers", None), getattr(model, "names", None)
    if not isinstance(layers, nn.ModuleList) or not isinstance(names, (list, tuple)) or len(names) != len(layers):
        return None
    first: dict[object, int] = {}
    for number, name in enumerate(names, 1):
        first.setdefault(name, number)
    return [(m, name if first[name] == number else str(number))
            for number, (m, name) in enumerate(zip(layers, names), 1)]
