"""``segmentation.py`` and ``gradcam-segment``: their options (:data:`OPTIONS`, from :mod:`..optiontable`)
and ``main``, which python-fire runs.

The checkout's top-level ``segmentation.py`` and the ``gradcam-segment`` console script run this same
``main``: Grad-CAM and the other CAM methods for a class of a semantic segmentation model (torchvision's
FCN, DeepLabV3, LR-ASPP from a state_dict, or an ONNX model), the class's logits summed over its
predicted pixels or a mask.
"""
from types import SimpleNamespace

from ...errors import GradCamError
from .. import optiontable as opt
from ..app import console_script, seed_torch, with_many_images_help
from ..options import as_input_options
from ..paths import check_out_dir, input_path
from .common import run_fields

IMAGE = opt.INPUT_IMAGE_PATH.default

OPTIONS = opt.OptionTable(
    opt.SEGMENT_MODEL_FILE,
    opt.SEGMENT_ARCH,
    opt.SEGMENT_INPUT_SZ,
    opt.SEGMENT_LAYER_NAME,
    opt.INPUT_IMAGE_PATH,
    opt.Option("output_image_name", "", "name used in the output files instead of the label."),
    opt.SEGMENT_LABEL,
    opt.SEGMENT_MASK,
    opt.SAVE_AS_HEATMAP,
    opt.SEED,
    opt.GPUID,
    opt.OUT_PATH,
    opt.BATCH_SIZE,
    opt.SEGMENT_SYNSET_FILE,
    *opt.PREPROCESSING_OPTIONS,
    opt.SEGMENT_SAVE_OVERLAY,
    *opt.METHOD_OPTIONS,
    opt.LAYER_LAYOUT,
)


@OPTIONS.command
@with_many_images_help("segment_gb_16.png", "stdout")
def main(v: SimpleNamespace) -> None:
    """Grad-CAM, Guided Backprop and Guided Grad-CAM for a class of a semantic segmentation model.

    python segmentation.py -arch deeplabv3_resnet50 -model_file deeplabv3.pth -label person
    python segmentation.py -arch fcn_resnet50 -model_file fcn.pth -label -1 -save_overlay 1
    python segmentation.py -model_file seg.onnx -label 2 -mask region.png

    A class's target is the sum of its logits over the pixels the model predicts as that class (on the
    unperturbed image, fixed for every method), or over the non-zero pixels of ``-mask`` (an image of
    the input image's size). Labels are 1-based as classification.py's (for torchvision's VOC classes
    1 = __background__, 16 = person); a class can be named (``-label person``, case-insensitive).
    ``-label -1`` (the default) explains every class the prediction holds (inside the mask, with one);
    a class asked for that an image does not predict is skipped with a line (no mask to sum over).
    torchvision models are built with random weights and loaded from ``-model_file`` (their
    state_dict; nothing is downloaded), normalised as torchvision's (ImageNet mean and std); an ONNX
    model's preprocessing comes from its metadata (gradcam-convert's) or is torchvision's.
    Writes ``segment_gcam_hm_<L>.png`` (``segment_gcam_<L>.png`` with ``-save_as_heatmap 0``),
    ``segment_gb_<L>.png`` and ``segment_gb_gcam_<L>.png`` for each class label ``<L>`` into
    ``-out_path``; with ``-save_overlay 1`` also ``segment_overlay_<L>.png``, the heatmap blended over
    the image, and ``segment_mask_<L>.png``, the pixels summed over.

    {many_images}

    {cam_methods}
    """
    from ...formats.registry import is_onnx_model
    from .. import segmentation as program

    out_dir = check_out_dir(v.out_path)  # created only when the images are written
    if not v.model_file:
        if v.arch:
            raise GradCamError(f"-arch {v.arch} needs its weights: give its torchvision state_dict (a .pth file of "
                               "model.state_dict()) with -model_file; nothing is downloaded")
        raise GradCamError("segmentation.py needs a model: -arch <torchvision segmentation architecture> -model_file "
                           "<its state_dict>, or -model_file <an ONNX segmentation model>")
    model = input_path("model_file", v.model_file, "")
    if not v.arch and not is_onnx_model(model):
        raise GradCamError(f"-model_file {model} is not an ONNX model: a torchvision state_dict needs -arch "
                           "(fcn_resnet50, deeplabv3_resnet50, ...)")
    if not v.arch:
        from ...extras import require

        require("onnx")
    opts = program.SegmentationOptions(
        model_file=model,
        arch=v.arch,
        labels=v.label,
        mask_file=input_path("mask", v.mask, "") if v.mask else None,
        layer_name=v.layer_name,
        output_image_name=v.output_image_name,
        synset_file=input_path("synset_file", v.synset_file, "") if v.synset_file else None,
        input_options=as_input_options(v.preprocess, v.mean_value, v.mean_file, v.input_scale, v.channel_order),
        **run_fields(v, IMAGE, out_dir),  # -input_sz None: the model's own
    )
    seed_torch(v.seed)
    program.run(opts)


entry = console_script(main, "gradcam-segment")
