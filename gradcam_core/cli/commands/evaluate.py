"""``gradcam-evaluate`` and ``python -m gradcam_core.evaluate``: its options (:data:`OPTIONS`, from
:mod:`..optiontable`) and ``main``, which python-fire runs. The model options are classification's;
the defaults are the bundled SqueezeNet 1.1 and the sample images."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from ...data import IMAGES as BUNDLED_IMAGES
from ...data import bundled
from ...errors import GradCamError
from ...run.batches import write_line
from .. import optiontable as opt
from ..app import console_script, seed_torch
from ..options import as_input_options, as_switch
from ..paths import MODELS_HINT, arch_weights_missing, check_out_dir, input_images, input_path, stat_option_path

if TYPE_CHECKING:
    from ...run.inputs import Inputs

PROTO = "models/squeezenet1_1/deploy.prototxt"
MODEL = "models/squeezenet1_1/squeezenet1_1.caffemodel"
IMAGES = "images/"

OPTIONS = opt.OptionTable(
    opt.PROTO_FILE.but(default=PROTO, help="Caffe deploy prototxt (default: the bundled SqueezeNet 1.1's)."),
    opt.MODEL_FILE.but(default=MODEL, help="the classifier: Caffe weights, an ONNX file or (with -arch) a "
                       "torchvision state_dict (default: the bundled SqueezeNet 1.1)."),
    opt.MODEL_INPUT_SZ,
    opt.LAYER_NAME.but(default="", help="layer to explain (default: relu5_3 where the net has it, else its last "
                       "layer with a spatial output)."),
    opt.LAYER_LAYOUT,
    opt.INPUT_IMAGE_PATH.but(default=IMAGES),
    opt.EVALUATE_METHODS,
    opt.LABEL.but(help="1-based class label(s) or class names, comma-separated; -1 = each image's predicted class."),
    opt.BOXES,
    opt.STEPS,
    opt.OUT_PATH.but(default="evaluation/", help="output folder (created if missing): results.csv, summary.md, "
                     "the plots."),
    opt.BATCH_SIZE.but(default=32, help="images per forward: the images explained together and the perturbed "
                       "images of a metric."),
    opt.Option("save_overlay", 0, "1 = also write <out_path>/<image>/methods.png: every method's map over the "
               "image, side by side.", as_switch),
    opt.SEED,
    opt.GPUID,
    opt.ARCH,
    opt.SYNSET_FILE,
    *opt.PREPROCESSING_OPTIONS,
)


@OPTIONS.command
def main(v: SimpleNamespace) -> None:
    """Which CAM method to believe for a classifier: every method's maps scored by faithfulness and
    localization metrics, side by side, on the user's own model and images.

    gradcam-evaluate -input_image_path images/ -boxes images/boxes
    gradcam-evaluate -arch resnet50 -model_file resnet50.pth -input_image_path photos/ -methods gradcam,scorecam

    Metrics per image, method and target: RISE's deletion and insertion AUC (-steps steps), the Grad-CAM++
    paper's Average Drop % and Increase in Confidence %, ROAD most- and least-relevant-first (10..90%), and with
    -boxes the Grad-CAM paper's localization (IoU >= 0.5 at 15% of the map's maximum) and the pointing game; the
    time of each method's maps. Writes results.csv (one row per image, target, method, metric), summary.md
    (per method: mean and 95% bootstrap interval, the best in bold), deletion_insertion.png and
    bar_<metric>.png into -out_path. -boxes: a folder of Pascal VOC XML files named after the images, or a CSV
    file image,x1,y1,x2,y2,label (1-based inclusive pixels; label as -label takes it).
    """
    from ...extras import require
    from ...formats.registry import format_of
    from .. import evaluate as program
    from ..paths import device_for

    require("evaluate")
    out_dir = check_out_dir(v.out_path)
    if v.arch and v.model_file == MODEL:
        raise arch_weights_missing(v.arch)
    model = input_path("model_file", v.model_file, MODEL, hint=MODELS_HINT)
    fmt = format_of(model, v.arch)
    proto = input_path("proto_file", v.proto_file, PROTO, hint=MODELS_HINT) if fmt.needs_prototxt else None
    fmt.check(model, proto)  # its extra installed
    opts = program.EvaluateOptions(
        proto_file=proto, model_file=model, inputs=_images(v.input_image_path, out_dir), out_dir=out_dir,
        methods=v.methods or tuple(_every_method()), labels=v.label, layer_name=v.layer_name,
        layer_layout=v.layer_layout, input_sz=v.input_sz,
        steps=v.steps, batch_size=v.batch_size, boxes=_boxes(v.boxes), save_overlay=v.save_overlay,
        device=device_for(v.gpuid), arch=v.arch,
        synset_file=input_path("synset_file", v.synset_file, "") if v.synset_file else None,
        input_options=as_input_options(v.preprocess, v.mean_value, v.mean_file, v.input_scale, v.channel_order),
        seed=v.seed,
    )
    seed_torch(v.seed)
    program.run(opts, warn=_warn)


def _every_method() -> list[str]:
    from ...engine.methods import method_names

    return method_names()


def _images(value: str, out_dir: Path) -> Inputs:
    """``-input_image_path``; left at its default where the current folder has no ``images/``, the
    bundled sample images."""
    if value == IMAGES and not Path(value).is_dir():
        value = str(bundled(BUNDLED_IMAGES))
    return input_images("input_image_path", value, IMAGES, out_dir)


def _boxes(value: str) -> Path | None:
    """``-boxes``: None when not given, else a folder or a file that exists."""
    if not value:
        return None
    path = Path(value).expanduser()
    if stat_option_path("boxes", value, path) is None:
        raise GradCamError(f"-boxes: {value} not found")
    return path


def _warn(line: str) -> None:
    write_line(sys.stderr, f"warning: {line}")


entry = console_script(main, "gradcam-evaluate")
