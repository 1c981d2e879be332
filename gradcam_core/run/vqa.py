"""Visual question answering as every front end drives it (:class:`VQATask`): the VQA_LSTM_CNN model,
a question, and answers named by their text; :mod:`gradcam_core.tasks.vqa` takes 0-based answer
indices."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..engine import explain
from ..errors import GradCamError
from ..tasks.vqa.checkpoint import load_answerer
from ..tasks.vqa.image_net import ImageFeatureNet, load_image_net
from ..tasks.vqa.model import DTYPE, QuestionAnswerer, VQASizes
from ..tasks.vqa.target import AnswerTarget, resolve_answers
from ..tasks.vqa.vocabulary import load_vocabulary
from .task import BatchResult, ImageResult, Methods, TargetResult, Task

TOP = 5
"""How many of the most probable answers a result lists."""


@dataclass
class AnswerTargets:
    """The answers to explain for one question: ``answers`` as asked ('' = the predicted one),
    ``indices`` the model's 0-based answer of each (None = predicted: '' or, unless strict, an answer
    the model does not know); the question's tokens, ids and feature q (1, 2LH)."""

    question: str
    tokens: list[str]
    ids: list[int]
    feature: torch.Tensor
    answers: list[str]
    indices: list[int | None]
    option: str = "answer"


class VQATask(Task[AnswerTargets]):
    """The VQA LSTM + CNN model; a target is an answer to the question."""

    name = prefix = "vqa"
    target_field = "answer"
    original_layer = "relu5_4"
    dtype = DTYPE  # the original ran VQA in float64, CNN included

    def __init__(self, answerer: QuestionAnswerer, image_net: ImageFeatureNet, question: str,
                 device: torch.device = torch.device("cpu"), model_name: str = "the VQA model") -> None:
        self.answerer, self.image_net, self.net = answerer, image_net, image_net.cnn
        self.vocab = answerer.vocab
        self.question, self.device, self.model_name = question, device, model_name

    @classmethod
    def load(cls, model_path: Path, vocab_file: Path, proto_file: Path, model_file: Path, *,
             sizes: VQASizes | None = None, device: torch.device = torch.device("cpu"),
             question: str = "What animal?") -> VQATask:
        """The vocabulary (``data_prepro.json``), the LSTM checkpoint (``lstm.t7``) and the image net
        (the Caffe files), in that order; ``question`` is the one explained when a request names none."""
        vocab = load_vocabulary(vocab_file)
        answerer = load_answerer(model_path, vocab, sizes or VQASizes(), device)
        answerer.encode(question)  # the tokenizer loaded (and the question checked) now, not at the first image
        image_net = load_image_net(proto_file, model_file, device)
        return cls(answerer, image_net, question, device, f"{model_path} with {model_file}")

    def config(self) -> dict[str, Any]:
        return {"question": self.question, "answers": list(self.vocab.answers)}

    def targets(self, values: Sequence[str], *, option: str = "", strict: bool = False,
                question: str | None = None) -> AnswerTargets:
        """Each value one of the model's answers, or '' for the predicted answer; an unknown answer is
        the predicted one too (the original's rule), or with ``strict`` refused."""
        option = option or self.target_field
        question = self.question if question is None else question
        if strict and not question.strip():
            raise GradCamError("a VQA request needs a question")
        indices = []
        for answer in values:
            index = self.vocab.answer_index(answer) if answer else None
            if strict and answer and index is None:
                raise GradCamError(f"{option} {answer!r} is not one of the model's answers")
            indices.append(index)
        tokens, ids, length = self.answerer.encode(question)
        feature = self.answerer.question_feature(torch.tensor([ids], device=self.device),
                                                 torch.tensor([length], device=self.device))
        return AnswerTargets(question, tokens, ids, feature, list(values), indices, option)

    def start_lines(self, targets: AnswerTargets) -> list[str]:
        """What prepro_ques.py printed (the tokens, the ids), then the question."""
        return [*targets.tokens, str(targets.ids), f"Question: \t{targets.question}"]

    def explain(self, images: torch.Tensor, layer: str, targets: AnswerTargets, methods: Methods) -> BatchResult:
        answer_targets = [AnswerTarget(self.answerer.answer_net, targets.feature, i) for i in targets.indices]
        expls = explain(self.image_net, images, layer, answer_targets, **methods.explain_options())
        scores, indices = resolve_answers(self.answerer.answer_net, targets.feature,
                                          expls[methods.names[0]].scores, targets.indices)
        return BatchResult(expls, [self._image(scores[n], per_image, targets) for n, per_image in enumerate(indices)])

    def _image(self, scores: torch.Tensor, indices: list[int], targets: AnswerTargets) -> ImageResult:
        """One image's results from its answer scores (A,). Its lines: the original's "Predicted
        answer" line (Lua's print joins its arguments with a tab), one "Grad-CAM answer" per target, and
        a note when a requested answer was replaced by the predicted one."""
        answers = self.vocab.answers
        predicted = answers[int(scores.argmax())]
        lines = [f"Predicted answer: \t{predicted}"]
        results = []
        for want, index in zip(targets.answers, indices):
            name = answers[index]
            lines.append(f"Grad-CAM answer: \t{name}")
            if not want:
                lines.append(f"no {targets.option} given; using the predicted answer {name!r}")
            elif want != name:
                lines.append(f"answer {want!r} is not one of the model's answers; using the predicted answer {name!r}")
            results.append(TargetResult(name, {"answer": name, "question": targets.question}))
        probs = torch.softmax(scores.double(), 0)
        top = torch.topk(probs, min(TOP, probs.numel()))
        predictions = [{"answer": answers[int(i)], "score": float(p)} for p, i in zip(top.values, top.indices)]
        return ImageResult(results, {"answer": predicted}, predictions, lines)
