"""Torch7's convolution numerics for the guided forward (``explain(..., torch7_ties=True)``): im2col + one
GEMM per image, bit for bit PyTorch's native CPU path, which sums in the order Torch7's
SpatialConvolutionMM did, so max-pooling ties fall as in the original."""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
from torch import nn


def default_torch7_ties(model: nn.Module) -> bool:
    """``explain``'s ``torch7_ties`` when not given: the model's own ``torch7_ties`` attribute if it has
    one, else whether any of its submodules has ``torch7_ties`` True (a wrapper around a loaded
    :class:`~gradcam_core.nets.graph.GraphNet`, e.g. the VQA image net), else False."""
    own = getattr(model, "torch7_ties", None)
    if own is not None:
        return bool(own)
    return any(getattr(m, "torch7_ties", None) is True for m in model.modules())


@contextlib.contextmanager
def torch7_conv_forward(model: nn.Module) -> Iterator[None]:
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

    # (torch.backends.mkldnn is a module whose `enabled` is a property its stubs do not model)
    def native(_module: nn.Module, _inputs: tuple) -> None:
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]

    def restore(_module: nn.Module, _inputs: tuple, _output: torch.Tensor) -> None:
        torch.backends.mkldnn.enabled = before

    handles = [m.register_forward_pre_hook(native) for m in convs]
    handles += [m.register_forward_hook(restore) for m in convs]
    try:
        for m in plain:
            m.forward = shadow(m)  # type: ignore[method-assign]  # an instance attribute, removed below
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
    _by_model: weakref.WeakKeyDictionary[nn.Module, _Workspace] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    @classmethod
    def of(cls, model: nn.Module) -> _Workspace:
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
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                module: nn.Conv2d, workspace: _Workspace) -> torch.Tensor:
        n, channels, height, width = x.shape
        c_out, c_in_group, kh, kw = weight.shape
        padding = module.padding
        assert not isinstance(padding, str)  # (applies() leaves 'same'/'valid' to PyTorch)
        (sh, sw), (ph, pw), (dh, dw), groups = module.stride, padding, module.dilation, module.groups
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
    def backward(ctx, dy: torch.Tensor):
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
