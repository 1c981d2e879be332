"""The engine: Grad-CAM, Guided Backprop and Guided Grad-CAM from ONE forward pass.

The Lua original ran two forwards and two full backwards per image and label, on the network and on a
deep clone whose ReLUs were swapped for guided ones. Here:

* one forward, with every activation guided backprop applies to (ReLU, ReLU6, Leaky ReLU, Hardswish,
  SiLU, GELU, ..., called as a module or as a function; see :mod:`.guided`) routed, by a torch-function
  mode active for that forward only, through a twin whose *backward* can be switched between the plain
  rule and the guided one (for ReLU ``dx = dy * [x > 0] * [dy > 0]``); the network is never copied,
  nothing stays changed; what cannot be guided is named in ``Explanation.unguided``;
* Grad-CAM: the gradient of the target scores w.r.t. the chosen layer only (``torch.autograd.grad``
  stops there: no backward below the layer, no weight gradients since parameters are frozen for the
  call); without guided backprop, nothing below the layer is even recorded for autograd;
* guided backprop: one more backward, to the input, with the switch on "guided". With one target it
  starts at the layer, from the plain gradient there, where that is bit for bit what the guided
  backward would bring to it: the activations above the layer are watched in the first backward and
  none would have its gradient changed by the guided rule, and every path from the input to the
  scores crosses the layer (the layers above it then run backward once, not twice);
* K targets share the forward; their backwards are batched (``is_grads_batched``);
* with guided backprop on a net loaded from Caffe or Torch7 files, the convolutions' forward runs
  with Torch7's numerics (``torch7_ties``):
  im2col + one GEMM per image, in bands that stay in cache, into scratch memory kept with the model -
  bit for bit PyTorch's own im2col path, which sums in the order Torch7's SpatialConvolutionMM did.
  Each image of a batch is computed alone (forward and, faster here too, backward).

The map itself comes from a CAM method (:mod:`.methods`: Grad-CAM, the default, as the authors'
code computed it, and the others): the engine gathers the layer's activations and, once for every
gradient method of the call, the gradients of the targets at the layer; a method turns those (or
scores of perturbed inputs, which it asks the engine for) into a map. Maps are scaled to the input
size with ``image.scale`` semantics.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar, overload

import torch
from torch import nn

from ..errors import GradCamError
from ..image.resize import scale
from .explanation import Explanation, LayerRef, _Options
from .guided import SWITCHABLE_FUNCTIONS, GuideSwitch, switchable_activations
from .layouts import check_layout, layout_of
from .methods import CamMethod, LayerContext, lookup
from .params import frozen_parameters, model_input
from .targets import ClassTarget, Negated, Target
from .torch7_conv import default_torch7_ties, release_workspace, torch7_conv_forward  # noqa: F401 (API)

TargetSpec = Target | int


MethodSpec = str | list[str] | tuple[str, ...]
T = TypeVar("T")


@overload
def explain(
    model: nn.Module, image: torch.Tensor, layer: LayerRef, targets: TargetSpec | Sequence[TargetSpec], *,
    guided: bool = ..., torch7_ties: bool | None = ..., method: str = ..., counterfactual: bool = ...,
    aug_smooth: bool = ..., eigen_smooth: bool = ..., batch_size: int | None = ..., progress: bool = ...,
    layer_layout: str = ...,
) -> Explanation: ...


@overload
def explain(
    model: nn.Module, image: torch.Tensor, layer: LayerRef, targets: TargetSpec | Sequence[TargetSpec], *,
    guided: bool = ..., torch7_ties: bool | None = ..., method: list[str] | tuple[str, ...],
    counterfactual: bool = ...,
    aug_smooth: bool = ..., eigen_smooth: bool = ..., batch_size: int | None = ..., progress: bool = ...,
    layer_layout: str = ...,
) -> dict[str, Explanation]: ...


def explain(
    model: nn.Module,
    image: torch.Tensor,
    layer: LayerRef,
    targets: TargetSpec | Sequence[TargetSpec],
    *,
    guided: bool = True,
    torch7_ties: bool | None = None,
    method: MethodSpec = "gradcam",
    counterfactual: bool = False,
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
    layer_layout: str = "auto",
) -> Explanation | dict[str, Explanation]:
    """A CAM method's maps (Grad-CAM by default) and, by default, Guided Backprop and the guided map,
    for K targets on N images.

    Args:
        model: any ``nn.Module``; if it has ``resolve_layer`` (e.g. :class:`~gradcam_core.nets.graph.GraphNet`) layer names and
            loadcaffe's 1-based indices are resolved by it, else ``layer`` is a name from
            ``model.named_modules()`` or a submodule. The model is used in whatever mode it is in
            (put it in ``eval()``); it is not modified.
        image: (N, C, H, W) input, already preprocessed; moved to the model's device and dtype.
        layer: the layer whose activations are weighted (e.g. ``"relu5_3"`` or ``30``).
        targets: one target or a sequence of K; an ``int`` is a 0-based class index
            (:class:`~gradcam_core.targets.ClassTarget`); any callable mapping the model output to (N,)
            scores works (a detector's output, a list of N dicts: e.g.
            :class:`~gradcam_core.tasks.detect.BoxScoreTarget`).
        guided: also compute guided backprop and the guided map (guided backprop x the method's map).
            Guided backprop does not depend on the method. Every activation the model's forward calls,
            as a module or as a function, takes the guided rule; those it cannot take are named in
            ``Explanation.unguided`` (their plain gradient passes through), with a ``UserWarning``.
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
            None (the default) leaves it to the model (:func:`default_torch7_ties`): True for the nets
            the original could run (Caffe chains loadcaffe could build, Torch7 checkpoints:
            ``GraphNet.torch7_ties``), also inside a wrapper module, False for any other model (a
            Caffe DAG, a torchvision or ONNX one).
        method: a CAM method's name (:func:`~gradcam_core.engine.methods.method_names`: ``"gradcam"``,
            ``"gradcam++"``, ``"scorecam"``, ...), or a sequence of names: then a dict of one
            explanation per method, from one forward and one backward shared by the gradient methods.
        counterfactual: explain each target's negated score (the regions whose removal would raise it).
        aug_smooth: average the raw maps over six copies of the input: mirrored or not, times 0.9, 1
            or 1.1, mirrored maps mirrored back (pytorch-grad-cam's ``aug_smooth`` without its
            per-copy normalisation; :mod:`.smoothing`). Six times the work; guided backprop, scores
            and weights stay the unaugmented input's.
        eigen_smooth: replace each method's sum over channels by the first principal component of its
            weighted activations (pytorch-grad-cam's ``eigen_smooth``, its sign fixed:
            :func:`~gradcam_core.engine.methods.first_component`); no change for Eigen-CAM and
            Eigen-Grad-CAM, which are projections already.
        batch_size: the most perturbed inputs a perturbation method (Score-CAM, Ablation-CAM) runs in
            one forward; None: chosen from the free memory.
        progress: let methods with many forwards show a progress bar on a terminal.
        layer_layout: how the layer's output holds its map (:mod:`.layouts`): ``"auto"`` (recognised from
            its shape, the input's size and the model's patch size), ``"nchw"`` (N, C, h, w),
            ``"nhwc"`` (N, h, w, C: Swin, ConvNeXt's permuted blocks) or ``"tokens"`` (N, E + h*w, C:
            ViT, with E = 0-2 leading class / distillation tokens). Every method works on the (N, C, h, w)
            view; perturbation methods write their replaced activations back in the layer's layout.

    Returns:
        An :class:`Explanation` with (N, K, ...) maps, or for a sequence of methods a dict from each
        method's name to its explanation (they share ``scores``, ``activations`` and ``guided``).
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise GradCamError(f"explain needs an (N, C, H, W) image tensor, got {shape}")
    names = [method] if isinstance(method, str) else list(method)
    if not names:
        raise GradCamError("no CAM method given: name at least one (e.g. method='gradcam')")
    methods = [lookup(name) for name in dict.fromkeys(names)]  # an unknown name fails before any work
    target_list = _as_targets(targets)
    if counterfactual:
        target_list = [Negated(t) for t in target_list]
    check_layout(layer_layout)  # before any work
    options = _Options(guided, torch7_ties, eigen_smooth, batch_size, progress, layer_layout)
    if aug_smooth:
        from .smoothing import explain_augmented

        results = explain_augmented(_explain_once, model, image, layer, target_list, methods, options)
    else:
        results = _explain_once(model, image, layer, target_list, methods, options)
    unguided = next(iter(results.values())).unguided
    if unguided:  # once per call site and set of names (Python's default warning filter)
        warnings.warn(f"guided backprop has no rule for {', '.join(unguided)}: their plain gradient passes "
                      "through (Explanation.unguided)", UserWarning, stacklevel=2)
    return results[names[0]] if isinstance(method, str) else results


