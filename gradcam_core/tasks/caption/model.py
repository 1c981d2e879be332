"""The neuraltalk2 model at evaluation time: the language model, and a loaded checkpoint's three
parts (:class:`Captioner`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import GradCamError
from ...nets.graph import GraphNet
from ...nets.lstm import Torch7LSTMCell
from ..vocabulary import Vocabulary


class LanguageModel(nn.Module):
    """neuraltalk2's ``nn.LanguageModel`` at evaluation time (dropout is the identity).

    One step of the core: for layers l = 1..L, (c'_l, h'_l) = cell_l(drop_l(x_l), c_l, h_l) with x_1
    the step's input and x_l = h'_{l-1}, each cell a :class:`~gradcam_core.nets.lstm.Torch7LSTMCell`
    (gates i, f, o, g); log-probabilities = log_softmax(decoder(final_drop(h'_L))) over V+1 classes.

    Args:
        lookup: (V+1, E) word vectors; row V+1 (1-based) is the START token.
        i2h, h2h: per layer, Linear(E or R -> 4R) and Linear(R -> 4R).
        drops: per layer, the dropout applied to its input (identity for layer 1).
        final_drop, decoder: dropout and Linear(R -> V+1) on the top h'.
        seq_length: T, the number of word positions.
    """

    def __init__(self, lookup: torch.Tensor, i2h: list[nn.Linear], h2h: list[nn.Linear],
                 drops: list[nn.Module], final_drop: nn.Module, decoder: nn.Linear, seq_length: int) -> None:
        super().__init__()
        self.lookup = nn.Embedding.from_pretrained(lookup, freeze=True)
        self.cells = nn.ModuleList(
            Torch7LSTMCell(a.in_features, b.in_features, a, b) for a, b in zip(i2h, h2h, strict=True)
        )
        self.drops = nn.ModuleList(drops)
        self.final_drop, self.decoder = final_drop, decoder
        self.seq_length = seq_length
        self.requires_grad_(False)  # inference only: gradients flow to the image feature, not here
        self.eval()

    @property
    def vocab_size(self) -> int:
        """V, the number of words (the lookup table and the decoder have V + 1 rows)."""
        return self.lookup.num_embeddings - 1

    @property
    def rnn_size(self) -> int:
        """R, the size of the LSTM state."""
        cell = self.cells[0]
        assert isinstance(cell, Torch7LSTMCell)
        return cell.hidden_size

    @property
    def input_size(self) -> int:
        """E, the size of the image feature and of the word vectors."""
        return self.lookup.embedding_dim

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """1-based tokens (N,) -> (N, E); V+1 gives the START vector."""
        return self.lookup(tokens - 1)

    def start_state(self, feature: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Zero (c, h) per layer, each (N, R), as neuraltalk2's init_state."""
        zeros = feature.new_zeros(feature.shape[0], self.rnn_size)
        return [(zeros, zeros)] * len(self.cells)

    def step(self, x: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]]
             ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """One LSTM step: x (N, E), state -> (new state, log-probabilities (N, V+1))."""
        new_state = []
        for cell, drop, (c, h) in zip(self.cells, self.drops, state):
            c, x = cell(drop(x), c, h)
            new_state.append((c, x))
        return new_state, F.log_softmax(self.decoder(self.final_drop(x)), dim=1)

    def forward(self, feature: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log-probabilities, as ``LanguageModel:updateOutput``.

        Args:
            feature: (N, E) image features.
            labels: (T, N) long, 1-based words, 0 = padding (T = seq_length).
        Returns:
            (T+2, N, V+1): row 1 after the image, row 2 after START (predicting word 1), row t >= 3
            after word t-2 (0 replaced by word 1, as the original did; those rows are never scored).
            Steps whose tokens are all 0 are skipped, and everything after them (sent_to_label fills
            labels from the top, so nothing follows): their rows are 0. (The original left them as
            uninitialised memory, in practice zeros.)
        """
        self._check(feature)
        if labels.dim() != 2 or labels.shape[1] != feature.shape[0]:
            raise GradCamError(f"labels must be (T, {feature.shape[0]}), got {tuple(labels.shape)}")
        n, steps = feature.shape[0], labels.shape[0] + 2
        state, rows = self.start_state(feature), []
        for t in range(steps):
            if t == 0:
                x = feature
            elif t == 1:
                x = self.embed(self._start(n, feature.device))
            elif labels[t - 2].any():
                x = self.embed(labels[t - 2].clamp_min(1))
            else:
                break
            state, logp = self.step(x, state)
            rows.append(logp)
        skipped = rows[0].new_zeros(steps - len(rows), n, self.vocab_size + 1)
        return torch.cat([torch.stack(rows), skipped])

    @torch.no_grad()
    def sample(self, feature: torch.Tensor) -> torch.Tensor:
        """Greedy decoding (``LanguageModel:sample`` with its defaults): (N, E) -> (T, N) long tokens
        in 1..V+1. All T positions are filled, also after END; ties go to the lowest index."""
        self._check(feature)
        state, logp = self.step(feature, self.start_state(feature))  # the image, then START
        state, logp = self.step(self.embed(self._start(feature.shape[0], feature.device)), state)
        tokens = []
        for _ in range(self.seq_length):
            tokens.append(logp.argmax(dim=1) + 1)
            state, logp = self.step(self.embed(tokens[-1]), state)
        return torch.stack(tokens)

    def _start(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.full((n,), self.vocab_size + 1, dtype=torch.long, device=device)

    def _check(self, feature: torch.Tensor) -> None:
        if feature.dim() != 2 or feature.shape[1] != self.input_size:
            raise GradCamError(
                f"the language model takes (N, {self.input_size}) image features; the CNN gives "
                f"{tuple(feature.shape)}"
            )


@dataclass
class Captioner:
    """A loaded neuraltalk2 checkpoint: the CNN (image -> (N, E) features), the language model and
    the vocabulary."""

    cnn: GraphNet
    lm: LanguageModel
    vocab: Vocabulary
