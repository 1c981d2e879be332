"""``visual_question_answering.py`` (``th visual_question_answering.lua``): its options checked, what it
prints while loading, its targets (answers named by their text: :mod:`gradcam_core.run.vqa`)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..run.inputs import Inputs
from ..run.task import Methods
from ..run.vqa import VQATask
from ..tasks.vocabulary import Vocabulary
from ..tasks.vqa.model import VQASizes
from .options import as_str_list
from .program import Log, RunOptions, run_task


@dataclass
class VQAOptions:
    """The options of visual_question_answering.lua, converted and checked (see the entry script).

    ``answers``: the ``-answer`` values, each "" (= the predicted answer), an answer's text, or
    several answers separated by commas (see :func:`expand_answers`).
    ``inputs``: the image(s) and where each one's files go (:mod:`gradcam_core.run.inputs`).
    """

    proto_file: Path
    model_file: Path
    inputs: Inputs
    model_path: Path
    vocab_file: Path
    question: str = "What animal?"
    answers: list[str] = field(default_factory=lambda: [""])
    layer_name: str = "relu5_4"
    input_sz: int = 224
    sizes: VQASizes = field(default_factory=VQASizes)
    save_as_heatmap: bool = True
    save_overlay: bool = False  # -save_overlay 1: one more file per target, <prefix>_overlay_<name>.png
    device: torch.device = torch.device("cpu")
    batch_size: int = 8
    methods: Methods = field(default_factory=Methods)  # -method and its modifiers


def expand_answers(values: Sequence[str], vocab: Vocabulary) -> list[str]:
    """``-answer`` values -> the answers to explain, in order.

    A value that is one of the model's answers (or '') is one answer, even with a comma in it;
    otherwise a list literal ``'["dog", "cat"]'`` or comma-separated text ``dog,cat`` gives several
    (each part stripped of spaces; empty parts dropped).
    """
    expanded: list[str] = []
    for value in values:
        whole = value == "" or vocab.answer_index(value) is not None
        expanded += [value] if whole else as_str_list("answer", value, ",")
    return expanded


def run(opts: VQAOptions, log: Log = print) -> list[Path]:
    """The whole of ``th visual_question_answering.lua``, for one image or many: returns the written files.
    An answer the model does not know is its predicted answer, with a note (the original's rule)."""
    task = VQATask.load(opts.model_path, opts.vocab_file, opts.proto_file, opts.model_file, sizes=opts.sizes,
                        device=opts.device, question=opts.question)
    log(f"Successfully loaded {opts.model_file}")
    targets = task.targets(expand_answers(opts.answers, task.vocab), option="-answer")
    common = RunOptions(opts.layer_name, opts.inputs, opts.input_sz, opts.batch_size, opts.save_as_heatmap,
                        opts.save_overlay, opts.methods)
    return run_task(task, targets, common, log)
