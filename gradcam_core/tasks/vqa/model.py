"""The question side of VQA_LSTM_CNN: word embedding, the LSTM question encoder and the answer net
(``QuestionAnswerer``), with the size options that shape them and the precision of the whole task."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...errors import GradCamError
from ...nets.lstm import Torch7LSTMCell
from ..vocabulary import Vocabulary
from .tokenize import MAX_QUESTION_LENGTH, encode_question, question_tokens

DTYPE = torch.float64
"""Precision of the whole VQA computation: the original's (see :mod:`gradcam_core.tasks.vqa`)."""

IMAGE_FEATURE_SIZE = 4096
"""Width of the image feature (relu7) the multimodal net reads; the Lua script hard-coded it."""


@dataclass(frozen=True)
class VQASizes:
    """The model options of visual_question_answering.lua (they are not stored in ``lstm.t7``)."""

    input_encoding_size: int = 200  # E
    rnn_size: int = 512  # H
    rnn_layers: int = 2  # L
    common_embedding_size: int = 1024  # C
    num_output: int = 1000  # A

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise GradCamError(f"-{name} must be a whole number of at least 1, got {value!r}")

    @property
    def state_size(self) -> int:
        """2 * L * H: the question feature [c1, h1, ..., cL, hL]."""
        return 2 * self.rnn_layers * self.rnn_size


class WordEmbedding(nn.Module):
    """``embedding_net_q`` = Linear(V, E), Dropout, Tanh on one-hot rows, i.e. for the 1-based word w:
    tanh(W[:, w - 1] + b). Word ids (...) long -> (..., E)."""

    def __init__(self, n_words: int, size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_words, size)

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear.weight.t()[words - 1] + self.linear.bias)


class QuestionEncoder(nn.Module):
    """``encoder_net_q``: an L-layer LSTM whose state is one vector [c1, h1, c2, h2, ...] (N, 2LH).

    Each layer is a :class:`~gradcam_core.nets.lstm.Torch7LSTMCell` (gates i, f, o, g); layer l > 1
    reads layer l - 1's new h. ``proj`` (Linear(H, 1) on the top h) is the cell's second
    output, which the original never uses; it is kept because its weights are part of ``encoder_w_q``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.layers = nn.ModuleList(
            Torch7LSTMCell(input_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers)
        )
        self.proj = nn.Linear(hidden_size, 1)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One time step: x (N, E), state (N, 2LH) -> the next state (N, 2LH)."""
        size, parts = self.hidden_size, []
        for i, layer in enumerate(self.layers):
            c = state[:, 2 * i * size : (2 * i + 1) * size]
            h = state[:, (2 * i + 1) * size : (2 * i + 2) * size]
            c, x = layer(x, c, h)
            parts += [c, x]
        return torch.cat(parts, dim=1)

    def forward(self, words: torch.Tensor, started: torch.Tensor) -> torch.Tensor:
        """Run over right-aligned words (N, T, E) from a zero state; a question's state stays zero
        until it starts (``started`` (N, T) bool), as RNNUtils' rnn_forward appended zero rows.
        Returns the final state (N, 2LH)."""
        n, steps = started.shape
        state = words.new_zeros(n, 2 * len(self.layers) * self.hidden_size)
        for t in range(steps):
            state = torch.where(started[:, t, None], self.step(words[:, t], state), state)
        return state


class AnswerNet(nn.Module):
    """``multimodal_net``: AxB fusion, then the answer Linear: q (N, 2LH), f (N, 4096) -> (N, A)
    pre-softmax scores = answer(tanh(question(q)) * tanh(image(f)))."""

    def __init__(self, question_size: int, image_size: int, common_size: int, num_answers: int) -> None:
        super().__init__()
        self.question = nn.Linear(question_size, common_size)
        self.image = nn.Linear(image_size, common_size)
        self.answer = nn.Linear(common_size, num_answers)

    def forward(self, question: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if question.shape[0] == 1 and image.shape[0] != 1:
            question = question.expand(image.shape[0], -1)
        return self.answer(torch.tanh(self.question(question)) * torch.tanh(self.image(image)))


class QuestionAnswerer(nn.Module):
    """The three VQA nets of ``lstm.t7`` with their vocabulary."""

    def __init__(self, vocab: Vocabulary, sizes: VQASizes) -> None:
        super().__init__()
        self.vocab, self.sizes = vocab, sizes
        self.embedding = WordEmbedding(vocab.n_words, sizes.input_encoding_size)
        self.encoder = QuestionEncoder(sizes.input_encoding_size, sizes.rnn_size, sizes.rnn_layers)
        self.answer_net = AnswerNet(
            sizes.state_size, IMAGE_FEATURE_SIZE, sizes.common_embedding_size, sizes.num_output
        )

    def torch7_parameters(self) -> dict[str, list[torch.Tensor]]:
        """Each flat vector's parameters in ``getParameters()`` order (nngraph's topological order:
        layer by layer i2h before h2h, then the projection; AxB's question Linear before its image one)."""
        encoder: list[torch.Tensor] = []
        for layer in self.encoder.layers:
            assert isinstance(layer, Torch7LSTMCell)
            encoder += [layer.i2h.weight, layer.i2h.bias, layer.h2h.weight, layer.h2h.bias]
        net = self.answer_net
        return {
            "embedding_w_q": [self.embedding.linear.weight, self.embedding.linear.bias],
            "encoder_w_q": encoder + [self.encoder.proj.weight, self.encoder.proj.bias],
            "multimodal_w": [p for lin in (net.question, net.image, net.answer) for p in (lin.weight, lin.bias)],
        }

    def encode(self, question: str) -> tuple[list[str], list[int], int]:
        """(tokens as the model sees them, 26 zero-padded 1-based ids, length) - prepro_ques.py."""
        tokens = question_tokens(question, self.vocab.word_to_ix, MAX_QUESTION_LENGTH)
        return (tokens, *encode_question(question, self.vocab.word_to_ix, MAX_QUESTION_LENGTH))

    @torch.no_grad()
    def question_feature(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (N, T) left-aligned 1-based word ids (0 = padding), lengths (N,) -> q (N, 2LH)."""
        aligned, started = right_align(ids, lengths)
        return self.encoder(self.embedding(aligned.clamp_min(1)), started)


def right_align(ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned ids (N, T) -> (ids (N, Lmax) with each question's words in its last L columns,
    started (N, Lmax) bool), Lmax = max(lengths) (RNNUtils' right_align + sorted encoding)."""
    steps = int(lengths.max())
    t = torch.arange(steps, device=ids.device)
    offset = (steps - lengths.to(ids.device))[:, None]  # (N, 1): first step of each question
    started = t[None, :] >= offset
    source = (t[None, :] - offset).clamp_min(0)
    return torch.where(started, ids.gather(1, source), torch.zeros_like(source)), started
