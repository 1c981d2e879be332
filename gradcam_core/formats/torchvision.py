"""torchvision classification and semantic segmentation models from a state_dict file, their class names
(ImageNet's, Pascal VOC's) and their input normalisation.

``load_torchvision("resnet50", Path("resnet50.pth"))`` builds the architecture with ``weights=None``
(nothing is ever downloaded) and loads the file with ``torch.load(..., weights_only=True)``: a file that
pickles Python objects (``torch.save(model)`` of a whole module) is refused, since unpickling it could
run arbitrary code. torchvision is imported only inside these functions (it takes 1-2 s to import).
"""
from __future__ import annotations

import difflib
import os
import pickle
import re
import warnings
from typing import Any, TypeGuard

import torch
from torch import nn

from ..errors import GradCamError
from ..fileio import open_regular

# torchvision's input, for every ImageNet model it ships: RGB, values in 0..1, then per channel
# (x - MEAN) / STD. (torchvision's own transforms also resize to 256 and crop 224; here the geometry is
# the tool's: the whole image scaled to the input size.)
CHANNEL_ORDER = "rgb"
VALUE_RANGE = 1.0
"""Pixel values are divided by 255 (0..1) before the normalisation."""
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel means (R, G, B), on the 0..1 scale."""
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel standard deviations (R, G, B), on the 0..1 scale."""

# Builder arguments torchvision itself sets when it loads its own ImageNet weights for these
# architectures (its weights for googlenet and inception_v3 expect ``transform_input=True``); the
# auxiliary classifiers are built when the file has them (unused in eval mode).
_AS_TORCHVISION_LOADS = {
    "googlenet": {"transform_input": True, "init_weights": False},
    "inception_v3": {"transform_input": True, "init_weights": False},
}
_AUX_PREFIXES = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}
# DenseNet checkpoints published before module names could not hold dots: "...denselayer1.norm.1.weight"
# is today's "...denselayer1.norm1.weight" (torchvision renames them the same way when it loads them).
_ZIP_MAGIC, _PICKLE_PROTO = b"PK\x03\x04", b"\x80"
_OLD_DENSENET_KEY = re.compile(r"(\.denselayer\d+\.(?:norm|relu|conv))\.([12])\.")


