"""The one task interface of every front end: a :class:`Task` turns its model, its inputs and its targets
into :func:`~gradcam_core.engine.explain` calls and names what comes out.

A task (classification, VQA, captioning: :mod:`.classification`, :mod:`.vqa`, :mod:`.captioning`)

* loads its models from its files (``Task.load``), knows its preprocessing, input size and the
  layer explained when none is named (:meth:`Task.default_layer`);
* turns the targets as a user typed them (labels or class names, answers, captions; '' = the predicted
  or generated one) into what it explains (:meth:`Task.targets`), refusing a bad one with one line
  before any image is read;
* explains a batch of preprocessed images for those targets with the CAM methods and modifiers of a
  :class:`Methods` (:meth:`Task.explain`), and says per image what each target turned out to be:
  the name its files carry, its JSON, the predictions and the lines a command line prints
  (:class:`ImageResult`).

The command line (``cli/program.py``) and the web demo (``web/demo.py``) drive the same tasks; only the
wording of options and the shape of the answer (files and stdout, or JSON) are theirs. Messages name a
target's field as the front end calls it (``option``: ``-label`` or ``label``).

Files: :func:`render_target` renders one target's images for one method, named as the original
scripts named Grad-CAM's (``<prefix>_gcam_hm_<name>.png``, ``<prefix>_gb_<name>.png``,
``<prefix>_gb_gcam_<name>.png``, ``<prefix>_overlay_<name>.png``) and, for any other method or with
``counterfactual``, with the method's token instead of ``gcam`` (:func:`method_token`).
"""
from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import torch

from ..errors import GradCamError

if TYPE_CHECKING:
    from torch import nn

    from ..engine import Explanation
    from ..image.preprocessing import Preprocessing
    from .outputs import Rendered

DEFAULT_METHOD = "gradcam"
"""The original's method: its files keep the original's names."""

DEFAULT_INPUT_SIZE = 224
"""The original's ``-input_sz``."""


def method_token(name: str, counterfactual: bool = False) -> str:
    """How the files of method ``name`` are named: ``gcam`` for Grad-CAM (the original's files), else
    the method's name with ``+`` written ``p`` (``gradcam++`` -> ``gradcampp``); ``counterfactual`` adds
    ``_cf`` (Grad-CAM's counterfactual: ``gradcam_cf``, so it never overwrites the original's files)."""
    if name == DEFAULT_METHOD and not counterfactual:
        return "gcam"
    return name.replace("+", "p") + ("_cf" if counterfactual else "")


