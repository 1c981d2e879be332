"""Layer layouts: how a layer's output holds its spatial map, and its (N, C, h, w) view.

Every CAM method works on ``A`` (N, C, h, w). A layer's output is one of these layouts
(:data:`LAYOUTS`, ``explain(layer_layout=...)``):

* ``nchw``: (N, C, h, w), convolutional nets. The view is the output itself (no copy, no work).
* ``nhwc``: (N, h, w, C), channels last: torchvision's Swin Transformer (v1 and v2) blocks and norms,
  the permuted middle of ConvNeXt's blocks. The view is ``output.movedim(-1, -3)``.
* ``tokens``: (N, E + h*w, C), a transformer's token sequence: E = 0, 1 or 2 leading extra tokens
  (a ViT's class token, DeiT's class and distillation tokens; none for Swin-style token outputs)
  followed by the h x w patches row by row. The view drops the E extra tokens and unflattens the rest.

How ``"auto"`` (the default) recognises a layout, from the output's shape, the input's size H x W and
the model's patch size where it has one (``model.patch_size``, torchvision's VisionTransformer, or
``model.patch_embed.patch_size``):

* A grid (h, w) is *plausible* for the input when ``1 <= h <= H``, ``1 <= w <= W`` and its aspect is the
  input's within two cells: ``|h * W - w * H| <= 2 * max(H, W)`` (a square input: ``|h - w| <= 2``).
  Convolutions, pooling and patch embeddings keep the aspect, up to their border rounding.
* 3-D (N, T, C): tokens. E and (h, w) with ``E + h * w = T`` are chosen among E = 0, 1, 2 and every
  factorisation of ``T - E``: the grid of the model's patch size (H // p, W // p) if it fits, else the
  plausible grid whose aspect is closest to the input's, fewer extra tokens first on a tie (197 tokens
  at 224 x 224: E = 1, 14 x 14; 49: E = 0, 7 x 7). None plausible: refused.
* 4-D (N, a, b, c): NCHW if (b, c) is a plausible grid and (a, b) is not, NHWC if the other way round;
  neither: refused (one line naming the shape; never a stretched map). Both (a square map whose channel
  count is also a plausible side, e.g. (N, 8, 8, 8) for a 32 x 32 input): the layer module decides -
  NHWC if its channels are on the last axis (the last module in it that declares channels is an
  ``nn.LayerNorm`` over one axis or an ``nn.Linear``: the norms and MLPs of Swin and ConvNeXt blocks),
  else NCHW (convolutions, batch norms, ConvNeXt's ``LayerNorm2d``, modules that declare nothing).
  ``layer_layout="nhwc"`` or ``"nchw"`` overrides the rule (and reads any 4-D output so).
* A model that resizes its input inside (a detector: its output is not a tensor but, for torchvision's,
  a list of dicts) gives no input size to compare with: a 4-D output is NCHW unless the layer module's
  channels are on the last axis (as above), and a token output needs ``layer_layout``.
* Window partitions are not maps: inside a window-attention layer that partitions its input
  (:data:`WINDOWED`: MaxViT's ``PartitionAttentionLayer``, whose inner outputs are (N, windows, cells,
  C)), a 4-D output read as NHWC is refused with ``"auto"`` (its input and output are NCHW maps).

Replacing a layer's output (Ablation-CAM, :meth:`LayerContext.score_activations`) goes the other way:
:meth:`Layout.from_nchw` writes (B, C, h, w) back in the layer's layout; tokens keep their E extra
tokens as the layer gave them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import GradCamError

LAYOUTS = ("auto", "nchw", "nhwc", "tokens")
"""What ``explain(layer_layout=...)`` and ``-layer_layout`` take."""
MAX_EXTRA_TOKENS = 2
"""The most leading non-patch tokens a token layout has (DeiT: class + distillation)."""
WINDOWED = ("PartitionAttentionLayer",)
"""Class names of layers whose submodules' outputs are window partitions (torchvision's MaxViT)."""
_ASPECT_CELLS = 2
"""How many cells a grid's aspect may be off the input's (border rounding of the strided layers)."""


@dataclass(frozen=True)
class Layout:
    """A layer's layout, recognised for one output shape.

    Attributes:
        kind: ``"nchw"``, ``"nhwc"`` or ``"tokens"``.
        grid: (h, w), the spatial grid of the map.
        extra: the leading extra tokens of a token layout (0 otherwise).
    """

    kind: str
    grid: tuple[int, int]
    extra: int = 0

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        """The layer's output (or a gradient of it), with any leading dims (..., N, <layout>) ->
        (..., N, C, h, w): a view, no copy; for NCHW the tensor itself."""
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.movedim(-1, -3)
        return t[..., self.extra:, :].unflatten(-2, self.grid).movedim(-1, -3)

    def from_nchw(self, a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> the layer's layout, a tensor of its own; ``like`` is the layer's actual output
        (1 or B items) whose extra tokens a token layout keeps."""
        if self.kind == "nchw":
            return a
        if self.kind == "nhwc":
            return a.movedim(-3, -1).contiguous()
        patches = a.flatten(-2).transpose(-1, -2)  # (B, h*w, C)
        if not self.extra:
            return patches.contiguous()
        head = like[:, : self.extra].to(patches.dtype).expand(a.shape[0], -1, -1)
        return torch.cat([head, patches], dim=1)


