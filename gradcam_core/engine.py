"""The engine: Grad-CAM, Guided Backprop and Guided Grad-CAM from ONE forward pass.

The Lua original ran two forwards and two full backwards per image and label, on the network and on a
deep clone whose ReLUs were swapped for guided ones. Here:

* one forward, with every ``nn.ReLU``'s ``forward`` shadowed for the call (an instance attribute,
  removed afterwards) by a ReLU whose *backward* can be switched between the plain rule and the
  guided rule ``dx = dy * [x > 0] * [dy > 0]``; the network is never copied, nothing stays changed;
* Grad-CAM: the gradient of the target scores w.r.t. the chosen layer only (``torch.autograd.grad``
  stops there: no backward below the layer, no weight gradients since parameters are frozen for the
  call); without guided backprop, nothing below the layer is even recorded for autograd;
* guided backprop: one more backward, to the input, with the switch on "guided";
* K targets share the forward; their backwards are batched (``is_grads_batched``);
* with guided backprop, the convolutions' forward runs with Torch7's numerics (``torch7_ties``):
  im2col + one GEMM per image, in bands that stay in cache, into scratch memory kept with the model -
  bit for bit PyTorch's own im2col path, which sums in the order Torch7's SpatialConvolutionMM did.
  Each image of a batch is computed alone (forward and, faster here too, backward).

Grad-CAM is computed as the authors' code did: channel weights are the SUM of the gradients over the
map (not the mean: the missing 1/Z cancels after min-max normalisation, but raw maps keep the Lua
values), map = ReLU(sum_c w_c A_c), then scaled to the input size with ``image.scale`` semantics.
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

import torch
from torch import nn

from . import imageops
from .errors import GradCamError
from .targets import ClassTarget, Target

LayerRef = Union[str, int, nn.Module]
TargetSpec = Union[Target, int]


@dataclass
class Explanation:
    """Maps for N images and K targets.

    Attributes:
        scores: the model output, (N, ...) detached.
        target_scores: (N, K), the score of each target (the thing explained).
        activations: (N, C, h, w), the chosen layer's activations A.
        weights: (N, K, C), Grad-CAM channel weights (sum of gradients over h, w).
        cam_raw: (N, K, h, w), ReLU(sum_c w_c A_c), the map before scaling.
        cam: (N, K, H, W), ``cam_raw`` scaled to the input size (``image.scale`` semantics). Maps
            keep the model's precision (the Lua scripts scaled ``gcam:float()``; ``outputs`` renders
            the way they did).
        guided: (N, K, C_in, H, W), guided-backprop gradient w.r.t. the input (same channel order as the
            input), or None when ``guided=False``.
        guided_cam: (N, K, C_in, H, W), ``guided * cam`` (both unnormalised), or None.
    """

    scores: torch.Tensor
    target_scores: torch.Tensor
    activations: torch.Tensor
    weights: torch.Tensor
    cam_raw: torch.Tensor
    cam: torch.Tensor
    guided: Optional[torch.Tensor] = None
    guided_cam: Optional[torch.Tensor] = None


def explain(
    model: nn.Module,
    image: torch.Tensor,
    layer: LayerRef,
    targets: Union[TargetSpec, Sequence[TargetSpec]],
    *,
    guided: bool = True,
    torch7_ties: bool = True,
) -> Explanation:
    """Grad-CAM (and, by default, Guided Backprop and Guided Grad-CAM) for K targets on N images.

    Args:
        model: any ``nn.Module``; if it has ``resolve_layer`` (e.g. ``CaffeNet``) layer names and
            loadcaffe's 1-based indices are resolved by it, else ``layer`` is a name from
            ``model.named_modules()`` or a submodule. The model is used in whatever mode it is in
            (put it in ``eval()``); it is not modified.
        image: (N, C, H, W) input, already preprocessed; moved to the model's device and dtype.
        layer: the layer whose activations are weighted (e.g. ``"relu5_3"`` or ``30``).
        targets: one target or a sequence of K; an ``int`` is a 0-based class index
            (:class:`~gradcam_core.targets.ClassTarget`); any callable mapping the model output to (N,)
            scores works.
        guided: also compute guided backprop and guided Grad-CAM.
        torch7_ties: with ``guided``, run the forward convolutions the way Torch7 did (im2col + GEMM,
            bit for bit PyTorch's native CPU path) instead of oneDNN. Both compute equal receptive
            fields alike, but they round differently; where two different receptive fields round to the
            same activation in Torch7 (common in flat image regions: black borders, saturated sky), a
            max-pooling window holds a tie, and Torch7 routed the guided gradient to its first maximum.
            oneDNN's rounding resolves a few of those ties the other way and moves some guided-image
            pixels by 5-14 grey levels (two oracle cases). Costs 5-10% of a guided run on VGG-16
            (mostly the im2col copies); backward passes and Grad-CAM alone (whose channel weights do not
            depend on where in a window the gradient goes) always use the fast kernels. Scratch
            memory for it (at most the im2col columns of one image at one layer, about 42 MB for
            VGG-16 at 224 x 224) is kept with the model for the next call;
            :func:`release_workspace` frees it.

    Returns:
        An :class:`Explanation` with (N, K, ...) maps.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise GradCamError(f"explain needs an (N, C, H, W) image tensor, got {shape}")
    target_list = _as_targets(targets)
    grad_module, value_module = resolve_layer(model, layer)
    image = _to_model(model, image)

    switch = _GuideSwitch()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_frozen_parameters(model))
        if guided:
            stack.enter_context(_switchable_relus(model, switch))
            if torch7_ties:
                stack.enter_context(_torch7_conv_forward(model))
        tap = stack.enter_context(_LayerTap(grad_module, value_module, detach_below=not guided))
        stack.enter_context(torch.enable_grad())

        x = image.detach().requires_grad_(guided)
        output = model(x)
        target_scores = torch.stack([_score(t, output) for t in target_list], dim=1)  # (N, K)
        a_grad, activations = tap.result(layer)

        grads = _batched_grad(target_scores, a_grad, retain_graph=guided)  # (K, N, C, h, w)
        gb = None
        if guided:
            switch.guided = True
            gb = _batched_grad(target_scores, x, retain_graph=False).transpose(0, 1)  # (N, K, C, H, W)

    weights = grads.sum(dim=(-2, -1)).transpose(0, 1)  # (N, K, C)
    cam_raw = torch.einsum("nkc,nchw->nkhw", weights, activations).clamp_min(0)
    cam = imageops.scale(cam_raw, image.shape[-1], image.shape[-2])
    return Explanation(
        scores=output.detach(),
        target_scores=target_scores.detach(),
        activations=activations,
        weights=weights,
        cam_raw=cam_raw,
        cam=cam,
        guided=gb,
        guided_cam=None if gb is None else gb * cam[:, :, None],
    )


