"""Every command-line option written once: its name, default, help line and conversion (:class:`Option`),
and each command's options in ``--help`` order (:class:`OptionTable`), from which python-fire gets the
command's signature (names, order, defaults) and the ``Args:`` section of its docstring (the help).

An option several commands take is one :class:`Option` below; a command's table lists it, with
``.but(...)`` where that command differs (``LAYER_NAME.but(default="relu5_4")``); the web command's
copies of the VQA sizes are the same options renamed (``.prefixed("vqa_", "VQA: ")``). A command is its
table's :meth:`OptionTable.command` over a body that receives the converted values::

    from .. import optiontable as opt

    OPTIONS = opt.OptionTable(opt.PROTO_FILE.but(default=PROTO), ..., opt.SEED, opt.GPUID)

    @OPTIONS.command
    def main(v: SimpleNamespace) -> None:
        '''Summary line; description (--help shows it; its Args: section is made from OPTIONS).'''
        ... v.batch_size ...  # an int >= 1: as_positive_int ran before the body, naming the option

An option of all four commands (the three scripts and ``python -m gradcam_core.web``) is one entry here::

    COLOURS = Option("colours", "jet", "the heatmap's colour map: jet or grey.", choice("jet", "grey"))

plus one line ``opt.COLOURS,`` in each command's table (cli/commands/classification.py, vqa.py,
captioning.py; web/__main__.py); each body then reads ``v.colours`` (as the three scripts' bodies read
``-method`` and its modifiers, :data:`METHOD_OPTIONS`, in ``commands/common.run_fields``).

Every value is converted before the body runs, in table order (the first bad option in ``--help`` order
is the one named): a typed value arrives as the string the user typed, a default as its own type (see
:func:`.options.given`), and each converter is one of :mod:`.options`' (``as_int``, ``as_switch``, ...),
with its messages. The body checks the files the options name (:mod:`.paths`), after every value fits.
Torch-free: the entry scripts import it for ``--help``.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

from .options import (
    as_choice,
    as_float,
    as_input_size,
    as_int,
    as_label_list,
    as_positive_int,
    as_str,
    as_str_list,
    as_switch,
    given,
)

Converter = Callable[[str, Any], Any]
"""``convert(option name, value) -> converted value``, raising GradCamError naming the option."""


# ------------------------------------------------------------------ converters built on cli/options.py


def text(name: str, value: Any) -> Any:
    """The value as the string the user typed (:func:`.options.as_str`; a default as its text)."""
    return as_str(value)


def choice(*choices: str) -> Converter:
    """One of ``choices`` (:func:`.options.as_choice`)."""
    return lambda name, value: as_choice(name, value, choices)


def is_one(name: str, value: Any) -> bool:
    """A whole number (:func:`.options.as_int`): True for 1, False for any other (``-save_as_heatmap``)."""
    return as_int(name, value) == 1


def separated(sep: str) -> Converter:
    """Several strings in one value, split at ``sep`` or a list literal (:func:`.options.as_str_list`)."""
    return lambda name, value: as_str_list(name, value, sep)


def when_given(convert: Converter) -> Converter:
    """``convert`` of a value the user typed; None when the option was not given (the default stands for
    "the model's own", as ``-input_sz`` of an ONNX classifier)."""
    return lambda name, value: convert(name, value) if given(value) else None


# ----------------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Option:
    """One option: ``-name`` (a Python identifier), its default (its type is the one a typed value is
    converted to, as torch.CmdLine did), its help (one line in ``--help``) and its converter."""

    name: str
    default: Any
    help: str
    convert: Converter = text

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.help.strip() or "\n" in self.help:
            raise ValueError(f"option {self.name!r}: a Python name and a one-line help text")

    def but(self, **changes: Any) -> Option:
        """This option with some fields changed, for one command (``default=``, ``help=``, ``convert=``)."""
        return replace(self, **changes)

    def prefixed(self, prefix: str, help_prefix: str) -> Option:
        """This option under a prefixed name, its help prefixed (the web's ``-vqa_rnn_size``, "VQA: ...")."""
        return replace(self, name=prefix + self.name, help=help_prefix + self.help)


class OptionTable:
    """A command's options, in ``--help`` order (each name once)."""

    def __init__(self, *options: Option) -> None:
        names = [o.name for o in options]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"options given twice: {', '.join(twice)}")
        self.options: tuple[Option, ...] = options
        self._by_name = {o.name: o for o in options}

    def __getitem__(self, name: str) -> Option:
        return self._by_name[name]

    def signature(self) -> inspect.Signature:
        """What fire (and ``cli.app._normalize_argv``) read: one keyword parameter per option, defaulted."""
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD  # fire passes the parameters it parsed positionally
        return inspect.Signature([inspect.Parameter(o.name, kind, default=o.default) for o in self.options])

    def docstring(self, description: str) -> str:
        """``description`` (a docstring without ``Args:``) plus the options' ``Args:`` section, one line
        per option: fire reads a continuation line as a new option when it starts with a word and a
        colon, and drops what follows a colon on it, so a help text is never wrapped."""
        args = "\n".join(f"    {o.name}: {o.help}" for o in self.options)
        return f"{inspect.cleandoc(description)}\n\nArgs:\n{args}\n"

    def convert(self, values: Mapping[str, Any]) -> SimpleNamespace:
        """Every option's value (``values``: by name, each given or defaulted) converted, in table order."""
        return SimpleNamespace(**{o.name: o.convert(o.name, values[o.name]) for o in self.options})

    def command(self, body: Callable[[SimpleNamespace], None]) -> Callable[..., None]:
        """``body`` (taking the converted values) as a command ``main(**options)``: its signature and its
        docstring's ``Args:`` are this table's, the rest of the docstring is ``body``'s."""
        signature = self.signature()

        def main(*args: Any, **kwargs: Any) -> None:
            bound = signature.bind(*args, **kwargs)  # a library caller's unknown keyword: TypeError
            bound.apply_defaults()
            body(self.convert(bound.arguments))

        main.__signature__ = signature  # type: ignore[attr-defined]
        main.__doc__ = self.docstring(body.__doc__ or "")
        main.__name__, main.__qualname__, main.__module__ = body.__name__, body.__qualname__, body.__module__
        return main


