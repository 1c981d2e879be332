#!/usr/bin/env python3
"""Grad-CAM for image captioning: a drop-in for ``th captioning.lua`` on neuraltalk2 checkpoints.

    python captioning.py -input_image_path images/cat_dog.jpg -caption "a dog and a cat posing for a picture"

Options, names and defaults as the Lua script (``--caption=...`` works too). Prints the generated
caption and the explained one (``-caption ''`` explains the generated caption). ``-layer`` is a module
number of the checkpoint's CNN (30 = relu5_3) or a layer name. Writes ``caption_gcam_hm_<caption>.png``
(``caption_gcam_<caption>.png`` with ``-save_as_heatmap 0``), ``caption_gb_<caption>.png`` and
``caption_gb_gcam_<caption>.png`` into ``-out_path``.
"""
from gradcam_core.cli import (
    as_choice, as_int, as_positive_int, as_str, device_for, input_path, check_out_dir, run_cli,
)

MODEL = "neuraltalk2/model_id1-501-1448236541.t7"
IMAGE = "images/cat_dog.jpg"
CAPTION = "a dog and a cat posing for a picture"
MODEL_HINT = "run scripts/download_models.sh captioning to fetch it, or pass -model_path"


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
):
    """Grad-CAM, Guided Backprop and Guided Grad-CAM for a neuraltalk2 image captioning model.

    Args:
        input_sz: side of the square network input.
        backend: accepted for compatibility (nn|cudnn); the CNN comes from the checkpoint.
        layer: layer to explain: the CNN's 1-based module number (30 = relu5_3) or its name.
        input_image_path: the image.
        caption: the caption to explain; '' = the generated caption.
        save_as_heatmap: 1 = colour heatmap, otherwise the grey Grad-CAM map.
        model_path: neuraltalk2 checkpoint (.t7).
        seed: random seed.
        gpuid: -1 = CPU, N = CUDA device N.
        out_path: output folder (created if missing).
    """
    from gradcam_core import captioner

    as_choice("backend", backend, ("nn", "cudnn"))
    opts = captioner.CaptioningOptions(
        model_path=input_path("model_path", as_str(model_path), MODEL, hint=MODEL_HINT),
        image=input_path("input_image_path", as_str(input_image_path), IMAGE),
        caption=as_str(caption),
        layer=as_str(layer),
        input_sz=as_positive_int("input_sz", input_sz),
        save_as_heatmap=as_int("save_as_heatmap", save_as_heatmap) == 1,
        device=device_for(as_int("gpuid", gpuid)),
        out_dir=check_out_dir(as_str(out_path)),  # created only when the images are written
    )
    import torch

    torch.manual_seed(as_int("seed", seed))
    captioner.run(opts)


if __name__ == "__main__":
    run_cli(main)