def resolve_layer(model: nn.Module, layer: LayerRef) -> tuple[nn.Module, nn.Module]:
    """(grad_module, value_module) for ``layer``: the gradient is taken at the first one's output, the
    activation read from the second's (they differ where the original's in-place ReLU overwrote a
    conv's output; see ``CaffeNet.resolve_layer``)."""
    if hasattr(model, "resolve_layer"):
        return model.resolve_layer(layer)
    if isinstance(layer, nn.Module):
        return layer, layer
    named = dict(model.named_modules())
    module = named.get(str(layer)) if str(layer) else None
    if module is None:
        names = [n for n in named if n]
        shown = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
        raise GradCamError(f"layer {layer!r} not found in the model; valid names: {shown}")
    return module, module


# --- internals -----------------------------------------------------------------------------------


def _as_targets(targets: Union[TargetSpec, Sequence[TargetSpec]]) -> list[Target]:
    items = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    if not items:
        raise GradCamError("no target given: name at least one class, answer or caption")
    return [ClassTarget(t) if isinstance(t, int) else t for t in items]


def _score(target: Target, output: torch.Tensor) -> torch.Tensor:
    s = target(output)
    if s.dim() != 1 or s.shape[0] != output.shape[0]:
        raise GradCamError(
            f"a target must give one score per image, shape ({output.shape[0]},); got {tuple(s.shape)}"
        )
    return s