def architectures() -> list[str]:
    """Names of torchvision's classification architectures (``resnet50``, ``mobilenet_v3_small``, ...)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def load_torchvision(
    arch: str,
    weights: str | os.PathLike[str] | None,
    device: str | torch.device = "cpu",
    *,
    num_classes: int | None = None,
    **builder_kwargs: Any,
) -> nn.Module:
    """The torchvision classification model ``arch`` with the state_dict in ``weights``, in eval mode.

    Args:
        arch: an architecture name from :func:`architectures` (case-insensitive).
        weights: a file made by ``torch.save(model.state_dict(), path)`` (a checkpoint dict holding it
            under ``"state_dict"`` or ``"model"``, and ``nn.DataParallel``'s ``"module."`` prefix, are
            accepted too); None keeps torchvision's random initialisation.
        device: where the model lives.
        num_classes: the classifier's width; by default 1000, or the width of the file's last layer
            when that differs (a fine-tuned model).
        builder_kwargs: passed to torchvision's builder (e.g. ``image_size=518`` for a ViT trained at
            that size); googlenet and inception_v3 are built as torchvision builds them for its own
            ImageNet weights (``transform_input=True``).

    The model maps (N, 3, H, W) normalised RGB (see :data:`MEAN`, :data:`STD`) to (N, num_classes)
    logits. Raises GradCamError (one line, naming the file) for an unknown architecture, a file that is
    not a torch file, a file holding pickled objects, or a state_dict that does not fit ``arch``.
    """
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    arch = _known_arch(arch, names)
    state = None if weights is None else _read_state_dict(weights)
    kwargs: dict[str, Any] = dict(_AS_TORCHVISION_LOADS.get(arch, {}))
    if arch in _AUX_PREFIXES:
        kwargs["aux_logits"] = state is not None and any(k.startswith(_AUX_PREFIXES[arch]) for k in state)
    kwargs.update(builder_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes

    def build(**extra: Any) -> nn.Module:
        try:
            return torchvision.models.get_model(arch, weights=None, **kwargs, **extra)
        except (TypeError, ValueError) as err:
            raise GradCamError(f"cannot build torchvision model {arch!r}: {err}") from err

    model = build()
    if state is not None:
        assert weights is not None  # (the state was read from them)
        if arch.startswith("densenet"):
            state = {_OLD_DENSENET_KEY.sub(r"\1\2.", k): v for k, v in state.items()}
        width = _file_classes(model, state) if num_classes is None else None
        if width is not None:
            model = build(num_classes=width)
        _check_fits(model, state, weights, arch)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:  # a tensor kind the checks above do not know: still one line
            detail = " ".join(str(err).split())[:200]
            raise GradCamError(f"torchvision weights {os.fspath(weights)!r} do not fit {arch}: {detail}") from None
    return model.to(device).eval()


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names of torchvision's models, by 0-based class index
    (``[0] == "tench"``, ``[282] == "tiger cat"``), from torchvision's own weights metadata: no download."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def categories(arch: str) -> list[str]:
    """The class names of ``arch``'s ImageNet weights in torchvision (the same 1000 names for every
    classification architecture torchvision ships)."""
    import torchvision

    arch = _known_arch(arch, torchvision.models.list_models(module=torchvision.models))
    enum = torchvision.models.get_model_weights(arch)
    return list(next(iter(enum)).meta["categories"])


# --- semantic segmentation -----------------------------------------------------------------------

SEGMENTATION_PREFIX = "aux_classifier."
"""The state_dict keys of a segmentation model's auxiliary head (in torchvision's trained weights;
its output ``"aux"`` is not explained)."""


def segmentation_architectures() -> list[str]:
    """torchvision's semantic segmentation architectures (``deeplabv3_resnet50``, ``fcn_resnet50``,
    ``lraspp_mobilenet_v3_large``, ...)."""
    from torchvision.models import segmentation

    return sorted(torchvision_models(segmentation))


def torchvision_models(module: Any) -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=module))


def load_segmentation(arch: str, weights: str | os.PathLike[str] | None, device: str | torch.device = "cpu"
                      ) -> nn.Module:
    """The torchvision segmentation model ``arch`` with the state_dict in ``weights`` (None: random
    weights), in eval mode; built with ``weights=None, weights_backbone=None`` (nothing is downloaded),
    its class count and auxiliary head as the file has them. The model maps (N, 3, H, W) normalised
    RGB to ``{"out": (N, classes, H, W), "aux": ...}`` (``"aux"`` only with the auxiliary head).
    Errors as :func:`load_torchvision`'s."""
    from torchvision.models import segmentation

    arch = _known_arch(arch, torchvision_models(segmentation), "segmentation")
    state = None if weights is None else _read_state_dict(weights)
    aux = state is not None and any(k.startswith(SEGMENTATION_PREFIX) for k in state)

    def build(**extra: Any) -> nn.Module:
        import torchvision

        try:
            return torchvision.models.get_model(arch, weights=None, weights_backbone=None, **extra)
        except (TypeError, ValueError) as err:
            raise GradCamError(f"cannot build torchvision model {arch!r}: {err}") from err

    model = build(aux_loss=True) if aux else build()
    if state is not None:
        assert weights is not None
        width = _file_classes(model, state)
        if width is not None:
            model = build(num_classes=width, aux_loss=True) if aux else build(num_classes=width)
        _check_fits(model, state, weights, arch)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:200]
            raise GradCamError(f"torchvision weights {os.fspath(weights)!r} do not fit {arch}: {detail}") from None
    return model.to(device).eval()


def segmentation_categories() -> list[str]:
    """The 21 Pascal VOC class names of torchvision's segmentation weights, by 0-based class
    (``[0] == "__background__"``, ``[15] == "person"``), from the weights' metadata: no download."""
    from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights

    return list(DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.meta["categories"])


# --- internals -----------------------------------------------------------------------------------


def _known_arch(arch: str, names: list[str], kind: str = "classification") -> str:
    if arch in names:
        return arch
    lowered = {n.lower(): n for n in names}
    if arch.lower() in lowered:
        return lowered[arch.lower()]
    close = difflib.get_close_matches(arch.lower(), list(lowered), n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(lowered[c] for c in close)}? " if close else ""
    raise GradCamError(
        f"unknown torchvision architecture {arch!r}: {hint}the {kind} architectures are "
        + ", ".join(sorted(names))
    )


