"""``classification.py`` and ``gradcam-classify``: their options, as ``main``'s parameters
(python-fire reads them).

The checkout's top-level ``classification.py`` (the drop-in for ``th classification.lua``) and the
``gradcam-classify`` console script run this same ``main``. Its default files are the original's,
relative to the current folder as in Lua.
"""
import sys

from ..app import run_cli, with_many_images_help
from ..options import (
    as_choice,
    as_input_options,
    as_input_size,
    as_int,
    as_label_list,
    as_positive_int,
    as_str,
    as_switch,
    given,
)
from ..paths import (
    MODELS_HINT,
    arch_weights_missing,
    bundled_classifier_hint,
    check_out_dir,
    device_for,
    input_images,
    input_path,
)

PROTO = "models/VGG_ILSVRC_16_layers_deploy.prototxt"
MODEL = "models/VGG_ILSVRC_16_layers.caffemodel"
IMAGE = "images/cat_dog.jpg"


@with_many_images_help("classify_gb_5.png", "stdout")
def main(
    proto_file=PROTO,
    model_file=MODEL,
    input_sz=224,
    backend="nn",
    layer_name="relu5_3",
    input_image_path=IMAGE,
    output_image_name="",
    label=-1,
    save_as_heatmap=1,
    seed=123,
    gpuid=-1,
    out_path="output/",
    batch_size=8,
    arch="",
    synset_file="",
    preprocess="",
    mean_value="",
    mean_file="",
    input_scale="",
    channel_order="",
    save_overlay=0,
):
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

    Args:
        proto_file: Caffe deploy prototxt.
        model_file: Caffe weights (.caffemodel).
        input_sz: side of the square network input (default: an ONNX model's own size, else 224).
        backend: accepted for compatibility (nn|cudnn); PyTorch chooses its own kernels.
        layer_name: layer to explain, by Caffe name or loadcaffe's 1-based module index (30 = relu5_3).
        input_image_path: the image, or a folder or glob of images (see above).
        output_image_name: name used in the output files instead of the label.
        label: 1-based class label(s) (ASCII digits) or class names, comma-separated (-label 3,5; a
            repeated -label is an error); -1 = the predicted class.
        save_as_heatmap: 1 = colour heatmap, otherwise the grey Grad-CAM map.
        seed: random seed.
        gpuid: -1 = CPU, N = CUDA device N.
        out_path: output folder (created if missing); per-image subfolders for a folder or glob.
        batch_size: images explained together (one forward) in folder or glob mode.
        arch: a torchvision classification architecture (resnet50, squeezenet1_1, ...); -model_file is
            then its state_dict (.pth, loaded with weights_only=True; nothing is downloaded), and must be given.
        synset_file: class names, one per line in output order (Caffe's synset_words.txt format);
            default: an ONNX file's own, synset_words.txt beside -model_file, or torchvision's ImageNet names.
        preprocess: caffe (BGR, 0..255, minus the VGG means: the default for Caffe nets) or torchvision
            (RGB, 0..1, ImageNet mean and std: the default for torchvision models and for ONNX files
            that do not carry their own, as the converter's output does).
        mean_value: per-channel means in the net's channel order, e.g. 104,117,123 (Caffe's mean_value).
        mean_file: a Caffe mean image (mean.binaryproto), scaled to -input_sz as the image is (not with
            -mean_value).
        input_scale: Caffe's transform_param scale, applied after the mean (e.g. 0.017).
        channel_order: bgr or rgb: the order of the net's input channels.
        save_overlay: 1 = also write classify_overlay_<L>.png: the colour heatmap (half) blended over
            the image as the net saw it (half), input_sz x input_sz; 0 = the original's three files.
    """
    from ...formats.registry import format_of
    from .. import classification as program

    as_choice("backend", backend, ("nn", "cudnn"))
    out_dir = check_out_dir(as_str(out_path))  # created only when the images are written
    arch = as_str(arch)
    if arch and as_str(model_file) == MODEL:  # the default is VGG-16's caffemodel, no state_dict
        raise arch_weights_missing(arch)
    model = input_path("model_file", as_str(model_file), MODEL, hint=f"{MODELS_HINT}; {bundled_classifier_hint()}")
    fmt = format_of(model, arch)
    proto = input_path("proto_file", as_str(proto_file), PROTO, hint=MODELS_HINT) if fmt.needs_prototxt else None
    fmt.check(model, proto)  # its extra installed
    opts = program.ClassificationOptions(
        proto_file=proto,
        model_file=model,
        inputs=input_images("input_image_path", as_str(input_image_path), IMAGE, out_dir),
        labels=as_label_list("label", label),
        layer_name=as_str(layer_name),
        input_sz=as_input_size("input_sz", input_sz) if given(input_sz) else None,  # None: the model's
        output_image_name=as_str(output_image_name),
        save_as_heatmap=as_int("save_as_heatmap", save_as_heatmap) == 1,
        save_overlay=as_switch("save_overlay", save_overlay),
        device=device_for(as_int("gpuid", gpuid)),
        batch_size=as_positive_int("batch_size", batch_size),
        arch=arch,
        synset_file=input_path("synset_file", as_str(synset_file), "") if as_str(synset_file) else None,
        input_options=as_input_options(preprocess, mean_value, mean_file, input_scale, channel_order),
    )
    import torch

    torch.manual_seed(as_int("seed", seed))
    program.run(opts)


def entry() -> None:
    """The ``gradcam-classify`` console script."""
    sys.argv[0] = "gradcam-classify"
    run_cli(main)