def _to_model(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    p = next(model.parameters(), None)
    if p is None:
        return image
    return image.to(device=p.device, dtype=p.dtype if p.is_floating_point() else image.dtype)


def _batched_grad(scores: torch.Tensor, wrt: torch.Tensor, *, retain_graph: bool) -> torch.Tensor:
    """d scores[:, k] / d wrt for every k at once: scores (N, K) -> (K, *wrt.shape).

    Images are independent (eval mode), so one backward of the sum over images gives every image's
    gradient; targets are batched with ``is_grads_batched`` (vmap over the backward).
    """
    n, k = scores.shape
    if not scores.requires_grad:  # the targets do not depend on the model (e.g. a constant)
        return torch.zeros((k, *wrt.shape), dtype=wrt.dtype, device=wrt.device)
    if k == 1:
        (g,) = torch.autograd.grad(scores.sum(), wrt, retain_graph=retain_graph, allow_unused=True)
        g = torch.zeros_like(wrt) if g is None else g
        return g.unsqueeze(0)
    seeds = torch.eye(k, dtype=scores.dtype, device=scores.device)[:, None, :].expand(k, n, k)
    (g,) = torch.autograd.grad(
        scores, wrt, grad_outputs=seeds, is_grads_batched=True, retain_graph=retain_graph,
        allow_unused=True,
    )
    return torch.zeros((k, *wrt.shape), dtype=wrt.dtype, device=wrt.device) if g is None else g


class _GuideSwitch:
    """Which backward rule the switchable ReLUs of one ``explain`` call apply (read at backward time)."""

    __slots__ = ("guided",)

    def __init__(self) -> None:
        self.guided = False


class _SwitchableReLU(torch.autograd.Function):
    """ReLU whose backward is plain (``dy * [y > 0]``) or guided (``dy * [y > 0] * [dy > 0]``).

    The mask uses the output: y > 0 exactly where the input x > 0, as GuidedBackpropReLU tested.
    The plain rule is PyTorch's own ReLU backward (``threshold_backward``); the guided one rectifies
    that result in place (the same values as masking ``relu(dy)``, one tensor fewer). The forward
    takes ``ctx`` (no ``setup_context``): ``apply`` then skips binding the arguments through
    ``inspect.signature`` at every call.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, switch: _GuideSwitch) -> torch.Tensor:  # type: ignore[override]
        y = torch.relu(x)
        ctx.save_for_backward(y)
        ctx.switch = switch
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        dx = torch.ops.aten.threshold_backward(dy, y, 0)
        if ctx.switch.guided:
            dx.clamp_min_(0)
        return dx, None


class _SwitchableReLUInPlace(torch.autograd.Function):
    """:class:`_SwitchableReLU` rectifying its input in place, for ``nn.ReLU(inplace=True)``: what
    the module itself did (a module before it may rely on its stored output being the rectified one,
    as with loadcaffe's ``nn.ReLU(true)``), with no second pass and no new tensor."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, switch: _GuideSwitch) -> torch.Tensor:  # type: ignore[override]
        x.relu_()
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.switch = switch
        return x

    backward = _SwitchableReLU.backward


@contextlib.contextmanager
def _switchable_relus(model: nn.Module, switch: _GuideSwitch) -> Iterator[None]:
    """Route every ``nn.ReLU`` of ``model`` through :class:`_SwitchableReLU` for the duration.

    Nothing is copied and nothing stays changed (undone also on errors): each ReLU's ``forward`` is
    shadowed by an instance attribute, in place where the module was in place. Functional ``F.relu``
    calls inside a model's ``forward`` are not seen; Caffe and Torch7 models use modules.
    """
    relus = [m for m in model.modules() if type(m) is nn.ReLU and "forward" not in vars(m)]

    def switchable(x: torch.Tensor) -> torch.Tensor:
        return _SwitchableReLU.apply(x, switch)

    def switchable_in_place(x: torch.Tensor) -> torch.Tensor:
        return _SwitchableReLUInPlace.apply(x, switch)

    try:
        for m in relus:
            m.forward = switchable_in_place if m.inplace else switchable
        yield
    finally:
        for m in relus:
            vars(m).pop("forward", None)


@contextlib.contextmanager
def _torch7_conv_forward(model: nn.Module) -> Iterator[None]:
    """Run the forward of every convolution with Torch7's numerics for the duration (see ``explain``'s
    ``torch7_ties``): every output position is one GEMM dot product over its im2col column, summed in
    the order Torch7's SpatialConvolutionMM summed it, so activations round as the original's did.

    A plain ``nn.Conv2d`` on CPU (float32/float64, zero padding) gets its ``forward`` shadowed by
    :class:`_Torch7Conv2d`: im2col into a scratch buffer, then ``addmm`` per image (and group), bit for
    bit PyTorch's own im2col + GEMM path (``_slow_conv2d_forward``) run on one image. That path
    allocates (and page-faults in) a fresh column buffer for the whole batch at every layer - 115 MB per
    image at VGG-16's conv1_2, 920 MB for a batch of 8 - where this one reuses one buffer, kept with the
    model for its next call. The backward runs on the fast kernels. Every other convolution (and any
    input this path does not take) runs PyTorch's native path with oneDNN switched off around its
    forward, by hooks on every convolution.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    plain = [m for m in convs if type(m) is nn.Conv2d and m.padding_mode == "zeros" and "forward" not in vars(m)]
    before = torch.backends.mkldnn.enabled
    workspace = _Workspace.of(model) if plain else None

    def shadow(module: nn.Conv2d):
        original = type(module).forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            if _Torch7Conv2d.applies(x, module):
                return _Torch7Conv2d.apply(x, module.weight, module.bias, module, workspace)
            return original(module, x)  # PyTorch's native path: the hooks switched oneDNN off

        return forward

    def native(_module: nn.Module, _inputs: tuple) -> None:
        torch.backends.mkldnn.enabled = False

    def restore(_module: nn.Module, _inputs: tuple, _output: torch.Tensor) -> None:
        torch.backends.mkldnn.enabled = before

    handles = [m.register_forward_pre_hook(native) for m in convs]
    handles += [m.register_forward_hook(restore) for m in convs]
    try:
        for m in plain:
            m.forward = shadow(m)
        yield
    finally:
        torch.backends.mkldnn.enabled = before  # also after an error inside a forward
        for m in plain:
            vars(m).pop("forward", None)
        for h in handles:
            h.remove()


class _Workspace:
    """Scratch buffers (im2col columns, zero-padded image) grown on demand and reused by every layer
    and image, kept with the model between calls (freed with it, or by :func:`release_workspace`):
    a fresh buffer would be page-faulted in again at every call."""

    __slots__ = ("_buffers", "__weakref__")
    _by_model: "weakref.WeakKeyDictionary[nn.Module, _Workspace]" = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    @classmethod
    def of(cls, model: nn.Module) -> "_Workspace":
        ws = cls._by_model.get(model)
        if ws is None:
            ws = cls._by_model[model] = cls()
        return ws

    def get(self, name: str, numel: int, like: torch.Tensor) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            self._buffers.pop(name, None)  # free the old one first
            buf = self._buffers[name] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buf[:numel]


def release_workspace(model: nn.Module) -> None:
    """Free the scratch memory ``explain`` keeps with ``model`` for its next call (at most the im2col
    columns of one image at one layer and its zero-padded input: about 42 MB for VGG-16 at 224 x 224)."""
    _Workspace._by_model.pop(model, None)


class _Torch7Conv2d(torch.autograd.Function):
    """``nn.Conv2d``'s forward computed as Torch7's SpatialConvolutionMM did (im2col + one GEMM per
    image and group, bias first); the backward is PyTorch's (``convolution_backward``, fast kernels)."""

    @staticmethod
    def applies(x: torch.Tensor, module: nn.Conv2d) -> bool:
        """Whether this path computes the convolution (else PyTorch's native one does, raising its own
        errors for inputs that do not fit)."""
        weight = module.weight
        if not (x.dim() == 4 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
                and weight.dtype == x.dtype and weight.device == x.device and not isinstance(module.padding, str)
                and x.shape[1] == weight.shape[1] * module.groups):
            return False
        return all(
            size + 2 * p - d * (k - 1) - 1 >= 0
            for size, k, p, d in zip(x.shape[-2:], weight.shape[-2:], module.padding, module.dilation)
        )

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],  # type: ignore[override]
                module: nn.Conv2d, workspace: _Workspace) -> torch.Tensor:
        n, channels, height, width = x.shape
        c_out, c_in_group, kh, kw = weight.shape
        (sh, sw), (ph, pw), (dh, dw), groups = module.stride, module.padding, module.dilation, module.groups
        oh = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        rows = c_in_group * kh * kw  # per group
        out = torch.empty((n, c_out, oh, ow), dtype=x.dtype, device=x.device)
        bands = _bands(groups * rows * x.element_size(), oh, ow)  # output rows of each GEMM
        columns = workspace.get("columns", groups * rows * max(r1 - r0 for r0, r1 in bands) * ow, x)
        padded = None
        if ph or pw:
            padded = workspace.get("padded", channels * (height + 2 * ph) * (width + 2 * pw), x)
            padded = padded.view(channels, height + 2 * ph, width + 2 * pw)
            for border in (padded[:, :ph], padded[:, ph + height :], padded[:, ph : ph + height, :pw],
                           padded[:, ph : ph + height, pw + width :]):
                border.zero_()  # the inside is overwritten by each image
        weight2d = weight.reshape(c_out, rows)
        c_out_group = c_out // groups
        for i in range(n):
            image = x[i]
            if padded is not None:
                padded[:, ph : ph + height, pw : pw + width].copy_(image)  # the border stays zero
                image = padded
            if bias is not None:
                # The GEMMs add to the bias already in place (beta = 1): the bits of addmm(bias, ...),
                # which would copy the bias in again for every band, about 35 ms more on VGG-16.
                out[i].view(c_out, oh * ow).copy_(bias[:, None].expand(c_out, oh * ow))
            for r0, r1 in bands:
                cols_all = columns[: groups * rows * (r1 - r0) * ow].view(groups * rows, (r1 - r0) * ow)
                _im2col(image[:, r0 * sh :], (kh, kw), (sh, sw), (dh, dw), (r1 - r0, ow), cols_all)
                out_i = out[i, :, r0:r1].view(c_out, (r1 - r0) * ow)  # rows oh * ow apart
                for g in range(groups):
                    if groups == 1:
                        o_out, o_weight, cols = out_i, weight2d, cols_all
                    else:
                        o = slice(g * c_out_group, (g + 1) * c_out_group)
                        o_out, o_weight, cols = out_i[o], weight2d[o], cols_all[g * rows : (g + 1) * rows]
                    if bias is None:
                        torch.mm(o_weight, cols, out=o_out)
                    else:
                        torch.addmm(o_out, o_weight, cols, out=o_out)
        ctx.save_for_backward(x, weight)
        ctx.conf = (module.stride, module.padding, module.dilation, groups, None if bias is None else [c_out])
        return out

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, bias_sizes = ctx.conf
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2] and bias_sizes is not None]

        def grads(dy_: torch.Tensor, x_: torch.Tensor) -> tuple:
            return torch.ops.aten.convolution_backward(
                dy_, x_, weight, bias_sizes, list(stride), list(padding), list(dilation), False, [0, 0], groups, mask
            )

        if x.shape[0] == 1 or mask[1] or mask[2]:
            dx, dw, db = grads(dy, x)
        else:  # image by image, as the forward: faster than oneDNN's batched backward here (VGG-16, 8 images)
            dx = torch.cat([grads(d, xi)[0] for d, xi in zip(dy.split(1), x.split(1))])
            dw = db = None
        return dx, dw, db, None, None


