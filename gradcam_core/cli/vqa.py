"""``visual_question_answering.py`` (``th visual_question_answering.lua``): its options checked, its
printed lines, its files. Answers are named by their text; :mod:`gradcam_core.tasks.vqa` takes 0-based
answer indices."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..engine import Explanation
from ..run import outputs
from ..run.batches import ImageOutput, explain_images
from ..run.inputs import Inputs
from ..tasks.vqa.model import (
    DTYPE, VQASizes, Vocabulary, explain_answers, load_answerer, load_image_net, load_vocabulary,
)
from .options import as_str_list
from .shapecheck import input_size_errors




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


def run(opts: VQAOptions, log: Callable[[str], None] = print) -> list[Path]:
    """The whole of ``th visual_question_answering.lua``, for one image or many: returns the written files."""
    vocab = load_vocabulary(opts.vocab_file)
    answers = expand_answers(opts.answers, vocab)
    answerer = load_answerer(opts.model_path, vocab, opts.sizes, opts.device)
    tokens, ids, length = answerer.encode(opts.question)
    image_net = load_image_net(opts.proto_file, opts.model_file, opts.device)
    log(f"Successfully loaded {opts.model_file}")
    image_net.cnn.index_of(opts.layer_name)  # an unknown layer fails before any work, listing valid names

    for token in tokens:  # what prepro_ques.py printed
        log(token)
    log(str(ids))
    log(f"Question: \t{opts.question}")
    question = answerer.question_feature(
        torch.tensor([ids], device=opts.device), torch.tensor([length], device=opts.device)
    )
    requested = [vocab.answer_index(a) if a else None for a in answers]

    def explain_batch(images: torch.Tensor) -> list[ImageOutput]:
        with input_size_errors(opts.input_sz):
            expl, scores, indices = explain_answers(
                image_net, answerer.answer_net, images, question, requested, opts.layer_name
            )
        return [_image_output(opts, vocab, answers, expl, scores, indices, n) for n in range(len(indices))]

    return explain_images(opts.inputs, opts.batch_size, opts.input_sz, explain_batch, dtype=DTYPE, log=log)


def _image_output(
    opts: VQAOptions, vocab: Vocabulary, answers: list[str], expl: Explanation, scores: torch.Tensor,
    indices: list[list[int]], n: int,
) -> ImageOutput:
    """Image ``n``'s stdout lines and PNGs, as a single-image run gives them.

    ``scores`` (N, A) and ``indices`` (per image, each target's 0-based answer) are the batch's; lines: the
    original's "Predicted answer" (Lua's print joins its arguments with a tab), one "Grad-CAM answer"
    per target, and a note when a requested answer was replaced by the predicted one.
    """
    predicted = vocab.answers[int(scores[n].argmax())]
    lines = [f"Predicted answer: \t{predicted}"]
    rendered: list[outputs.Rendered] = []
    for k, index in enumerate(indices[n]):
        want, name = answers[k], vocab.answers[index]
        lines.append(f"Grad-CAM answer: \t{name}")
        if not want:
            lines.append(f"no -answer given; using the predicted answer {name!r}")
        elif want != name:
            lines.append(f"answer {want!r} is not one of the model's answers; using the predicted answer {name!r}")
        rendered += outputs.render_triplet(
            "vqa", name, expl.cam[n, k], expl.guided[n, k], heatmap=opts.save_as_heatmap, dtype=DTYPE
        )
    return ImageOutput(lines, rendered)
