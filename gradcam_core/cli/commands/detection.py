"""``detection.py`` and ``gradcam-detect``: their options (:data:`OPTIONS`, from :mod:`..optiontable`)
and ``main``, which python-fire runs."""
from types import SimpleNamespace

from .. import optiontable as opt
from ..app import console_script, seed_torch, with_many_images_help
from ..paths import check_out_dir, device_for, input_images, input_path

IMAGE = opt.INPUT_IMAGE_PATH.default

OPTIONS = opt.OptionTable(
    opt.DETECT_ARCH,
    opt.DETECT_MODEL_FILE,
    opt.DETECT_LAYER_NAME,
    opt.INPUT_IMAGE_PATH,
    opt.BOX,
    opt.SCORE_THRESHOLD,
    opt.MAX_BOXES,
    opt.SAVE_AS_HEATMAP,
    opt.SEED,
    opt.GPUID,
    opt.OUT_PATH,
    opt.BATCH_SIZE.but(help="the most masked or ablated copies a perturbation method (scorecam, ablationcam) runs in "
                       "one forward (images are explained one at a time)."),
    *opt.METHOD_OPTIONS,
    opt.LAYER_LAYOUT,
)


@OPTIONS.command
@with_many_images_help("detect_gb_1_person.png", "stdout")
def main(v: SimpleNamespace) -> None:
    """Grad-CAM, Guided Backprop and Guided Grad-CAM for the boxes of a torchvision object detector.

    python detection.py -arch fasterrcnn_resnet50_fpn -model_file fasterrcnn.pth -input_image_path street.jpg
    python detection.py -arch retinanet_resnet50_fpn -model_file retinanet.pth -box '10,20,200,310:dog'
    python detection.py -model_file fasterrcnn.pth -method eigencam -score_threshold 0.7

    Explains every detection scoring at least -score_threshold (at most -max_boxes, best first), or the
    boxes given with -box (x1,y1,x2,y2 in the input image's pixels, optionally :label, a COCO class name
    or number; several separated by ';'), each matched to the detection overlapping it best (IoU above
    0.5, same label). A box's target is that detection's IoU plus its class score. Images are explained
    at their own size (the detector resizes them itself). Writes, for each box i of class <L>,
    ``detect_gcam_hm_<i>_<L>.png``, ``detect_gb_<i>_<L>.png`` and ``detect_gb_gcam_<i>_<L>.png``, and
    ``detect_boxes.png``: the image with every explained box, its class name and score.

    {many_images}

    {cam_methods}
    """
    from ...run.task import Methods
    from .. import detection as program

    out_dir = check_out_dir(v.out_path)
    from ...tasks.detect import check_arch

    arch = check_arch(v.arch)  # a classifier's name is refused before any file is read
    model = input_path("model_file", v.model_file, "") if v.model_file else None
    methods = Methods(v.method, counterfactual=v.counterfactual, aug_smooth=v.aug_smooth, eigen_smooth=v.eigen_smooth,
                      batch_size=v.batch_size, progress=True)
    if methods.aug_smooth:
        from ...errors import GradCamError

        raise GradCamError("-aug_smooth does not apply to detection: a flipped image's boxes are elsewhere")
    opts = program.DetectionOptions(
        arch=arch, model_file=model, inputs=input_images("input_image_path", v.input_image_path, IMAGE, out_dir),
        boxes=list(v.box), score_threshold=v.score_threshold, max_boxes=v.max_boxes, layer_name=v.layer_name,
        save_as_heatmap=v.save_as_heatmap, device=device_for(v.gpuid), methods=methods)
    seed_torch(v.seed)
    program.run(opts)


entry = console_script(main, "gradcam-detect")