NCHW = Layout("nchw", (0, 0))
"""The layout of every convolutional layer (its grid is not needed: the view is the output)."""


def plausible_grid(h: int, w: int, height: int, width: int) -> bool:
    """Whether (h, w) can be a spatial grid of an input of ``height`` x ``width`` (module docstring)."""
    return 1 <= h <= height and 1 <= w <= width and abs(h * width - w * height) <= _ASPECT_CELLS * max(height, width)


def patch_size_of(model: nn.Module | None) -> tuple[int, int] | None:
    """The model's patch size (ph, pw): ``model.patch_size`` or ``model.patch_embed.patch_size``
    (an int or a pair), None where it has none."""
    for owner in (model, getattr(model, "patch_embed", None)):
        size = getattr(owner, "patch_size", None)
        if isinstance(size, int) and size > 0:
            return size, size
        if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
            return int(size[0]), int(size[1])
    return None


def channels_last_module(module: nn.Module | None) -> bool:
    """Whether ``module``'s output has its channels on the last axis, as far as its modules say: the
    last submodule that declares a channel count is an ``nn.LayerNorm`` over one axis or an ``nn.Linear``."""
    if module is None:
        return False
    for m in reversed(list(module.modules())):
        if type(m) is nn.LayerNorm:
            return len(m.normalized_shape) == 1
        if isinstance(m, nn.Linear):
            return True
        if isinstance(m, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
            return False
    return False


def windowed_modules(model: nn.Module | None) -> set[nn.Module]:
    """The submodules of ``model``'s :data:`WINDOWED` layers (their outputs are window partitions)."""
    inside: set[nn.Module] = set()
    for m in () if model is None else model.modules():
        if type(m).__name__ in WINDOWED:
            inside.update(sub for sub in m.modules() if sub is not m)
    return inside


def recognise(shape: tuple[int, ...], input_size: tuple[int, int] | None, *, requested: str = "auto",
              patch: tuple[int, int] | None = None, module: nn.Module | None = None) -> Layout | str:
    """The layout of an output of ``shape`` for an input of ``input_size`` (H, W), or the reason there is
    none (a string: the end of the one-line error). ``requested`` is one of :data:`LAYOUTS`; ``patch``
    the model's patch size; ``module`` the layer (its channel axis breaks a 4-D tie). ``input_size``
    None: the model resizes its input inside (module docstring)."""
    if input_size is None:
        if len(shape) == 4 and requested in ("auto", "nchw", "nhwc"):
            channels_last = requested == "nhwc" or (requested == "auto" and channels_last_module(module))
            return Layout("nhwc", (shape[1], shape[2])) if channels_last else Layout("nchw", (shape[2], shape[3]))
        if len(shape) == 3 and requested == "auto":
            return "the model resizes its input, so its token grid is unknown; set layer_layout"
        # the rules below with an input as large as any grid: a 4-D output of the wrong layout is named
        # there; layer_layout="tokens" gets the grid closest to a square
        input_size = (1 << 30, 1 << 30)
    height, width = input_size
    if len(shape) == 3 and requested in ("auto", "tokens"):
        found = _token_grid(shape[1], height, width, patch)
        return found or (f"no 0-{MAX_EXTRA_TOKENS} extra tokens + an h x w grid of the {height} x {width} input "
                         f"fit {shape[1]} tokens")
    if len(shape) != 4:
        want = {"tokens": "(N, T, C) tokens", "nchw": "(N, C, h, w)", "nhwc": "(N, h, w, C)"}.get(
            requested, "(N, C, h, w), (N, h, w, C) or (N, T, C) tokens")
        return f"layer_layout {requested!r} needs {want}"
    a, b, c = shape[1:]
    if requested == "nchw":
        return Layout("nchw", (b, c))
    if requested == "nhwc":
        return Layout("nhwc", (a, b))
    if requested == "tokens":
        return "layer_layout 'tokens' needs (N, T, C) tokens"
    as_nchw, as_nhwc = plausible_grid(b, c, height, width), plausible_grid(a, b, height, width)
    if as_nchw and as_nhwc:
        return Layout("nhwc", (a, b)) if channels_last_module(module) else Layout("nchw", (b, c))
    if as_nchw:
        return Layout("nchw", (b, c))
    if as_nhwc:
        return Layout("nhwc", (a, b))
    return (f"neither {b} x {c} (NCHW) nor {a} x {b} (NHWC) is a spatial grid of the {height} x {width} input; "
            "name another layer or set layer_layout")


def check_layout(requested: str) -> str:
    """``requested`` if it is one of :data:`LAYOUTS`, else a one-line GradCamError listing them."""
    if requested not in LAYOUTS:
        raise GradCamError(f"unknown layer_layout {requested!r}; the layouts are: {', '.join(LAYOUTS)}")
    return requested


def recognise_layer(shape: tuple[int, ...], input_size: tuple[int, int] | None, model: nn.Module | None,
                    module: nn.Module | None, requested: str = "auto") -> Layout | str:
    """:func:`recognise` for the output of ``module``, a layer of ``model``: with the model's patch size
    for tokens, and a window partition (:data:`WINDOWED`) read as NHWC refused with ``"auto"``."""
    found = recognise(shape, input_size, requested=requested, patch=patch_size_of(model) if len(shape) == 3 else None,
                      module=module)
    if requested == "auto" and isinstance(found, Layout) and found.kind == "nhwc" and module in windowed_modules(model):
        return "it is a window partition (N, windows, cells, C); name the layer it is in"
    return found


def layout_of(output: torch.Tensor, input_size: tuple[int, int] | None, model: nn.Module | None, module: nn.Module | None,
              requested: str, layer: object) -> Layout:
    """The layer's :class:`Layout` for its ``output``, or a one-line GradCamError naming the layer and
    its shape. An NCHW output of a plausible grid costs a few integer comparisons."""
    check_layout(requested)
    if output.dim() not in (3, 4):
        raise GradCamError(f"layer {layer!r} gives activations of shape {tuple(output.shape)}; Grad-CAM needs a "
                           "convolutional layer with (N, C, H, W) output (or a transformer's (N, H, W, C) or "
                           "(N, T, C) tokens)")
    found = recognise_layer(tuple(output.shape), input_size, model, module, requested)
    if isinstance(found, str):
        raise GradCamError(f"layer {layer!r} gives activations of shape {tuple(output.shape)}, not a spatial map: {found}")
    return found


def _token_grid(tokens: int, height: int, width: int, patch: tuple[int, int] | None) -> Layout | None:
    """The token layout of ``tokens`` tokens (module docstring), None where no grid fits."""
    if patch is not None:
        grid = (height // patch[0], width // patch[1])
        extra = tokens - grid[0] * grid[1]
        if 0 <= extra <= MAX_EXTRA_TOKENS and plausible_grid(*grid, height, width):
            return Layout("tokens", grid, extra)
    best: tuple[int, int, Layout] | None = None
    for extra in range(min(MAX_EXTRA_TOKENS, tokens - 1) + 1):
        cells = tokens - extra
        for h in range(1, min(cells, height) + 1):
            if cells % h or not plausible_grid(h, cells // h, height, width):
                continue
            key = (abs(h * width - cells // h * height), extra)
            if best is None or key < best[:2]:
                best = (*key, Layout("tokens", (h, cells // h), extra))
    return None if best is None else best[2]