@dataclass(frozen=True)
class Methods:
    """The CAM methods an explanation uses and the modifiers they all take (see
    :func:`~gradcam_core.engine.explain`).

    Attributes:
        names: registered method names, in the order their files are written (duplicates dropped).
        counterfactual: explain each target's negated score (files: the token gets ``_cf``, guided
            backprop is ``<prefix>_gb_cf_<name>.png``).
        aug_smooth, eigen_smooth: pytorch-grad-cam's smoothings (the file names do not change).
        batch_size: the most perturbed inputs a perturbation method runs in one forward (None: the
            engine's choice).
        progress: methods with many forwards may show a progress bar on a terminal.
        layer_layout: how the layer's output holds its map (``"auto"``, ``"nchw"``, ``"nhwc"``,
            ``"tokens"``: :mod:`gradcam_core.engine.layouts`).
    """

    names: tuple[str, ...] = (DEFAULT_METHOD,)
    counterfactual: bool = False
    aug_smooth: bool = False
    eigen_smooth: bool = False
    batch_size: int | None = None
    progress: bool = False
    layer_layout: str = "auto"

    def __post_init__(self) -> None:
        from ..engine.layouts import check_layout
        from ..engine.methods import lookup

        check_layout(self.layer_layout)

        names = tuple(dict.fromkeys(self.names))
        if not names:
            raise GradCamError("no CAM method given: name at least one (e.g. gradcam)")
        for name in names:
            lookup(name)  # an unknown name: one line listing the known ones
        object.__setattr__(self, "names", names)

    def explain_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~gradcam_core.engine.explain` (a list of methods: a dict of
        explanations)."""
        return {"method": list(self.names), "counterfactual": self.counterfactual, "aug_smooth": self.aug_smooth,
                "eigen_smooth": self.eigen_smooth, "batch_size": self.batch_size, "progress": self.progress,
                "layer_layout": self.layer_layout}

    def token(self, name: str) -> str:
        """The file-name token of method ``name`` (:func:`method_token`)."""
        return method_token(name, self.counterfactual)

    @property
    def guided_token(self) -> str:
        """Guided backprop's file-name token: ``gb`` (``gb_cf`` for the negated targets)."""
        return "gb_cf" if self.counterfactual else "gb"

    @property
    def modifiers(self) -> dict[str, bool]:
        """The modifiers as a front end reports them."""
        return {"counterfactual": self.counterfactual, "aug_smooth": self.aug_smooth, "eigen_smooth": self.eigen_smooth}


def method_list() -> list[dict[str, Any]]:
    """Every registered method: name, one-line summary, whether its map depends on the target."""
    from ..engine.methods import lookup, method_names

    return [{"name": name, "summary": lookup(name).summary, "uses_target": lookup(name).uses_target}
            for name in method_names()]


@dataclass
class TargetResult:
    """What one target of one image turned out to be.

    Attributes:
        name: the target in its file names (a label, an answer, a caption).
        shown: the target as a front end reports it (JSON: ``{"label": 243, "name": "boxer"}``,
            ``{"answer": ..., "question": ...}``, ``{"caption": ...}``).
    """

    name: str
    shown: dict[str, Any]
    index: int | None = None
    """The target's position in the batch's explanations (K), where an image explains only some of
    them (segmentation's classes present in that image); None: its position in the image's list."""

    def position(self, k: int) -> int:
        """Where this target, ``k``-th of its image, is in the explanations."""
        return k if self.index is None else self.index


@dataclass
class ImageResult:
    """One image's results: its targets (in the order asked), what the model predicted, the top
    predictions where the task has them, and the lines a command line prints for it."""

    targets: list[TargetResult]
    predicted: dict[str, Any]
    predictions: list[dict[str, Any]] | None = None
    lines: list[str] = field(default_factory=list)


@dataclass
class BatchResult:
    """A batch of N images explained for K targets: one explanation (N, K, ...) per method, in the
    order of :attr:`Methods.names`, and each image's :class:`ImageResult`."""

    explanations: dict[str, Explanation]
    images: list[ImageResult]

    @property
    def unguided(self) -> tuple[str, ...]:
        """The activations guided backprop could not guide (``Explanation.unguided``, the same for
        every method: one forward)."""
        return next(iter(self.explanations.values())).unguided if self.explanations else ()

    def nonfinite(self, n: int) -> str:
        """What of image ``n`` holds a NaN or an infinity, in any method's explanation ("" if none)."""
        for expl in self.explanations.values():
            if bad := expl.nonfinite(n):
                return bad
        return ""


S = TypeVar("S")
"""A task's parsed targets (what :meth:`Task.targets` returns and :meth:`Task.explain` takes)."""


class Task(abc.ABC, Generic[S]):
    """One task with its loaded model, as every front end drives it (see the module doc)."""

    name: ClassVar[str]
    """``classification``, ``vqa`` or ``captioning`` (the web API's ``task``)."""
    prefix: ClassVar[str]
    """The files' prefix: ``classify``, ``vqa`` or ``caption``."""
    target_field: ClassVar[str]
    """What a target is called in options and fields: ``label``, ``answer``, ``caption``."""
    original_layer: ClassVar[str]
    """The original script's default layer."""
    default_layer_reason: str | None = None
    """Why :meth:`default_layer` chose its layer, as a command line prints it (None: the engine's
    :func:`~gradcam_core.engine.layers.describe_default` says)."""
    dtype: ClassVar[torch.dtype] = torch.float32
    """The precision of the images and of the rendered maps (the original's default tensor type)."""

    net: nn.Module
    """The net whose layers are explained."""
    model_name: str
    """How messages name the loaded model (its file)."""
    preprocessing: Preprocessing | None = None
    """How an image becomes the net's input (None: the original's ``utils.preprocess``)."""
    fixed_batch: int | None = None
    """A batch size the model fixes (an ONNX export with its batch axis baked in), or None."""

    def input_size(self, requested: int | None) -> int:
        """The side of the square input: ``requested``, or for None the model's own (224 here)."""
        return DEFAULT_INPUT_SIZE if requested is None else requested

    def default_layer(self, input_sz: int) -> str:
        """The layer explained when none is named (:attr:`original_layer` here)."""
        return self.original_layer

    def config(self) -> dict[str, Any]:
        """What a front end offers for choosing targets (class names, answers, a question), as JSON."""
        return {}

    @abc.abstractmethod
    def targets(self, values: Sequence[str], *, option: str = "", strict: bool = False,
                question: str | None = None) -> S:
        """The targets as typed (``values``; '' = the predicted or generated one), checked.

        Args:
            option: how messages name the field (``-label``, ``answer``; default :attr:`target_field`).
            strict: refuse what a command line replaces (VQA: an unknown answer, an empty question).
            question: VQA's question (None: the one the task was loaded with); other tasks ignore it.
        """

    def start_lines(self, targets: S) -> list[str]:
        """The lines a command line prints once, before the first image (VQA: the question's tokens)."""
        return []

    @abc.abstractmethod
    def explain(self, images: torch.Tensor, layer: str, targets: S, methods: Methods) -> BatchResult:
        """Explain the batch ``images`` (N, 3, S, S), preprocessed, for ``targets`` at ``layer``."""

    def extra_images(self, batch: BatchResult, n: int, *, overlay: bool = False) -> list[Rendered]:
        """Image ``n``'s files beyond every method's (:func:`render_image`), e.g. segmentation's class
        masks with ``overlay`` (``-save_overlay 1``); none here."""
        return []


def render_target(prefix: str, name: str, expl: Explanation, n: int, k: int, methods: Methods, *,
                  heatmap: bool = True, dtype: torch.dtype = torch.float32, rgb: torch.Tensor | None = None,
                  guided: bool = True) -> dict[str, Rendered]:
    """The images of target ``k`` of image ``n`` for the method of ``expl``, by kind: ``gcam`` (the
    map: heatmap colours, or the grey map without ``heatmap``), ``gb`` (guided backprop; only with
    ``guided``: it is the same for every method), ``gb_gcam`` (guided backprop x the map) and, when
    ``rgb`` (3, S, S) the image before preprocessing is given, ``overlay``. Pixels and names of
    Grad-CAM's files are the original's (see the module doc for the other methods')."""
    from . import outputs

    assert expl.guided is not None  # the front ends always explain with guided backprop
    token = methods.token(expl.method)
    cam, gb = expl.cam[n, k], expl.guided[n, k]
    out = {"gcam": outputs.render_map(prefix, token, name, cam, heatmap=heatmap, dtype=dtype)}
    if guided:
        out["gb"] = outputs.render_guided(prefix, methods.guided_token, name, gb, dtype=dtype)
    out["gb_gcam"] = outputs.render_guided_map(prefix, token, name, gb, cam, dtype=dtype)
    if rgb is not None:  # the same scaled map, always as the colour heatmap
        out["overlay"] = outputs.render_overlay(prefix, name, cam, rgb, token="" if token == "gcam" else token)
    return out


def render_image(prefix: str, batch: BatchResult, n: int, methods: Methods, *, heatmap: bool = True,
                 dtype: torch.dtype = torch.float32, rgb: torch.Tensor | None = None) -> list[Rendered]:
    """Every file of image ``n``: per target, each method's images (:func:`render_target`), guided
    backprop once (with the first method)."""
    out: list[Rendered] = []
    for k, target in enumerate(batch.images[n].targets):
        for i, name in enumerate(methods.names):
            out += render_target(prefix, target.name, batch.explanations[name], n, target.position(k), methods,
                                 heatmap=heatmap, dtype=dtype, rgb=rgb, guided=i == 0).values()
    return out
