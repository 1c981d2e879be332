"""Classification: a classifier network and what to explain of it, class logits.

The original loaded the Caffe net, dropped its final SoftMax (``cnn:remove()``) and explained a
one-hot on the pre-softmax logits. Everything here is 0-based (class index 242 is ImageNet's "boxer",
the CLI's ``-label 243``); the CLI converts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from ..engine import ClassTarget, Explanation, explain
from ..errors import GradCamError
from ..formats.caffe.meanfile import mean_preprocessing
from ..formats.registry import CAFFE, FORMATS, format_of
from ..formats.synset import ClassNames, find_synset, parse_synset, read_synset
from ..image.preprocessing import Preprocessing
from ..nets.graph import GraphNet

if TYPE_CHECKING:
    from ..formats.onnx import OnnxNet


def load_classifier(proto_file: Path, model_file: Path, device: torch.device = torch.device("cpu"),
                    dtype: torch.dtype = torch.float32) -> GraphNet:
    """The Caffe net with its final Softmax removed (only a final Softmax, in V1 and V2 files alike):
    Grad-CAM follows the pre-softmax logit. (The VQA image net starts from this net too.)"""
    net = CAFFE.load(model_file, proto_file=proto_file, device=device, dtype=dtype, strip_softmax=True)
    return cast(GraphNet, net)


def explain_classes(
    net: nn.Module, image: torch.Tensor, layer: str | int, classes: Sequence[int | None],
    *, names: Sequence[str] = (),
) -> tuple[Explanation, list[list[int]]]:
    """Explain K classes for a batch of N images from one forward.

    Args:
        image: (N, C, H, W) preprocessed for ``net``.
        classes: K 0-based class indices; None = each image's predicted class.
        names: how the user named each class, for the out-of-range message (e.g. "-label 1001").
    Returns:
        the explanation (K targets) and, per image, the 0-based class index of each target.
    """
    expl = explain(net, image, layer, class_targets(classes, names))
    return expl, resolve_classes(expl.scores, classes)


def class_targets(classes: Sequence[int | None], names: Sequence[str] = ()) -> list[ClassTarget]:
    """One :class:`ClassTarget` per 0-based class (None = each image's predicted class), each named
    ``names[k]`` in its out-of-range message."""
    return [ClassTarget(c, label=names[k] if k < len(names) else "") for k, c in enumerate(classes)]


def resolve_classes(scores: torch.Tensor, classes: Sequence[int | None]) -> list[list[int]]:
    """Per image of ``scores`` (N, ...), the 0-based class of each target (None: its predicted class)."""
    predicted = scores.reshape(scores.shape[0], -1).argmax(dim=1).tolist()
    return [[p if c is None else c for c in classes] for p in predicted]


ORIGINAL_LAYER = "relu5_3"  # classification.lua's -layer_name (VGG-16's)


def default_classifier_layer(net: nn.Module, example: torch.Tensor, preferred: str = ORIGINAL_LAYER) -> str:
    """The layer explained when none is named: ``preferred`` (the original's default) where the net has
    it, else the last layer whose output is a spatial map for ``example`` (1, 3, S, S)."""
    from ..engine import resolve_layer
    from ..engine.layers import default_layer

    try:
        resolve_layer(net, preferred)
        return preferred
    except GradCamError:
        return default_layer(net, example)


# --------------------------------------------------------------------------------------------------
# Any classifier: Caffe, ONNX or torchvision, with its own preprocessing and class names

DEFAULT_INPUT_SIZE = 224  # the original's -input_sz
# Each format's preprocessing when no option says otherwise (formats.registry): Caffe nets take the
# original's VGG input (so every existing command keeps its meaning), torchvision's and ONNX exports theirs.


@dataclass(frozen=True)
class InputOptions:
    """The preprocessing options, named after Caffe's ``transform_param`` ("" / None = the format's).

    ``mean_value`` is per channel in the NET's channel order; ``mean_file`` a Caffe mean image
    (``mean.binaryproto``), fitted to the input size as the image is (``image.scale``);
    ``input_scale`` is Caffe's ``scale``, applied after the mean."""

    preprocess: str = ""
    mean_value: tuple[float, ...] | None = None
    mean_file: Path | None = None
    input_scale: float | None = None
    channel_order: str = ""


def preprocessing_for(fmt: str, options: InputOptions = InputOptions(),
                      own: Preprocessing | None = None) -> Preprocessing:
    """Where a model's preprocessing is chosen: ``options.preprocess``, else the model file's ``own``
    (an ONNX file's metadata), else the format's default (``ModelFormat.preprocessing``); then each
    option given replaces its part."""
    base = options.preprocess or ("" if own is not None else FORMATS[fmt].preprocessing)
    if not base:
        assert own is not None  # (no base only when the file has its own)
        prep = own
    else:
        prep = Preprocessing.torchvision_imagenet() if base == "torchvision" else Preprocessing.caffe_vgg()
    changes: dict[str, Any] = {}
    if options.channel_order:
        changes["channel_order"] = options.channel_order
    if options.mean_value is not None:
        changes.update(mean=options.mean_value, mean_image=None)
    if options.input_scale is not None:
        changes["input_scale"] = options.input_scale
    if changes:
        prep = dataclasses.replace(prep, **changes)
    if options.mean_file is not None:
        prep = mean_preprocessing(options.mean_file, prep)
    return prep


@dataclass
class Classifier:
    """A loaded classifier.

    Attributes:
        net: maps (N, 3, S, S) preprocessed images to (N, K) pre-softmax scores.
        fmt: "caffe", "onnx" or "torchvision".
        preprocessing: how an image becomes its input.
        names: its K class names, or None where they are unknown.
        source: the model file, as messages name it.
        input_size: the (H, W) to explain at when none is asked for (an ONNX file's metadata), or None.
        fixed_size: the (H, W) the model takes only (an ONNX graph input with fixed H and W), or None.
    """

    net: nn.Module
    fmt: str
    preprocessing: Preprocessing
    names: ClassNames | None
    source: str = ""
    input_size: tuple[int, int] | None = None
    fixed_size: tuple[int, int] | None = None

    def square_input_size(self, requested: int | None, option: str = "-input_sz") -> int:
        """The side S of the square (S x S) input to explain at: ``requested`` (the ``option``'s value,
        None = not given), else the model's own size (:attr:`input_size`, else :attr:`fixed_size`),
        else :data:`DEFAULT_INPUT_SIZE`. A size the model does not take, or a non-square own size, is a
        GradCamError naming the option and both sizes."""
        fixed = self.fixed_size
        if requested is not None:
            if fixed is not None and fixed != (requested, requested):
                raise GradCamError(f"{option} {requested}: {self.source} takes only {fixed[0]}x{fixed[1]} inputs")
            return requested
        own = self.input_size or fixed
        if own is None:
            return DEFAULT_INPUT_SIZE
        if fixed is not None and own != fixed:
            raise GradCamError(f"{self.source}: its metadata asks for {own[0]}x{own[1]} inputs, "
                               f"but the graph takes only {fixed[0]}x{fixed[1]}")
        if own[0] != own[1]:
            raise GradCamError(f"{self.source} takes {own[0]}x{own[1]} inputs, but {option} explains square "
                               f"images only")
        return own[0]


def load_model(model_file: Path, *, proto_file: Path | None = None, arch: str = "",
               device: torch.device = torch.device("cpu"), synset_file: Path | None = None,
               inputs: InputOptions = InputOptions()) -> Classifier:
    """A classifier from its files: torchvision when ``arch`` names an architecture (``model_file`` a
    state_dict), ONNX when ``model_file`` is an ONNX model, else Caffe (``proto_file`` + ``model_file``).
    Class names: ``synset_file``, else an ONNX file's own (its metadata), else a ``synset_words.txt``
    beside the model file, else torchvision's ImageNet names for a torchvision model with 1000 outputs.
    An ONNX file's metadata also gives the preprocessing (when ``inputs.preprocess`` is not given; the
    other options still replace their parts) and :attr:`Classifier.input_size`."""
    names = read_synset(synset_file) if synset_file is not None else None
    own, input_size, fixed_size = None, None, None
    fmt = format_of(model_file, arch)
    net = fmt.load(model_file, proto_file=proto_file, arch=arch, device=device, strip_softmax=True)
    if fmt.name == "onnx":
        onnx_net = cast("OnnxNet", net)
        own_names, own_size = onnx_net.metadata.get("class_names"), onnx_net.metadata.get("input_size")
        own = _own_preprocessing(net, str(model_file))
        names = names or (own_names if isinstance(own_names, ClassNames) else None)
        input_size = own_size if isinstance(own_size, tuple) else None
        _, height, width = onnx_net.input_shape
        fixed_size = (height, width) if height is not None and width is not None else None
    if names is None and (found := find_synset(model_file)) is not None:
        names = read_synset(found)
    if names is None and arch and _outputs(net) == 1000:
        from ..formats import torchvision as tv

        names = parse_synset("\n".join(tv.categories(arch)), "torchvision's ImageNet class names")
    return Classifier(net, fmt.name, preprocessing_for(fmt.name, inputs, own), names, str(model_file), input_size,
                      fixed_size)


def _own_preprocessing(net: nn.Module, source: str) -> Preprocessing | None:
    """An ONNX file's preprocessing from its metadata, or None."""
    from ..formats.onnx import METADATA_PREPROCESSING

    fields = getattr(net, "metadata", {}).get("preprocessing")
    if fields is None:
        return None
    # (the fields and their types were checked by read_gradcam_metadata)
    checked: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    try:
        return Preprocessing(**checked)
    except GradCamError as err:
        raise GradCamError(f"{source}: metadata '{METADATA_PREPROCESSING}': {err}") from None


def _outputs(net: nn.Module) -> int | None:
    """The width of a classifier's last Linear (or 1x1 Convolution) layer, or None."""
    last = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not last:
        return None
    return last[-1].out_features if isinstance(last[-1], nn.Linear) else last[-1].out_channels
