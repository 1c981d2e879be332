"""``classification.py`` and ``gradcam-classify``: their options (:data:`OPTIONS`, from
:mod:`..optiontable`) and ``main``, which python-fire runs.

The checkout's top-level ``classification.py`` (the drop-in for ``th classification.lua``) and the
``gradcam-classify`` console script run this same ``main``. Its default files are the original's,
relative to the current folder as in Lua.
"""
from types import SimpleNamespace

from .. import optiontable as opt
from ..app import console_script, seed_torch, with_many_images_help
from ..options import as_input_options
from ..paths import (
    MODELS_HINT,
    arch_weights_missing,
    bundled_classifier_hint,
    check_out_dir,
    input_path,
)
from .common import run_fields

PROTO = "models/VGG_ILSVRC_16_layers_deploy.prototxt"
MODEL = "models/VGG_ILSVRC_16_layers.caffemodel"
IMAGE = opt.INPUT_IMAGE_PATH.default

OPTIONS = opt.OptionTable(
    opt.PROTO_FILE.but(default=PROTO),
    opt.MODEL_FILE.but(default=MODEL),
    opt.MODEL_INPUT_SZ,
    opt.BACKEND,
    opt.LAYER_NAME.but(help="layer to explain, by Caffe name or loadcaffe's 1-based module index (30 = relu5_3)."),
    opt.INPUT_IMAGE_PATH,
    opt.Option("output_image_name", "", "name used in the output files instead of the label."),
    opt.LABEL,
    opt.SAVE_AS_HEATMAP,
    opt.SEED,
    opt.GPUID,
    opt.OUT_PATH,
    opt.BATCH_SIZE,
    opt.ARCH,
    opt.SYNSET_FILE,
    *opt.PREPROCESSING_OPTIONS,
    opt.save_overlay("classify_overlay_<L>.png"),
    *opt.METHOD_OPTIONS,
    opt.LAYER_LAYOUT,
)


@OPTIONS.command
@with_many_images_help("classify_gb_5.png", "stdout")
def main(v: SimpleNamespace) -> None:
    """Grad-CAM, Guided Backprop and Guided Grad-CAM for an image classifier: Caffe, ONNX or torchvision.

    python classification.py -proto_file deploy.prototxt -model_file weights.caffemodel -label 243
    python classification.py -model_file net.onnx -label 'tiger cat'
    python classification.py -arch resnet50 -model_file resnet50.pth -label 243,283

    Options, names and defaults as the Lua script (``--label=243`` works too), plus ``-batch_size``
    and the model options below. Labels are 1-based ImageNet positions (243 = "boxer"); ``-label -1``
    explains the predicted class; ``-label 243,283`` (or ``--label='[243, 283]'``) explains several
    classes from one forward pass; where the model's class names are known (``-synset_file``, a
    synset_words.txt beside the model file, torchvision's names) a class can be named: ``-label 'tiger
    cat'`` (case-insensitive), and each explained class's name is printed.
    Writes ``classify_gcam_hm_<L>.png`` (``classify_gcam_<L>.png`` with ``-save_as_heatmap 0``),
    ``classify_gb_<L>.png`` and ``classify_gb_gcam_<L>.png`` for each label ``<L>`` into ``-out_path``;
    with ``-save_overlay 1`` also ``classify_overlay_<L>.png``, the heatmap blended over the image.

    {many_images}

    {cam_methods}
    """
    from ...formats.registry import format_of
    from .. import classification as program

    out_dir = check_out_dir(v.out_path)  # created only when the images are written
    if v.arch and v.model_file == MODEL:  # the default is VGG-16's caffemodel, no state_dict
        raise arch_weights_missing(v.arch)
    model = input_path("model_file", v.model_file, MODEL, hint=f"{MODELS_HINT}; {bundled_classifier_hint()}")
    fmt = format_of(model, v.arch)
    proto = input_path("proto_file", v.proto_file, PROTO, hint=MODELS_HINT) if fmt.needs_prototxt else None
    fmt.check(model, proto)  # its extra installed
    opts = program.ClassificationOptions(
        proto_file=proto,
        model_file=model,
        labels=v.label,
        layer_name=v.layer_name,
        output_image_name=v.output_image_name,
        arch=v.arch,
        synset_file=input_path("synset_file", v.synset_file, "") if v.synset_file else None,
        input_options=as_input_options(v.preprocess, v.mean_value, v.mean_file, v.input_scale, v.channel_order),
        **run_fields(v, IMAGE, out_dir),  # -input_sz None: the model's own
    )
    seed_torch(v.seed)
    program.run(opts)


entry = console_script(main, "gradcam-classify")
