"""``captioning.py`` and ``gradcam-caption``: their options (:data:`OPTIONS`, from :mod:`..optiontable`)
and ``main``, which python-fire runs.

The checkout's top-level ``captioning.py`` (the drop-in for ``th captioning.lua``) and the
``gradcam-caption`` console script run this same ``main``. Its default files are the original's,
relative to the current folder as in Lua.
"""
from types import SimpleNamespace

from .. import optiontable as opt
from ..app import console_script, seed_torch, with_many_images_help
from ..paths import check_out_dir, input_path
from .common import run_fields

MODEL = "neuraltalk2/model_id1-501-1448236541.t7"
IMAGE = opt.INPUT_IMAGE_PATH.default
CAPTION = "a dog and a cat posing for a picture"
MODEL_HINT = "run scripts/download_models.sh captioning to fetch it, or pass -model_path"

OPTIONS = opt.OptionTable(
    opt.INPUT_SZ,
    opt.BACKEND.but(default="cudnn", help="accepted for compatibility (nn|cudnn); the CNN comes from the checkpoint."),
    opt.Option("layer", 30, "layer to explain: the CNN's 1-based module number (30 = relu5_3) or its name."),
    opt.INPUT_IMAGE_PATH,
    opt.Option("caption", CAPTION, "the caption(s) to explain, separated by '|' or as a list literal; '' = the "
               "generated caption.", opt.separated("|")),
    opt.SAVE_AS_HEATMAP,
    opt.Option("model_path", MODEL, "neuraltalk2 checkpoint (.t7)."),
    opt.SEED,
    opt.GPUID,
    opt.OUT_PATH,
    opt.BATCH_SIZE,
    opt.save_overlay("caption_overlay_<caption>.png"),
    *opt.METHOD_OPTIONS,
    opt.LAYER_LAYOUT,
)


@OPTIONS.command
@with_many_images_help("caption_gb_a dog.png", "caption")
def main(v: SimpleNamespace) -> None:
    """Grad-CAM, Guided Backprop and Guided Grad-CAM for a neuraltalk2 image captioning model.

    python captioning.py -input_image_path photos/ -caption 'a dog|a cat on a sofa, sleeping'

    Options, names and defaults as the Lua script (``--caption=...`` works too), plus ``-batch_size``.
    Prints the generated caption and the explained one (``-caption ''`` explains the generated caption).
    Several captions from one forward pass: separate them with ``|`` (``-caption 'a dog|a cat'``; spaces
    around each are dropped) or give a list literal (``-caption '["a dog", "A zebra, and a dog!"]'``,
    each item as written, '' = the generated caption). Commas never separate captions, since captions
    contain them; ``|`` is safe because neuraltalk2 captions are words of letters and digits, so ``|``
    was never part of a word. ``-layer`` is a module number of the checkpoint's CNN (30 = relu5_3) or a
    layer name. Writes ``caption_gcam_hm_<caption>.png`` (``caption_gcam_<caption>.png`` with
    ``-save_as_heatmap 0``), ``caption_gb_<caption>.png`` and ``caption_gb_gcam_<caption>.png`` for each
    caption into ``-out_path``; with ``-save_overlay 1`` also ``caption_overlay_<caption>.png``, the
    heatmap blended over the image.

    {many_images}

    {cam_methods}
    """
    from .. import captioning as program

    out_dir = check_out_dir(v.out_path)  # created only when the images are written
    opts = program.CaptioningOptions(
        model_path=input_path("model_path", v.model_path, MODEL, hint=MODEL_HINT),
        captions=v.caption,
        layer=v.layer,
        **run_fields(v, IMAGE, out_dir),
    )
    seed_torch(v.seed)
    program.run(opts)


entry = console_script(main, "gradcam-caption")
