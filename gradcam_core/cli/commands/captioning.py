"""``captioning.py`` and ``gradcam-caption``: their options, as ``main``'s parameters (python-fire reads them).

The checkout's top-level ``captioning.py`` (the drop-in for ``th captioning.lua``) and the
``gradcam-caption`` console script run this same ``main``. Its default files are the original's,
relative to the current folder as in Lua.
"""
import sys

from ..app import run_cli, with_many_images_help
from ..options import as_choice, as_input_size, as_int, as_positive_int, as_str, as_str_list, as_switch
from ..paths import check_out_dir, device_for, input_images, input_path

MODEL = "neuraltalk2/model_id1-501-1448236541.t7"
IMAGE = "images/cat_dog.jpg"
CAPTION = "a dog and a cat posing for a picture"
MODEL_HINT = "run scripts/download_models.sh captioning to fetch it, or pass -model_path"


@with_many_images_help("caption_gb_a dog.png", "caption")
def main(
    input_sz=224,
    backend="cudnn",
    layer=30,
    input_image_path=IMAGE,
    caption=CAPTION,
    save_as_heatmap=1,
    model_path=MODEL,
    seed=123,
    gpuid=-1,
    out_path="output/",
    batch_size=8,
    save_overlay=0,
):
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

    Args:
        input_sz: side of the square network input.
        backend: accepted for compatibility (nn|cudnn); the CNN comes from the checkpoint.
        layer: layer to explain: the CNN's 1-based module number (30 = relu5_3) or its name.
        input_image_path: the image, or a folder or glob of images (see above).
        caption: the caption(s) to explain, separated by '|' or as a list literal; '' = the generated caption.
        save_as_heatmap: 1 = colour heatmap, otherwise the grey Grad-CAM map.
        model_path: neuraltalk2 checkpoint (.t7).
        seed: random seed.
        gpuid: -1 = CPU, N = CUDA device N.
        out_path: output folder (created if missing); per-image subfolders for a folder or glob.
        batch_size: images explained together (one forward) in folder or glob mode.
        save_overlay: 1 = also write caption_overlay_<caption>.png: the colour heatmap (half) blended
            over the image as the net saw it (half), input_sz x input_sz; 0 = the original's three files.
    """
    from .. import captioning as program

    as_choice("backend", backend, ("nn", "cudnn"))
    out_dir = check_out_dir(as_str(out_path))  # created only when the images are written
    opts = program.CaptioningOptions(
        model_path=input_path("model_path", as_str(model_path), MODEL, hint=MODEL_HINT),
        inputs=input_images("input_image_path", as_str(input_image_path), IMAGE, out_dir),
        captions=as_str_list("caption", caption, "|"),
        layer=as_str(layer),
        input_sz=as_input_size("input_sz", input_sz),
        save_as_heatmap=as_int("save_as_heatmap", save_as_heatmap) == 1,
        save_overlay=as_switch("save_overlay", save_overlay),
        device=device_for(as_int("gpuid", gpuid)),
        batch_size=as_positive_int("batch_size", batch_size),
    )
    import torch

    torch.manual_seed(as_int("seed", seed))
    program.run(opts)


def entry() -> None:
    """The ``gradcam-caption`` console script."""
    sys.argv[0] = "gradcam-caption"
    run_cli(main)