def _read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state_dict in ``path``, read with ``weights_only=True`` (tensors and plain containers only)."""
    shown = repr(os.fspath(path))
    try:
        f = open_regular(path)
    except OSError as err:
        raise GradCamError(f"cannot read torchvision weights {shown}: {err.strerror or err}") from err
    with f:
        head = f.read(4)
        if not head.startswith((_ZIP_MAGIC, _PICKLE_PROTO)):  # torch.save's zip archive, or the legacy pickle
            what = "it is empty" if not head else "it is neither a zip archive nor a pickle"
            raise GradCamError(f"torchvision weights {shown} are not a torch file: {what}")
        f.seek(0)
        try:
            with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
                warnings.simplefilter("ignore")
                loaded = torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            # "Unsupported global: GLOBAL torchvision.models.resnet.ResNet", or "... unsupported GLOBAL
            # posix.system whose module posix is blocked": a class or function the file would call
            found = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", str(err), re.IGNORECASE)
            if found:
                raise GradCamError(
                    f"refusing torchvision weights {shown}: the file holds pickled Python objects "
                    f"({found.group(1)}), not only tensors, and loading it could run code; save "
                    "model.state_dict() instead"
                ) from err
            raise _not_a_torch_file(shown, err) from err
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
                AttributeError, UnicodeDecodeError, OverflowError, MemoryError) as err:
            raise _not_a_torch_file(shown, err) from err
    state = _unwrap(loaded)
    if state is None:
        raise GradCamError(
            f"torchvision weights {shown} hold a {type(loaded).__name__}, not a state_dict (a dict of "
            "parameter names to tensors)"
        )
    return state


def _not_a_torch_file(shown: str, err: BaseException) -> GradCamError:
    # torch's weights-only errors open with a paragraph about weights_only: keep the line saying the cause
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "WeightsUnpickler error:")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    cause = [line for line in lines if not line.startswith(boilerplate)]
    detail = (cause or lines or [""])[0]
    if len(detail) > 160:  # torch's zip reader explains at length: its first sentence says it
        detail = detail[: detail.find(". ", 40) + 1 or 160].rstrip()
    detail = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
    return GradCamError(f"torchvision weights {shown} are not a readable torch file ({detail[:200]})")


def _unwrap(loaded: object) -> dict[str, torch.Tensor] | None:
    """The name -> tensor dict in what ``torch.load`` returned: the dict itself, or a checkpoint's
    ``"state_dict"`` / ``"model"`` entry; a common ``"module."`` prefix (``nn.DataParallel``) is removed."""
    def is_state(d: object) -> TypeGuard[dict[str, torch.Tensor]]:
        return (isinstance(d, dict) and bool(d) and all(isinstance(k, str) for k in d)
                and all(isinstance(v, torch.Tensor) for v in d.values()))

    if not is_state(loaded) and isinstance(loaded, dict):
        loaded = next((loaded[k] for k in ("state_dict", "model") if is_state(loaded.get(k))), loaded)
    if not is_state(loaded):
        return None
    state = dict(loaded)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _file_classes(model: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """The file's class count where it differs from the model's: the leading size of the file's tensor
    for the model's last parameter (the classifier's bias or weight), else None."""
    params = [name for name, _ in model.named_parameters()]
    if not params or params[-1] not in state:
        return None
    mine, theirs = model.state_dict()[params[-1]], state[params[-1]]
    if theirs.dim() != mine.dim() or theirs.dim() == 0 or theirs.shape[1:] != mine.shape[1:]:
        return None
    return int(theirs.shape[0]) if theirs.shape[0] != mine.shape[0] and theirs.shape[0] > 0 else None


def _check_fits(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike[str],
                arch: str) -> None:
    """One line for the first difference between ``state`` and ``model.state_dict()``: a key the file
    lacks, a key the model lacks, a tensor of another shape (both shapes given), a sparse, quantized or
    meta tensor where the model has a dense one, or a float where the model has an integer."""
    expected = model.state_dict()
    where = f"torchvision weights {os.fspath(path)!r} do not fit {arch}"
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        more = f" ({len(missing)} keys missing in all)" if len(missing) > 1 else ""
        raise GradCamError(f"{where}: the file has no {missing[0]!r}{more}")
    if unexpected:
        more = f" ({len(unexpected)} unexpected keys in all)" if len(unexpected) > 1 else ""
        raise GradCamError(f"{where}: the model has no {unexpected[0]!r}{more}")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise GradCamError(
                f"{where}: {key!r} is {_shape(state[key])} in the file, {_shape(tensor)} in the model"
            )
        if state[key].layout != torch.strided or state[key].is_quantized or state[key].is_meta:
            kind = "a quantized" if state[key].is_quantized else "a meta" if state[key].is_meta else (
                f"a sparse ({state[key].layout})".replace("torch.", ""))
            raise GradCamError(f"{where}: {key!r} is {kind} tensor in the file; the model takes dense tensors")
        if state[key].is_floating_point() != tensor.is_floating_point():
            raise GradCamError(f"{where}: {key!r} is {state[key].dtype} in the file, {tensor.dtype} in the model")


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


__all__ = ["CHANNEL_ORDER", "MEAN", "STD", "VALUE_RANGE", "architectures", "categories", "imagenet_categories",
           "load_segmentation", "load_torchvision", "segmentation_architectures", "segmentation_categories"]