def subset(values: SimpleNamespace, options: Sequence[Option], prefix: str = "") -> dict[str, Any]:
    """The converted values of ``options`` (named with ``prefix`` in ``values``), by their own names."""
    return {o.name: getattr(values, prefix + o.name) for o in options}


# -------------------------------------------------------------------------- the options commands share
# A command overrides the default (or help, or conversion) where it differs; the three scripts' defaults
# are the Lua scripts'.

PROTO_FILE = Option("proto_file", "", "Caffe deploy prototxt.")
MODEL_FILE = Option("model_file", "", "Caffe weights (.caffemodel).")
INPUT_SZ = Option("input_sz", 224, "side of the square network input.", as_input_size)
BACKEND = Option("backend", "nn", "accepted for compatibility (nn|cudnn); PyTorch chooses its own kernels.",
                 choice("nn", "cudnn"))
LAYER_NAME = Option("layer_name", "relu5_3", "layer to explain, by Caffe name or loadcaffe's 1-based module index.")
INPUT_IMAGE_PATH = Option("input_image_path", "images/cat_dog.jpg",
                          "the image, or a folder or glob of images (see above).")
SAVE_AS_HEATMAP = Option("save_as_heatmap", 1, "1 = colour heatmap, otherwise the grey Grad-CAM map.", is_one)
SEED = Option("seed", 123, "random seed.", as_int)
GPUID = Option("gpuid", -1, "-1 = CPU, N = CUDA device N.", as_int)
OUT_PATH = Option("out_path", "output/",
                  "output folder (created if missing); per-image subfolders for a folder or glob.")
BATCH_SIZE = Option("batch_size", 8, "images explained together (one forward) in folder or glob mode.",
                    as_positive_int)


def save_overlay(file: str) -> Option:
    """``-save_overlay`` of a program whose overlay file is named ``file``."""
    return Option("save_overlay", 0, f"1 = also write {file}: the colour heatmap (half) blended over the image as the "
                  "net saw it (half), input_sz x input_sz; 0 = the original's three files.", as_switch)


# the CAM methods (every script); their names are checked against the registry (engine.methods) here, the
# list in --help is filled in when it is shown (cli.app.fill_methods_help): the registry imports torch


def method_names(name: str, value: Any) -> tuple[str, ...]:
    """``-method``: registered CAM method names, comma-separated (or a list literal); an unknown one is
    one line listing the known ones."""
    from ..engine.methods import lookup  # imported here: it brings torch in
    from ..errors import GradCamError

    names = tuple(dict.fromkeys(as_str_list(name, value, ",")))
    for method in names:
        try:
            lookup(method.strip())
        except GradCamError as err:
            raise GradCamError(f"-{name} {method!r}: {err}") from None
    return tuple(m.strip() for m in names)


