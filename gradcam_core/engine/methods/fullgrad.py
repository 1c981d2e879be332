"""FullGrad (Srinivas & Fleuret, "Full-Gradient Representation for Neural Network Visualization",
NeurIPS 2019), as pytorch-grad-cam's ``FullGrad`` computes it. It ignores the chosen layer: the map is
at the input's resolution.

For the input ``X`` (C_in x H x W), a target score ``y_k`` and every call ``l`` of a bias layer, with
output ``z_l`` (C_l x h_l x w_l) and per-channel bias ``b_l``:

    psi(M)  = resize(P / (max P + 1e-7)),  P = M - min M     for one 2-D map M: min-max, then bilinear
                                                             resizing to H x W (half-pixel centres)
    L_k     = sum_c psi(|X_c * dy_k/dX_c|)  +  sum_l sum_c psi(|b_{l,c} * dy_k/dz_{l,c}|)

The bias layers are the modules whose type is exactly ``nn.Conv2d`` or ``nn.BatchNorm2d`` and that have
a bias (pytorch-grad-cam's rule). A convolution's ``b`` is its bias; a batch norm's the constant of its
evaluation-mode affine map, ``bias - running_mean * weight / sqrt(running_var + eps)`` (its bias where
it keeps no running statistics). ``dy/dz`` is the gradient at the layer's own output, before any
in-place activation after it. In the Caffe nets of :mod:`gradcam_core.formats.caffe`, convolutions are
``nn.Conv2d`` and count; Caffe's BatchNorm and Scale layers are modules of their own
(``CaffeBatchNorm``, ``AxisAffine``) and do not, as pytorch-grad-cam would not count them. A module
called twice in one forward gives two terms.

``eigen_smooth`` replaces the sum over the terms (the C_in input maps and one summed map per bias
layer call, each normalised again and shrunk to H/8 x W/8) by their first principal component, grown
back to H x W and normalised, as pytorch-grad-cam does.

The gradients to the input and at the bias layers come from one forward and one backward of the
model, batched over the K targets; the method's hooks are removed and the parameters' ``requires_grad``
restored before it returns, whatever happens.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..params import frozen_parameters
from .base import CamMethod, LayerContext, first_component, register

NORM_EPS = 1e-7
"""pytorch-grad-cam's epsilon in the min-max normalisation of each map."""
BIAS_LAYERS = (nn.Conv2d, nn.BatchNorm2d)
"""The exact module types whose bias terms count."""


@register
class FullGrad(CamMethod):
    name = "fullgrad"
    summary = "FullGrad: input x input-gradient plus bias x gradient of every conv and batch-norm layer"
    uses_gradients = False

    def compute(self, ctx: LayerContext, *, eigen_smooth: bool = False) -> tuple[torch.Tensor, None]:
        """(cam_raw (N, K, H, W) at the input's resolution, None: FullGrad has no channel weights)."""
        image = ctx.image
        size = tuple(image.shape[-2:])
        x_grad, terms = _gradients(ctx)  # (K, N, C_in, H, W), [(bias (C_l,), z grad (K, N, C_l, h, w))]
        maps = [_normalise(torch.abs(x_grad * image))]  # (K, N, C_in, H, W)
        for bias, grad in terms:
            summed = _normalise(torch.abs(bias[:, None, None] * grad)).sum(dim=2)  # (K, N, h, w)
            maps.append(_resize(summed, size)[:, :, None])  # resizing is linear: sum first, then resize once
        if eigen_smooth:
            cam = _eigen(torch.cat(maps, dim=2), size)
        else:
            cam = maps[0].sum(dim=2)
            for m in maps[1:]:
                cam = cam + m.sum(dim=2)
        return cam.transpose(0, 1).contiguous(), None


def bias_of(module: nn.Module) -> torch.Tensor | None:
    """The per-channel bias ``b`` of a bias layer (C,), or None for a module that is not one."""
    bias = getattr(module, "bias", None)
    if type(module) not in BIAS_LAYERS or not isinstance(bias, torch.Tensor):
        return None
    bias = bias.detach()
    if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None and module.running_var is not None:
        weight = module.weight.detach() if module.weight is not None else torch.ones_like(bias)
        bias = bias - module.running_mean * weight / torch.sqrt(module.running_var + module.eps)
    return bias


def _gradients(ctx: LayerContext) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """One forward and one backward: d y_k / d X (K, N, C_in, H, W) and, per bias-layer call, (b, d y_k / d z)."""
    model = ctx.model
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []  # (bias, output z) per call

    def keep(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        bias = bias_of(module)
        if bias is None or not isinstance(output, torch.Tensor) or not output.requires_grad:
            return None
        calls.append((bias.to(output.dtype), output))
        return output.clone()  # later layers get a copy: an in-place ReLU cannot rewrite z

    with contextlib.ExitStack() as stack:
        stack.enter_context(frozen_parameters(model))
        stack.enter_context(torch.enable_grad())
        for module in model.modules():
            if bias_of(module) is not None:
                stack.callback(module.register_forward_hook(keep).remove)
        x = ctx.image.detach().clone().requires_grad_()
        output = model(x)
        scores = torch.stack([t(output) for t in ctx.targets], dim=1)  # (N, K)
        grads = _batched_grad(scores, [x] + [z for _, z in calls])
    return grads[0], [(b, g) for (b, _), g in zip(calls, grads[1:])]


def _batched_grad(scores: torch.Tensor, wrt: list[torch.Tensor]) -> list[torch.Tensor]:
    """d scores[:, k] / d t for every k and tensor t: scores (N, K) -> [(K, *t.shape)] (zeros where unused)."""
    n, k = scores.shape
    if not scores.requires_grad:
        return [torch.zeros((k, *t.shape), dtype=t.dtype, device=t.device) for t in wrt]
    if k == 1:
        got = torch.autograd.grad(scores.sum(), wrt, allow_unused=True)
        got = tuple(None if g is None else g[None] for g in got)
    else:
        seeds = torch.eye(k, dtype=scores.dtype, device=scores.device)[:, None, :].expand(k, n, k)
        got = torch.autograd.grad(scores, wrt, grad_outputs=seeds, is_grads_batched=True, allow_unused=True)
    return [torch.zeros((k, *t.shape), dtype=t.dtype, device=t.device) if g is None else g for g, t in zip(got, wrt)]


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """(..., h, w): each map minus its minimum, divided by 1e-7 + the maximum of that."""
    shifted = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return shifted / (NORM_EPS + shifted.amax(dim=(-2, -1), keepdim=True))


def _resize(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(..., h, w) -> (..., *size), bilinear with half-pixel centres (OpenCV's INTER_LINEAR)."""
    if tuple(maps.shape[-2:]) == size:
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*lead, *size)


def _eigen(terms: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """terms (K, N, T, H, W) -> (K, N, H, W): pytorch-grad-cam's eigen-smoothed FullGrad map."""
    small = (max(size[0] // 8, 1), max(size[1] // 8, 1))
    projected = first_component(_resize(_normalise(terms), small))  # (K, N, H/8, W/8)
    return _resize(_normalise(projected), size)
