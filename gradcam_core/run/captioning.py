"""Captioning as every front end drives it (:class:`CaptioningTask`): a neuraltalk2 checkpoint, targets
named by their caption ('' = each image's generated caption)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..engine import explain
from ..tasks.caption.checkpoint import load_checkpoint
from ..tasks.caption.model import Captioner
from ..tasks.caption.target import CaptionTarget, generate
from .task import BatchResult, ImageResult, Methods, TargetResult, Task


@dataclass
class CaptionTargets:
    """The captions to explain as asked ('' = each image's generated caption) and their targets."""

    captions: list[str]
    targets: list[CaptionTarget]


class CaptioningTask(Task[CaptionTargets]):
    """A neuraltalk2 checkpoint; a target is a caption.

    The images go in BGR and mean-subtracted, as every grad-cam script fed its CNN, although
    neuraltalk2's expects RGB: kept, so the maps are the original's."""

    name, prefix, target_field = "captioning", "caption", "caption"
    original_layer = "30"

    def __init__(self, captioner: Captioner, device: torch.device = torch.device("cpu"),
                 model_name: str = "the captioning model") -> None:
        self.captioner, self.net, self.device, self.model_name = captioner, captioner.cnn, device, model_name

    @classmethod
    def load(cls, model_path: Path, *, device: torch.device = torch.device("cpu")) -> CaptioningTask:
        """The checkpoint (CNN, language model, vocabulary) of ``model_path``."""
        return cls(load_checkpoint(model_path, device), device, str(model_path))

    def targets(self, values: Sequence[str], *, option: str = "", strict: bool = False,
                question: str | None = None) -> CaptionTargets:
        """A caption that does not fit (too many words, an unknown word without UNK) fails here."""
        return CaptionTargets(list(values), [CaptionTarget(self.captioner, c or None) for c in values])

    def explain(self, images: torch.Tensor, layer: str, targets: CaptionTargets, methods: Methods) -> BatchResult:
        expls = explain(self.captioner.cnn, images, layer, targets.targets, **methods.explain_options())
        generated = generate(self.captioner.lm, self.captioner.vocab, expls[methods.names[0]].scores)
        return BatchResult(expls, [self._image(g, targets.captions) for g in generated])

    @staticmethod
    def _image(generated: str, asked: list[str]) -> ImageResult:
        """One image's results; its lines as the original's (Lua's print separates its arguments with a
        tab)."""
        captions = [wanted or generated for wanted in asked]
        lines = ["No caption provided, using generated caption for Grad-CAM."] if "" in asked else []
        lines.append(f"Generated caption: \t{generated}")
        lines += [f"Grad-CAM caption: \t{caption}" for caption in captions]
        return ImageResult([TargetResult(c, {"caption": c}) for c in captions], {"caption": generated}, None, lines)
