"""``visual_question_answering.py`` (``th visual_question_answering.lua``): its options checked, its
printed lines, its files. Answers are named by their text; :mod:`gradcam_core.tasks.vqa` takes 0-based
answer indices."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..engine import Explanation
from ..nets.graph import GraphNet
from ..run.inputs import Inputs
from ..tasks.vocabulary import Vocabulary
from ..tasks.vqa.checkpoint import load_answerer
from ..tasks.vqa.image_net import load_image_net
from ..tasks.vqa.model import DTYPE, VQASizes
from ..tasks.vqa.target import explain_answers
from ..tasks.vqa.vocabulary import load_vocabulary
from .options import as_str_list
from .program import Described, Log, Program, RunOptions, run_program


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


@dataclass
class ImageAnswers:
    """One image's VQA results: its answer scores (A,) and each target's 0-based answer index."""

    scores: torch.Tensor
    indices: list[int]


class VQAProgram(Program[ImageAnswers]):
    """visual_question_answering.lua's loading, lines and file names (answers named by their text)."""

    prefix = "vqa"
    dtype = DTYPE

    def __init__(self, opts: VQAOptions) -> None:
        self.opts = opts

    def load(self, log: Log) -> GraphNet:
        opts = self.opts
        self.vocab = load_vocabulary(opts.vocab_file)
        self.answers = expand_answers(opts.answers, self.vocab)
        self.answerer = load_answerer(opts.model_path, self.vocab, opts.sizes, opts.device)
        self.encoded = self.answerer.encode(opts.question)
        self.image_net = load_image_net(opts.proto_file, opts.model_file, opts.device)
        log(f"Successfully loaded {opts.model_file}")
        self.model_name = f"{opts.model_path} with {opts.model_file}"
        return self.image_net.cnn

    def start(self, log: Log) -> None:
        opts, (tokens, ids, length) = self.opts, self.encoded
        for token in tokens:  # what prepro_ques.py printed
            log(token)
        log(str(ids))
        log(f"Question: \t{opts.question}")
        self.question = self.answerer.question_feature(
            torch.tensor([ids], device=opts.device), torch.tensor([length], device=opts.device)
        )
        self.requested = [self.vocab.answer_index(a) if a else None for a in self.answers]

    def explain(self, images: torch.Tensor, layer: str) -> tuple[Explanation, list[ImageAnswers]]:
        expl, scores, indices = explain_answers(
            self.image_net, self.answerer.answer_net, images, self.question, self.requested, layer
        )
        return expl, [ImageAnswers(scores[n], per_image) for n, per_image in enumerate(indices)]

    def describe(self, result: ImageAnswers) -> Described:
        """The original's "Predicted answer" line (Lua's print joins its arguments with a tab), one
        "Grad-CAM answer" per target, and a note when a requested answer was replaced by the predicted
        one; the files are named by the answer."""
        answers = self.vocab.answers
        lines, names = [f"Predicted answer: \t{answers[int(result.scores.argmax())]}"], []
        for want, index in zip(self.answers, result.indices):
            name = answers[index]
            lines.append(f"Grad-CAM answer: \t{name}")
            if not want:
                lines.append(f"no -answer given; using the predicted answer {name!r}")
            elif want != name:
                lines.append(f"answer {want!r} is not one of the model's answers; using the predicted answer {name!r}")
            names.append(name)
        return Described(lines, names)


def run(opts: VQAOptions, log: Log = print) -> list[Path]:
    """The whole of ``th visual_question_answering.lua``, for one image or many: returns the written files."""
    common = RunOptions(opts.layer_name, opts.inputs, opts.input_sz, opts.batch_size, opts.save_as_heatmap,
                        opts.save_overlay)
    return run_program(VQAProgram(opts), common, log)
