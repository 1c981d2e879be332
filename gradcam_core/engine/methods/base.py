"""The CAM method registry: what every method is given (:class:`LayerContext`) and how it turns that
into maps (:class:`CamMethod`).

The engine (:func:`gradcam_core.engine.explain`) owns the forward pass, the hooks, the targets and the
guided path; a method only turns what the engine gathered at the chosen layer - its activations ``A``,
the gradients ``G = d y_k / d A`` of each target score ``y_k``, or scores of perturbed inputs - into one
map per image and target. ``@register`` files a method class under its :attr:`CamMethod.name`;
:func:`lookup` finds it. Importing :mod:`gradcam_core.engine.methods` (one file per method) registers
every method (the package imports :mod:`._all`, whichever of its modules is asked for first).

Symbols used in the methods' docstrings: ``A^c`` the activation map of channel ``c`` at the layer
(h x w), ``G^c_k = d y_k / d A^c`` its gradient for target ``k``, ``(i, j)`` a position in the map,
``ReLU(x) = max(x, 0)``. Every method's map is ``cam_raw`` (N, K, h, w): after the method's ReLU,
before scaling to the input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ...errors import GradCamError
from ..layouts import NCHW, Layout
from ..targets import Target, pin


class _Replace:
    """A forward hook that returns ``value`` (B, C, h, w) instead of the layer's output, in the layer's
    ``layout`` (the layer still runs, on the one unperturbed image: a token layout's extra tokens are
    taken from its output)."""

    def __init__(self, value: torch.Tensor, layout: Layout = NCHW) -> None:
        self.value = value
        self.layout = layout

    def __call__(self, _m: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.layout.from_nchw(self.value, output).to(dtype=output.dtype)


@dataclass
class LayerContext:
    """What the engine gathered for one call, given to every method.

    Attributes:
        model: the model, in the state the call found it (parameters frozen for the call's forward
            only; the guided activations and the layer hooks are gone when a method runs).
        image: (N, C_in, H, W) the input, on the model's device and dtype.
        output: the model's output for ``image``, detached, (N, ...).
        targets: the K targets (with ``counterfactual``, the negated ones).
        target_scores: (N, K) each target's score on the unperturbed input.
        activations: (N, C, h, w) the layer's activations ``A``, detached.
        gradients: (N, K, C, h, w) ``d y_k / d A``, or None when no method of the call uses them.
        layer_module: the module whose output is ``activations`` (perturbation methods replace it).
        batch_size: the most perturbed inputs a method runs in one forward (None: its own choice).
        progress: whether a method with many forwards may show a progress bar (tqdm on a terminal).
        layout: the layer's own layout (:mod:`..layouts`): ``activations`` and ``gradients`` are its
            (N, C, h, w) view; :meth:`score_activations` writes replacements back in it.
    """

    model: nn.Module
    image: torch.Tensor
    output: torch.Tensor
    targets: list[Target]
    target_scores: torch.Tensor
    activations: torch.Tensor
    gradients: torch.Tensor | None
    layer_module: nn.Module
    batch_size: int | None = None
    progress: bool = False
    layout: Layout = NCHW
    _pinned: dict[int, list[Target]] = field(default_factory=dict, repr=False)
    _scratch: dict[str, object] = field(default_factory=dict, repr=False)
    """What the perturbation helpers learnt about the model during the call (:mod:`.perturb`)."""

    def pinned_targets(self, n: int) -> list[Target]:
        """Image ``n``'s K targets fixed to what they chose on the unperturbed input (a "predicted
        class" target keeps that class on a masked image): each maps an output (B, ...) of B
        perturbed copies of image ``n`` to (B,) scores."""
        if n not in self._pinned:
            self._pinned[n] = [pin(t, self.output, n) for t in self.targets]
        return self._pinned[n]

    def score_images(self, images: torch.Tensor, n: int) -> torch.Tensor:
        """The K target scores of B perturbed versions of image ``n``: images (B, C_in, H, W) -> (B, K),
        one forward of the whole model without gradients."""
        with torch.no_grad():
            out = self.model(images.to(device=self.image.device, dtype=self.image.dtype))
            return torch.stack([t(out) for t in self.pinned_targets(n)], dim=1)

    def score_activations(self, activations: torch.Tensor, n: int) -> torch.Tensor:
        """The K target scores of image ``n`` with the layer's output replaced by each of B versions
        of it: activations (B, C, h, w) -> (B, K), without gradients (written back in the layer's
        layout; a token layout keeps its extra tokens as the layer gave them).

        The model runs on image ``n`` alone and the batch appears at the layer: the layers below it run
        once per call (a caller passes as large a batch as memory allows, so they run a few times in all).
        A model whose later layers refer back to the input's batch size (a concatenation with an earlier
        output, a reshape to a fixed batch) fails that way or gives another batch size; it then runs on B
        copies of the image, and so do the later calls of this context. Layers above the chosen one may
        overwrite ``activations`` in place (an in-place ReLU): pass a batch made for the call.
        """
        b = activations.shape[0]
        targets = self.pinned_targets(n)
        image = self.image[n : n + 1]
        copies_only = self._scratch.get("replace_needs_copies", False)
        tries = (image.expand(b, *image.shape[1:]),) if copies_only else (image, image.expand(b, *image.shape[1:]))
        for inputs in tries:
            handle = self.layer_module.register_forward_hook(_Replace(activations, self.layout))
            try:
                with torch.no_grad():
                    out = self.model(inputs)
                    scores = torch.stack([t(out) for t in targets], dim=1)
            except RuntimeError:
                if inputs.shape[0] == b:
                    raise
                self._scratch["replace_needs_copies"] = True
                continue
            finally:
                handle.remove()
            if scores.shape[0] == b:
                return scores
            self._scratch["replace_needs_copies"] = True
        raise RuntimeError("the model's output does not follow the batch of replaced activations")


class CamMethod:
    """One CAM method. Subclasses set :attr:`name`, :attr:`summary` and override one of:

    * :meth:`channel_weights` - methods whose map is ``ReLU(sum_c w^c_k A^c)`` (Grad-CAM, Grad-CAM++,
      XGrad-CAM, Score-CAM, Ablation-CAM);
    * :meth:`weighted_activations` - methods whose map is ``ReLU(sum_c M^c_k)`` for a per-position
      product ``M^c_k`` (HiResCAM, element-wise Grad-CAM, LayerCAM);
    * :meth:`compute` - anything else (Eigen-CAM, FullGrad).

    ``eigen_smooth`` (pytorch-grad-cam's): the sum over channels is replaced by the projection of
    the weighted activations on their first principal component (:func:`first_component`).
    """

    name: ClassVar[str]
    """The name ``explain(method=...)`` and ``-method`` take."""
    summary: ClassVar[str]
    """One line for ``--help`` and the web page."""
    uses_gradients: ClassVar[bool] = True
    """Whether the engine must compute ``d y_k / d A`` at the layer for it."""
    uses_target: ClassVar[bool] = True
    """False for methods whose map is the same for every target (Eigen-CAM)."""

    def channel_weights(self, ctx: LayerContext) -> torch.Tensor | None:
        """(N, K, C) channel weights ``w^c_k``, or None for a method that has none."""
        return None

    def weighted_activations(self, ctx: LayerContext) -> torch.Tensor:
        """(N, K, C, h, w): the terms summed over channels (default ``w^c_k A^c``)."""
        weights = self.channel_weights(ctx)
        if weights is None:
            raise NotImplementedError(f"{type(self).__name__} defines neither channel weights nor weighted activations")
        return weights[..., None, None] * ctx.activations[:, None]

    def compute(self, ctx: LayerContext, *, eigen_smooth: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(cam_raw (N, K, h, w) after the ReLU, channel weights (N, K, C) or None)."""
        weights = self.channel_weights(ctx)
        if weights is not None and not eigen_smooth:
            return torch.einsum("nkc,nchw->nkhw", weights, ctx.activations).clamp_min(0), weights
        terms = self.weighted_activations(ctx)
        cam = first_component(terms) if eigen_smooth else terms.sum(dim=2)
        return cam.clamp_min(0), weights


def first_component(terms: torch.Tensor) -> torch.Tensor:
    """(..., C, h, w) -> (..., h, w): each map's projection on its first principal component.

    The C maps of one image and target are read as h*w samples of C features, centred per feature;
    the map is the samples' coordinate along the first right-singular vector ``v`` (pytorch-grad-cam's
    ``get_2d_projection``). Non-finite entries count as 0.

    A singular vector's sign is arbitrary (LAPACK's choice, which can differ between float32 and
    float64, libraries and devices; pytorch-grad-cam keeps it, so its map is sometimes the negated one,
    which after the ReLU shows the complementary region). Here ``v`` is oriented so that
    ``sum_c v_c >= 0``: the sign for which the map correlates positively with the plain channel sum
    ``sum_c terms^c`` (their covariance is ``s_1^2 sum_c v_c``, ``s_1`` the first singular value), the
    map the method gives without ``eigen_smooth``.

    ``v`` is found from the smaller Gram matrix rather than a full SVD (a few times faster, the same
    vector to double precision): the top eigenvector of ``x^T x`` (C x C) is ``v`` itself; that of
    ``x x^T`` (hw x hw) is ``u``, and ``v = x^T u / |x^T u|``. Centred maps that are all zero give 0.
    """
    *lead, c, h, w = terms.shape
    x = torch.nan_to_num(terms.reshape(-1, c, h * w).transpose(1, 2), nan=0.0, posinf=0.0, neginf=0.0)
    x = x.double()
    x = x - x.mean(dim=1, keepdim=True)  # (B, hw, C)
    if h * w < c:
        u = torch.linalg.eigh(x @ x.transpose(1, 2))[1][..., -1]  # (B, hw), eigenvalues ascending
        v = (x.transpose(1, 2) @ u[..., None])[..., 0]
    else:
        v = torch.linalg.eigh(x.transpose(1, 2) @ x)[1][..., -1]  # (B, C)
    v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    v = torch.where(v.sum(dim=1, keepdim=True) < 0, -v, v)
    projection = (x @ v[..., None])[..., 0]  # (B, hw)
    return projection.to(terms.dtype).reshape(*lead, h, w)


_METHODS: dict[str, CamMethod] = {}


def register(cls: type[CamMethod]) -> type[CamMethod]:
    """Class decorator: file one instance of the method under ``cls.name``."""
    if cls.name in _METHODS:
        raise ValueError(f"two CAM methods named {cls.name!r}")
    _METHODS[cls.name] = cls()
    return cls


def method_names() -> list[str]:
    """Every registered method's name, in the order of ``--help`` (Grad-CAM first)."""
    return list(_METHODS)


def lookup(name: str) -> CamMethod:
    """The method named ``name``, or a GradCamError listing the known names."""
    method = _METHODS.get(name)
    if method is None:
        raise GradCamError(f"unknown CAM method {name!r}; the methods are: {', '.join(_METHODS)}")
    return method
