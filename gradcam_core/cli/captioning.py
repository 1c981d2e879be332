"""``captioning.py`` (``th captioning.lua``): its options checked, its printed lines, its files."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..engine import Explanation
from ..nets.graph import GraphNet
from ..run.inputs import Inputs
from ..tasks.caption.checkpoint import load_checkpoint
from ..tasks.caption.target import DEFAULT_CAPTION, CaptionTarget, explain_captions
from .program import Described, Log, Program, RunOptions, run_program


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
    save_overlay: bool = False  # -save_overlay 1: one more file per target, <prefix>_overlay_<name>.png
    device: torch.device = torch.device("cpu")
    batch_size: int = 8


class CaptioningProgram(Program[str]):
    """captioning.lua's lines and file names (files named by the caption); a result is an image's
    generated caption."""

    prefix = "caption"

    def __init__(self, opts: CaptioningOptions) -> None:
        self.opts = opts
        self.wanted = [c or None for c in opts.captions]  # None: each image's generated caption

    def load(self, log: Log) -> GraphNet:
        self.model = load_checkpoint(self.opts.model_path, self.opts.device)
        self.model_name = str(self.opts.model_path)
        return self.model.cnn

    def start(self, log: Log) -> None:
        for caption in self.wanted:
            CaptionTarget(self.model, caption)  # a caption that does not fit fails before any work

    def explain(self, images: torch.Tensor, layer: str) -> tuple[Explanation, list[str]]:
        # The images go in BGR and mean-subtracted, as every grad-cam script fed its CNN, although
        # neuraltalk2's expects RGB: kept, so the maps are the original's.
        return explain_captions(self.model, images, layer, self.wanted)

    def describe(self, generated: str) -> Described:
        """Lua's print separates its arguments with a tab."""
        captions = [wanted or generated for wanted in self.opts.captions]
        lines = ["No caption provided, using generated caption for Grad-CAM."] if "" in self.opts.captions else []
        lines.append(f"Generated caption: \t{generated}")
        lines += [f"Grad-CAM caption: \t{caption}" for caption in captions]
        return Described(lines, captions)


def run(opts: CaptioningOptions, log: Log = print) -> list[Path]:
    """The whole of ``th captioning.lua``, for one image or many: returns the written files."""
    common = RunOptions(opts.layer, opts.inputs, opts.input_sz, opts.batch_size, opts.save_as_heatmap,
                        opts.save_overlay)
    return run_program(CaptioningProgram(opts), common, log)
