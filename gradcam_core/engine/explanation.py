"""What :func:`~gradcam_core.engine.explain` returns (:class:`Explanation`), how a layer is named
(:data:`LayerRef`) and the options of one call (:class:`_Options`): the types the engine's modules
(:mod:`.core`, :mod:`.smoothing`) share."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LayerRef = str | int | nn.Module
"""A layer: its name (a Caffe name or a module path), its 1-based loadcaffe number, or the module."""


@dataclass
class Explanation:
    """Maps for N images and K targets.

    Attributes:
        scores: the model output, (N, ...) detached (a detector's: its list of N dicts of tensors, each
            detached).
        target_scores: (N, K), the score of each target (the thing explained).
        activations: (N, C, h, w), the chosen layer's activations A (the (N, C, h, w) view of its
            output, whatever its layout: see ``layout``).
        weights: (N, K, C), the method's channel weights (Grad-CAM: the gradients summed over h, w), or
            None for a method without channel weights (HiResCAM, LayerCAM, Eigen-CAM, FullGrad, ...).
        cam_raw: (N, K, h, w), the method's map at the layer's resolution, after its ReLU, before
            scaling (Grad-CAM: ReLU(sum_c w_c A_c)); FullGrad's is at the input's resolution.
        cam: (N, K, H, W), ``cam_raw`` scaled to the input size (``image.scale`` semantics). Maps
            keep the model's precision (the Lua scripts scaled ``gcam:float()``; ``outputs`` renders
            the way they did).
        guided: (N, K, C_in, H, W), guided-backprop gradient w.r.t. the input (same channel order as the
            input), or None when ``guided=False``.
        guided_cam: (N, K, C_in, H, W), ``guided * cam`` (both unnormalised), or None.
        method: the name of the CAM method that made ``cam``.
        unguided: the activations whose plain gradient passed through ``guided`` because guided
            backprop cannot change them: functions its rule does not know
            (``"torch.nn.functional.elu"``) and TorchScript submodules holding activations
            (``"TorchScript module 'features'"``), in order of appearance; () when every activation was
            guided, and without guided backprop.
        layout: the layer's layout, ``"nchw"``, ``"nhwc"`` or ``"tokens"`` (:mod:`.layouts`).
    """

    scores: torch.Tensor
    target_scores: torch.Tensor
    activations: torch.Tensor
    weights: torch.Tensor | None
    cam_raw: torch.Tensor
    cam: torch.Tensor
    guided: torch.Tensor | None = None
    guided_cam: torch.Tensor | None = None
    method: str = "gradcam"
    unguided: tuple[str, ...] = ()
    layout: str = "nchw"

    def nonfinite(self, n: int) -> str:
        """What of image ``n``'s results holds a NaN or an infinity ("scores", "Grad-CAM map",
        "guided backprop"), or "" where all is finite. Such maps render as black images and such
        scores pick an arbitrary class, so a front end reports them instead of writing files."""
        parts = (("scores", self.scores), ("scores", self.target_scores), ("Grad-CAM map", self.cam_raw),
                 ("Grad-CAM map", self.cam), ("guided backprop", self.guided))
        for what, tensor in parts:
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor[n]).all()):
                return what
        return ""


@dataclass(frozen=True)
class _Options:
    guided: bool
    torch7_ties: bool | None
    eigen_smooth: bool
    batch_size: int | None
    progress: bool
    layer_layout: str = "auto"