def _explain_once(model: nn.Module, image: torch.Tensor, layer: LayerRef, targets: list[Target],
                  methods: Sequence[CamMethod], options: _Options) -> dict[str, Explanation]:
    """One forward, the backwards the methods need, then each method's map: {name: explanation}."""
    guided = options.guided
    grad_module, value_module = resolve_layer(model, layer)
    image = model_input(model, image)
    needs_gradients = any(m.uses_gradients for m in methods)

    switch = GuideSwitch()
    unguided: tuple[str, ...] = ()
    with contextlib.ExitStack() as stack:
        stack.enter_context(frozen_parameters(model))
        if guided:
            if default_torch7_ties(model) if options.torch7_ties is None else options.torch7_ties:
                stack.enter_context(torch7_conv_forward(model))
        # one target with guided backprop: the activations above the layer are watched (see below)
        watch = guided and needs_gradients and len(targets) == 1
        tap = stack.enter_context(_LayerTap(grad_module, value_module, detach_below=not guided,
                                            track=needs_gradients, switch=switch if watch else None))
        # no backward at all (Eigen-CAM, perturbation methods without guided backprop): nothing recorded
        stack.enter_context(torch.enable_grad() if guided or needs_gradients else torch.no_grad())

        x = image.detach().requires_grad_(guided)
        if guided:  # the activations' calls switchable for this forward only (the backwards run plain torch)
            with switchable_activations(model, switch) as activations_seen:
                output = model(x)
            unguided = tuple(activations_seen.unguided)
        else:
            output = model(x)
        target_scores = torch.stack([_score(t, output) for t in targets], dim=1)  # (N, K)
        a_grad, activations = tap.result(layer)
        # the (N, C, h, w) view of the layer's own layout (NCHW: the tensor itself)
        # a model whose output is not a tensor (a detector's dicts) resizes its input inside: no size to compare
        seen_size = (image.shape[-2], image.shape[-1]) if isinstance(output, torch.Tensor) else None
        layout = layout_of(activations, seen_size, model, value_module, options.layer_layout, layer)
        activations = layout.to_nchw(activations)

        grads = None
        if needs_gradients:
            grads = layout.to_nchw(_batched_grad(target_scores, a_grad, retain_graph=guided))  # (K, N, C, h, w)
        gb = None
        if guided:
            switch.guided = True
            if grads is not None and watch and tap.crossed_only_by_layer(target_scores, x, switch.unchanged):
                # Above the layer the guided backward would repeat the plain one bit for bit (its rule
                # changes nothing there), and the input reaches the scores only through the layer: it
                # starts at the layer, from the gradient just made.
                gb = _grad_below(a_grad, grads[0], x)
            else:
                gb = _batched_grad(target_scores, x, retain_graph=False)
            gb = gb.transpose(0, 1)  # (N, K, C, H, W)

    # the hooks and the guided activations are gone: perturbation methods run the plain model
    ctx = LayerContext(
        model=model, image=image.detach(), output=detached(output), targets=targets,
        target_scores=target_scores.detach(), activations=activations,
        gradients=None if grads is None else grads.transpose(0, 1), layer_module=value_module,
        batch_size=options.batch_size, progress=options.progress, layout=layout,
    )
    first: Explanation | None = None
    results: dict[str, Explanation] = {}
    for method in methods:
        cam_raw, weights = method.compute(ctx, eigen_smooth=options.eigen_smooth)
        cam = scale(cam_raw, image.shape[-1], image.shape[-2])
        if first is None:
            first = Explanation(
                scores=detached(output), target_scores=target_scores.detach(), activations=activations,
                weights=weights, cam_raw=cam_raw, cam=cam, guided=gb,
                guided_cam=None if gb is None else gb * cam[:, :, None], method=method.name, unguided=unguided,
                layout=layout.kind,
            )
            results[method.name] = first
        else:
            results[method.name] = replace(first, weights=weights, cam_raw=cam_raw, cam=cam, method=method.name,
                                           guided_cam=None if gb is None else gb * cam[:, :, None])
    return results