METHOD = Option("method", "gradcam", "the CAM method(s), comma-separated (-method gradcam,scorecam: one forward); "
                "gradcam writes the original's files, any other method <prefix>_<method>_hm_<name>.png etc.",
                method_names)
COUNTERFACTUAL = Option("counterfactual", 0, "1 = explain each target's negated score (the regions whose removal "
                        "would raise it); the files' method token gets _cf (gradcam_cf) and guided backprop is gb_cf.",
                        as_switch)
AUG_SMOOTH = Option("aug_smooth", 0, "1 = average each map over flipped and brightness-scaled copies of the image "
                    "(pytorch-grad-cam's aug_smooth).", as_switch)
EIGEN_SMOOTH = Option("eigen_smooth", 0, "1 = each map from the first principal component of the weighted "
                      "activations instead of their sum (pytorch-grad-cam's eigen_smooth).", as_switch)
METHOD_OPTIONS = (METHOD, COUNTERFACTUAL, AUG_SMOOTH, EIGEN_SMOOTH)
"""Every script's method options, after its own (``-batch_size`` also bounds a perturbation method's
batch of masked images)."""
LAYER_LAYOUT = Option("layer_layout", "auto", "how the layer's output holds its map: auto (recognised from its shape), "
                      "nchw (N,C,H,W: convolutional nets), nhwc (N,H,W,C: Swin, ConvNeXt blocks) or tokens (N,T,C: "
                      "ViT, with its class token).", choice("auto", "nchw", "nhwc", "tokens"))

# classification (and the web command's classifier)
MODEL_INPUT_SZ = INPUT_SZ.but(help="side of the square network input (default: an ONNX model's own size, else 224).",
                              convert=when_given(as_input_size))  # None: the model's own size
LABEL = Option("label", -1, "1-based class label(s) (ASCII digits) or class names, comma-separated (-label 3,5; "
               "a repeated -label is an error); -1 = the predicted class.", as_label_list)
ARCH = Option("arch", "", "a torchvision classification architecture (resnet50, squeezenet1_1, ...); -model_file is "
              "then its state_dict (.pth, loaded with weights_only=True; nothing is downloaded), and must be given.")
SYNSET_FILE = Option("synset_file", "", "class names, one per line in output order (Caffe's synset_words.txt "
                     "format); default: an ONNX file's own, synset_words.txt beside -model_file, or torchvision's "
                     "ImageNet names.")
# The preprocessing options are read together, by options.as_input_options (it refuses both means).
PREPROCESS = Option("preprocess", "", "caffe (BGR, 0..255, minus the VGG means: the default for Caffe nets) or "
                    "torchvision (RGB, 0..1, ImageNet mean and std: the default for torchvision models and for ONNX "
                    "files that do not carry their own, as the converter's output does).")
MEAN_VALUE = Option("mean_value", "", "per-channel means in the net's channel order, e.g. 104,117,123 (Caffe's "
                    "mean_value).")
MEAN_FILE = Option("mean_file", "", "a Caffe mean image (mean.binaryproto), scaled to -input_sz as the image is "
                   "(not with -mean_value).")
INPUT_SCALE = Option("input_scale", "", "Caffe's transform_param scale, applied after the mean (e.g. 0.017).")
CHANNEL_ORDER = Option("channel_order", "", "bgr or rgb: the order of the net's input channels.")
PREPROCESSING_OPTIONS = (PREPROCESS, MEAN_VALUE, MEAN_FILE, INPUT_SCALE, CHANNEL_ORDER)
"""How an image becomes the net's input, in every classifier's and segmenter's option list (read by
:func:`.options.as_input_options`)."""

# VQA (the web command has them as -vqa_<name>)
VQA_PROTO_FILE = PROTO_FILE.but(default="models/VGG_ILSVRC_19_layers_deploy.prototxt",
                                help="Caffe deploy prototxt of the image CNN (VGG-19).")
VQA_MODEL_FILE = MODEL_FILE.but(default="models/VGG_ILSVRC_19_layers.caffemodel")
VQA_LAYER_NAME = LAYER_NAME.but(default="relu5_4")
QUESTION = Option("question", "What animal?", "the question about the image.")
VQA_SIZES = (  # the names of tasks.vqa.model.VQASizes' fields
    Option("input_encoding_size", 200, "word embedding size of the VQA model.", as_positive_int),
    Option("rnn_size", 512, "LSTM hidden size.", as_positive_int),
    Option("rnn_layers", 2, "number of LSTM layers.", as_positive_int),
    Option("common_embedding_size", 1024, "size of the joint question-image embedding.", as_positive_int),
    Option("num_output", 1000, "number of answers.", as_positive_int),
)