_BAND_MIN_COLUMNS = 1536  # GEMMs at least this wide give the same bits as one GEMM over the image
_BAND_BYTES = 4 << 20  # about the columns of one band, so that they stay in cache for the GEMM
_BAND_FROM_BYTES = 32 << 20  # only layers whose columns are larger are cut in bands


def _bands(column_bytes: int, oh: int, ow: int) -> list[tuple[int, int]]:
    """The output rows [r0, r1) of each GEMM: all rows at once, or, where the im2col columns of the
    image would exceed 32 MB (VGG-16's conv1_2: 115 MB), bands of about 4 MB of columns, each at least
    1536 positions wide (the remainder goes to the last band). MKL then computes every position with
    the same bits as one GEMM over the whole image - checked for every layer shape of the models this
    project runs - while the columns stay in cache."""
    if column_bytes * oh * ow <= _BAND_FROM_BYTES:
        return [(0, oh)]
    width = max(_BAND_MIN_COLUMNS, _BAND_BYTES // column_bytes)
    band = -(-width // ow)
    starts = list(range(0, oh - band + 1, band)) or [0]
    return [(r0, starts[i + 1] if i + 1 < len(starts) else oh) for i, r0 in enumerate(starts)]


def _im2col(image: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
            out_size: tuple[int, int], columns: torch.Tensor) -> None:
    """Torch7/PyTorch im2col of one (already zero-padded) image (C, H, W) into ``columns``
    (C * kh * kw, oh * ow): row (c, i, j) holds channel c at kernel offset (i, j) for every output
    position. One copy from a strided view of the image."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_size
    c, sc, sy, sx = image.shape[0], image.stride(0), image.stride(1), image.stride(2)
    windows = image.as_strided((c, kh, kw, oh, ow), (sc, dh * sy, dw * sx, sh * sy, sw * sx))
    columns.view(c, kh, kw, oh, ow).copy_(windows)


@contextlib.contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad for the call: the backward builds no weight gradients."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class _LayerTap(contextlib.AbstractContextManager):
    """Forward hooks that capture the chosen layer's gradient point and activation.

    The gradient point is the grad module's output; downstream modules get a copy of it, so an
    in-place op further on (an in-place ReLU in a torchvision model) cannot rewrite it. With
    ``detach_below`` the output is cut from the graph below it (a new leaf): a Grad-CAM-only run
    records and back-propagates nothing under the layer.
    """

    def __init__(self, grad_module: nn.Module, value_module: nn.Module, *, detach_below: bool) -> None:
        self._detach = detach_below
        self._grad_point: Optional[torch.Tensor] = None
        self._value: Optional[torch.Tensor] = None
        self._handles = [grad_module.register_forward_hook(self._on_grad_module)]
        if value_module is not grad_module:
            self._handles.append(value_module.register_forward_hook(self._on_value_module))
        self._same = value_module is grad_module

    def _on_grad_module(self, _m: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise GradCamError(f"the chosen layer returns {type(output).__name__}, not a tensor")
        point = output.detach().requires_grad_() if self._detach else output
        self._grad_point = point
        passed_on = point.clone()
        if self._same:
            self._value = passed_on
        return passed_on

    def _on_value_module(self, _m: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        self._value = output

    def result(self, layer: LayerRef) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradient point, activations (N, C, h, w) detached) after the forward."""
        if self._grad_point is None or self._value is None:
            raise GradCamError(f"layer {layer!r} was not reached by the forward pass")
        value = self._value.detach()
        if value.dim() != 4:
            raise GradCamError(
                f"layer {layer!r} gives activations of shape {tuple(value.shape)}; Grad-CAM needs a "
                "convolutional layer with (N, C, H, W) output"
            )
        return self._grad_point, value

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