def resolve_layer(model: nn.Module, layer: LayerRef) -> tuple[nn.Module, nn.Module]:
    """(grad_module, value_module) for ``layer``: the gradient is taken at the first one's output, the
    activation read from the second's (they differ where the original's in-place ReLU overwrote a
    conv's output; see :meth:`GraphNet.resolve_layer <gradcam_core.nets.graph.GraphNet.resolve_layer>`)."""
    resolve = getattr(model, "resolve_layer", None)
    if resolve is not None:
        return resolve(layer)
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


def _as_targets(targets: TargetSpec | Sequence[TargetSpec]) -> list[Target]:
    # a list or tuple holds K targets; anything else is one (an int or a callable)
    items: list[TargetSpec] = list(targets) if isinstance(targets, (list, tuple)) else [targets]  # type: ignore[list-item]
    if not items:
        raise GradCamError("no target given: name at least one class, answer or caption")
    return [ClassTarget(t) if isinstance(t, int) else t for t in items]


def _score(target: Target, output: torch.Tensor) -> torch.Tensor:
    s = target(output)
    n = len(output) if isinstance(output, (list, tuple)) else output.shape[0]  # a detector's: one dict per image
    if s.dim() != 1 or s.shape[0] != n:
        raise GradCamError(f"a target must give one score per image, shape ({n},); got {tuple(s.shape)}")
    return s


