"""What VQA explains: the score of an answer for a fixed question, as a function of the image feature."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...engine import Explanation, explain
from ...engine.targets import score_of
from .model import AnswerNet


class AnswerTarget:
    """The pre-softmax score of one answer for a fixed question: image feature f (N, 4096) -> (N,).

    Args:
        answer_net: the multimodal net.
        question: q (1 or N, 2LH), the question feature (fixed: no gradient flows into it).
        index: 0-based answer index, or None for each image's predicted answer.
    """

    def __init__(self, answer_net: AnswerNet, question: torch.Tensor, index: int | None) -> None:
        self.answer_net, self.question, self.index = answer_net, question.detach(), index

    def __call__(self, feature: torch.Tensor) -> torch.Tensor:
        return score_of(self.answer_net(self.question, feature), self.index)

    def pin(self, feature: torch.Tensor, n: int) -> AnswerTarget:
        """This target for B perturbed copies of image ``n`` of ``feature`` (N, 4096): image ``n``'s
        question row, and for the predicted answer the answer predicted for that image unperturbed."""
        question = self.question if self.question.shape[0] == 1 else self.question[n : n + 1]
        index = self.index
        if index is None:
            with torch.no_grad():
                index = int(self.answer_net(question, feature[n : n + 1]).argmax(dim=1))
        return AnswerTarget(self.answer_net, question, index)


def explain_answers(
    image_net: nn.Module, answer_net: AnswerNet, image: torch.Tensor, question: torch.Tensor,
    answers: Sequence[int | None], layer: str | int,
) -> tuple[Explanation, torch.Tensor, list[list[int]]]:
    """Grad-CAM, guided backprop and guided Grad-CAM for K answers from one CNN forward.

    Args:
        image: (N, 3, S, S) preprocessed (BGR, mean-subtracted).
        question: q (1 or N, 2LH).
        answers: K 0-based answer indices; None = each image's predicted answer.
    Returns:
        the explanation (its ``scores`` are the image features (N, 4096)), the answer scores (N, A),
        and per image the 0-based answer index of each target.
    """
    expl = explain(image_net, image, layer, [AnswerTarget(answer_net, question, index) for index in answers])
    return (expl, *resolve_answers(answer_net, question, expl.scores, answers))


def resolve_answers(answer_net: AnswerNet, question: torch.Tensor, features: torch.Tensor,
                    answers: Sequence[int | None]) -> tuple[torch.Tensor, list[list[int]]]:
    """The answer scores (N, A) of the image features (N, 4096) and, per image, the 0-based answer
    index of each target (None: its predicted answer)."""
    with torch.no_grad():
        scores = answer_net(question, features)
    predicted = scores.argmax(dim=1).tolist()
    return scores, [[p if index is None else index for index in answers] for p in predicted]
