"""``captioning.py`` (``th captioning.lua``): its options checked, its printed lines, its files."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..engine import Explanation
from ..run import outputs
from ..run.batches import ImageOutput, explain_images
from ..run.inputs import Inputs
from ..tasks.caption.model import DEFAULT_CAPTION, explain_captions, load_checkpoint
from .shapecheck import input_size_errors




@dataclass
class CaptioningOptions:
    """The options of captioning.lua, converted and checked (see captioning.py).

    ``captions``: the captions to explain ('' = each image's generated caption).
    ``inputs``: the image(s) and where each one's files go (:mod:`gradcam_core.run.inputs`).
    """

    model_path: Path
    inputs: Inputs
    captions: list[str] = field(default_factory=lambda: [DEFAULT_CAPTION])
    layer: str = "30"
    input_sz: int = 224
    save_as_heatmap: bool = True
    device: torch.device = torch.device("cpu")
    batch_size: int = 8


def run(opts: CaptioningOptions, log: Callable[[str], None] = print) -> list[Path]:
    """The whole of ``th captioning.lua``, for one image or many: returns the written files."""
    model = load_checkpoint(opts.model_path, opts.device)
    model.cnn.index_of(opts.layer)  # an unknown layer fails before any work, listing valid ones
    wanted = [c or None for c in opts.captions]
    for caption in wanted:
        model.target(caption)  # a caption that does not fit fails before any work

    def explain_batch(images: torch.Tensor) -> list[ImageOutput]:
        with input_size_errors(opts.input_sz):
            expl, generated = explain_captions(model, images, opts.layer, wanted)
        return [_image_output(opts, expl, n, caption) for n, caption in enumerate(generated)]

    # The images go in BGR and mean-subtracted, as every grad-cam script fed its CNN, although
    # neuraltalk2's expects RGB: kept, so the maps are the original's.
    return explain_images(opts.inputs, opts.batch_size, opts.input_sz, explain_batch, log=log)


def _image_output(opts: CaptioningOptions, expl: Explanation, n: int, generated: str) -> ImageOutput:
    """Image ``n``'s stdout lines (Lua's print separates its arguments with a tab) and PNGs, as a
    single-image run gives them; ``generated`` is its generated caption."""
    lines = ["No caption provided, using generated caption for Grad-CAM."] if "" in opts.captions else []
    lines.append(f"Generated caption: \t{generated}")
    rendered: list[outputs.Rendered] = []
    for k, wanted in enumerate(opts.captions):
        caption = wanted or generated
        lines.append(f"Grad-CAM caption: \t{caption}")
        rendered += outputs.render_triplet(
            "caption", caption, expl.cam[n, k], expl.guided[n, k], heatmap=opts.save_as_heatmap
        )
    return ImageOutput(lines, rendered)