# semantic segmentation (segmentation.py, gradcam-segment)
SEGMENT_MODEL_FILE = MODEL_FILE.but(default="", help="an ONNX segmentation model (one output, N x classes x H x W), "
                                    "or with -arch the architecture's state_dict (.pth, weights_only=True).")
SEGMENT_ARCH = ARCH.but(help="a torchvision segmentation architecture (fcn_resnet50, deeplabv3_resnet50, "
                        "deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large, ...); its output 'out' is explained; "
                        "-model_file is its state_dict; nothing is downloaded.")
SEGMENT_INPUT_SZ = MODEL_INPUT_SZ.but(help="side of the square network input (default: an ONNX model's own size, "
                                      "520 for -arch, else 224).")
SEGMENT_LAYER_NAME = LAYER_NAME.but(default="", help="layer to explain, by module name; '' = the backbone's output "
                                    "(backbone.layer4, backbone.16) or the last feature map below the class scores.")
SEGMENT_LABEL = LABEL.but(help="1-based class label(s) (1 = __background__, 16 = person for VOC) or class names, "
                          "comma-separated; -1 = every class the image's prediction holds (one set of files each).")
SEGMENT_MASK = Option("mask", "", "an image of the input image's size whose non-zero pixels are the region each class's "
                      "logits are summed over; '' = the class's predicted pixels.")
SEGMENT_SYNSET_FILE = SYNSET_FILE.but(help="class names, one per line in output order; default: an ONNX file's own, "
                                      "or torchvision's 21 VOC names for -arch.")
SEGMENT_SAVE_OVERLAY = Option("save_overlay", 0, "1 = also write segment_overlay_<L>.png (the colour heatmap blended "
                              "over the image) and segment_mask_<L>.png (white: the pixels the class's score sums over).",
                              as_switch)

# detection (detection.py, gradcam-detect)


def as_fraction(name: str, value: Any) -> float:
    """A number from 0 to 1 (``-score_threshold``)."""
    from ..errors import GradCamError

    number = as_float(name, value)
    if not 0 <= number <= 1:
        raise GradCamError(f"-{name} {value}: expected a number from 0 to 1")
    return number


DETECT_ARCH = Option("arch", "fasterrcnn_resnet50_fpn", "a torchvision detection architecture: fasterrcnn_resnet50_fpn"
                     "(_v2), fasterrcnn_mobilenet_v3_large(_320)_fpn, retinanet_resnet50_fpn(_v2), fcos_resnet50_fpn, "
                     "ssd300_vgg16, ssdlite320_mobilenet_v3_large.")
DETECT_MODEL_FILE = Option("model_file", "", "the detector's torchvision state_dict (.pth, loaded with "
                           "weights_only=True; nothing is downloaded); '' = random weights (their detections mean nothing).")
DETECT_LAYER_NAME = LAYER_NAME.but(default="", help="layer to explain, a named_modules() name; '' = the backbone's "
                                   "last stage (backbone.body.layer4 for ResNet-50 FPN models).")
BOX = Option("box", "", "boxes to explain, x1,y1,x2,y2[:label] in the input image's pixels, several separated by ';' "
             "(label: a COCO class name or number); '' = every detection above -score_threshold.", separated(";"))
SCORE_THRESHOLD = Option("score_threshold", 0.5, "without -box: explain the detections scoring at least this "
                         "(0 to 1).", as_fraction)
MAX_BOXES = Option("max_boxes", 20, "without -box: explain at most this many detections per image, best first.",
                   as_positive_int)

# gradcam-evaluate (cli/commands/evaluate.py)


def every_method_or_names(name: str, value: Any) -> tuple[str, ...]:
    """``-methods``: '' = every registered method (an empty tuple here: the command fills them in), else
    :func:`method_names`."""
    return () if not str(value).strip() else method_names(name, value)


EVALUATE_METHODS = Option("methods", "", "the CAM methods to compare, comma-separated (default: every method).",
                          every_method_or_names)
BOXES = Option("boxes", "", "ground-truth boxes: a folder of Pascal VOC XML files named after the images, or a CSV "
               "file image,x1,y1,x2,y2,label; without it no localization or pointing game.")
STEPS = Option("steps", 224, "deletion and insertion steps (RISE's: 224 steps of 224 pixels at 224 x 224).",
               as_positive_int)