def detached(output: T) -> T:
    """A model output detached: a tensor, or the lists, tuples and dicts of tensors a detector returns
    (torchvision's: one dict of ``boxes``, ``labels``, ``scores`` per image), rebuilt with each tensor
    detached; anything else as it is."""
    if isinstance(output, torch.Tensor):
        return output.detach()  # type: ignore[return-value]
    if isinstance(output, dict):
        return type(output)((k, detached(v)) for k, v in output.items())
    if isinstance(output, (list, tuple)):
        return type(output)(detached(v) for v in output)
    return output


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


def _grad_below(point: torch.Tensor, grad: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    """The backward from ``point`` (the layer's output), ``grad`` there, to ``wrt``: (1, *wrt.shape)."""
    (g,) = torch.autograd.grad(point, wrt, grad_outputs=grad, allow_unused=True)
    return (torch.zeros_like(wrt) if g is None else g).unsqueeze(0)


class _LayerTap(contextlib.AbstractContextManager):
    """Forward hooks that capture the chosen layer's gradient point and activation.

    The gradient point is the grad module's output; downstream modules get a copy of it, so an
    in-place op further on (an in-place ReLU in a torchvision model) cannot rewrite it. With
    ``detach_below`` the output is cut from the graph below it (a new leaf): a Grad-CAM-only run
    records and back-propagates nothing under the layer. Without ``track`` (no gradient wanted at the
    layer) the output is passed on as it is. With a ``switch``, the activations run after the layer
    are watched (:class:`~.guided.GuideSwitch`).
    """

    def __init__(self, grad_module: nn.Module, value_module: nn.Module, *, detach_below: bool,
                 track: bool = True, switch: GuideSwitch | None = None) -> None:
        self._detach = detach_below and track
        self._switch = switch
        self._cut: object = None  # the autograd node of the copy passed on
        self._grad_point: torch.Tensor | None = None
        self._value: torch.Tensor | None = None
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
        self._cut = passed_on.grad_fn
        if self._switch is not None:
            self._switch.watch = True  # what runs from here on is above the layer
        if self._same:
            self._value = passed_on
        return passed_on

    def _on_value_module(self, _m: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        self._value = output

    def result(self, layer: LayerRef) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradient point, activations detached, in the layer's own layout) after the forward."""
        if self._grad_point is None or self._value is None:
            raise GradCamError(f"layer {layer!r} was not reached by the forward pass")
        return self._grad_point, self._value.detach()

    def crossed_only_by_layer(self, scores: torch.Tensor, leaf: torch.Tensor, unchanged: int) -> bool:
        """Whether the autograd graph walked back from ``scores``, stopping at the copy of the layer's
        output, reaches that copy, never ``leaf`` (a skip connection around the layer would), and holds
        no more switchable activations (:data:`~.guided.SWITCHABLE_FUNCTIONS`, called as modules or as
        functions) than ``unchanged``, the watched ones whose guided rule changed nothing in the plain
        backward. Other nodes, custom autograd functions included, do not read the switch: their
        backward is the same in both passes."""
        cut, root = self._cut, scores.grad_fn
        if cut is None or root is None:
            return False
        seen: set[object] = set()
        stack: list[Any] = [root]
        crossed, switchable = False, 0
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if node is cut:
                crossed = True
                continue
            if getattr(node, "variable", None) is leaf:
                return False
            switchable += getattr(node, "_forward_cls", None) in SWITCHABLE_FUNCTIONS
            stack.extend(n for n, _ in node.next_functions)
        return crossed and switchable == unchanged

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
