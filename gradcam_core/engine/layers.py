"""Which layer Grad-CAM looks at when none is named: the last module whose output is a spatial map, or for
a transformer the last block's normalisation before its attention (a class-token readout) or before its
MLP (a pooled readout); see :func:`default_layer`."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import GradCamError
from .layouts import Layout, recognise_layer


def spatial_layers(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every layer whose output is a spatial map in any layout (:mod:`.layouts`:
    (N, C, H, W), (N, H, W, C) or tokens, as ``layer_layout="auto"`` recognises it; not a window
    partition) with H, W > 1, in
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
    return [(name, shape) for name, shape, _, _ in _spatial(model, example_input)]


def _spatial(model: nn.Module, example_input: torch.Tensor
             ) -> list[tuple[str, tuple[int, ...], nn.Module, Layout]]:
    """:func:`spatial_layers` with each layer's module and recognised layout."""
    names = _layer_names(model)
    size = (int(example_input.shape[-2]), int(example_input.shape[-1]))
    finished: dict[str, tuple[tuple[int, ...], nn.Module, Layout]] = {}

    def record(name: str):
        def hook(module: nn.Module, _inputs: tuple, output: object) -> None:
            if not isinstance(output, torch.Tensor) or output.dim() not in (3, 4):
                return
            layout = recognise_layer(tuple(output.shape), size, model, module)
            if isinstance(layout, Layout) and min(layout.grid) > 1:
                finished.pop(name, None)  # re-inserted: dicts keep insertion order, i.e. the last call
                finished[name] = (tuple(output.shape), module, layout)

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
    return [(name, shape, module, layout) for name, (shape, module, layout) in finished.items()]


def parameter_dtype(model: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype of the model's first parameter (what an example input should be), ``default`` for a
    model without parameters."""
    first = next(model.parameters(), None)
    return first.dtype if first is not None and first.is_floating_point() else default


def default_layer(model: nn.Module, example_input: torch.Tensor) -> str:
    """The layer explained when none is named, for ``example_input`` (N, C, H, W):

    * a transformer (a block holding an attention module and its normalisations, whose outputs are
      spatial maps: ViT, DeiT, Swin v1/v2): the LAST block's first normalisation (``norm1``, ViT's
      ``ln_1``, before its attention) when the layer holds extra tokens (a class token: the score reads
      the patches only through the last attention, so the norm before the MLP has no gradient at the
      patches), else its last one (``norm2``, before the MLP; after it in Swin v2's post-norm blocks: a
      pooled readout such as Swin's reaches every position from there; TorchCAM found it the better
      of the two on a trained Swin-T);
    * anything else: the LAST layer whose output is a spatial map (see :func:`spatial_layers`), e.g.
      ``"layer4"`` for a torchvision ResNet, ``"features"`` for VGG's convolutional part, ``"blocks.3"``
      for MaxViT (its attention works on window partitions, not on a map).

    Raises GradCamError when no layer gives a spatial map with H, W > 1.
    """
    found = _spatial(model, example_input)
    if not found:
        raise GradCamError(
            f"no layer of the model gives a spatial map (N, C, H, W with H, W > 1) for an input of shape "
            f"{tuple(example_input.shape)}: name a layer (-layer_name)"
        )
    norm = _block_norm(model, found)
    return norm if norm is not None else found[-1][0]


def describe_default(model: nn.Module, layer: str) -> str:
    """Why :func:`default_layer` chose ``layer``, in a few words (what the CLI prints beside it)."""
    module = dict(model.named_modules()).get(layer) if layer else None
    block = None if module is None else _blocks(model).get(module)
    if block is None:
        return "the last layer with a spatial output"
    return "the last transformer block's " + ("first norm" if block[0] == 0 else "last norm")


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or "attention" in type(module).__name__.lower()


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__ in ("RMSNorm", "LayerNorm")


def _blocks(model: nn.Module) -> dict[nn.Module, tuple[int, nn.Module]]:
    """Each normalisation that is a direct child of a transformer block (a module with an attention
    child): (its position among the block's norms, the block)."""
    found: dict[nn.Module, tuple[int, nn.Module]] = {}
    for block in model.modules():
        children = list(block.children())
        if any(_is_attention(c) for c in children):
            for i, norm in enumerate(c for c in children if _is_norm(c)):
                found[norm] = (i, block)
    return found


def _block_norm(model: nn.Module, found: list[tuple[str, tuple[int, ...], nn.Module, Layout]]) -> str | None:
    """The transformer rule of :func:`default_layer`, None for a model without such blocks."""
    blocks = _blocks(model)
    norms = [(name, module, layout) for name, _, module, layout in found if module in blocks]
    if not norms:
        return None
    last_block = blocks[norms[-1][1]][1]
    in_block = [item for item in norms if blocks[item[1]][1] is last_block]  # in forward order
    name, _, layout = in_block[0] if in_block[0][2].extra else in_block[-1]
    return name


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
