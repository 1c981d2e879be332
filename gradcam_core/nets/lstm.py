"""The LSTM step of Torch7's nngraph LSTMs: VQA_LSTM_CNN's ``lstm_conventional`` and neuraltalk2's
``LSTM.lstm`` build the same cell, one per layer.

PyTorch's ``nn.LSTMCell`` differs in the gate order (i, f, g, o), so the Torch7 weights are not simply
copied into it; the step is written out here instead.
"""
from __future__ import annotations

import torch
from torch import nn


class Torch7LSTMCell(nn.Module):
    """One LSTM layer, one time step.

    z = i2h(x) + h2h(h) (two biases), 4H sums read as the gates in Torch's order **i, f, o, g**:
    i, f, o = sigmoid(z[:3H]), g = tanh(z[3H:]); c' = f * c + i * g; h' = o * tanh(c').

    Args:
        input_size, hidden_size: the step's input width and H.
        i2h, h2h: the two Linear layers (in -> 4H, H -> 4H) to use, e.g. converted from a checkpoint;
            new ones (PyTorch's initialisation) when not given.
    """

    def __init__(self, input_size: int, hidden_size: int, i2h: nn.Linear | None = None,
                 h2h: nn.Linear | None = None) -> None:
        super().__init__()
        self.i2h = i2h if i2h is not None else nn.Linear(input_size, 4 * hidden_size)
        self.h2h = h2h if h2h is not None else nn.Linear(hidden_size, 4 * hidden_size)
        shapes = ((self.i2h.in_features, self.i2h.out_features), (self.h2h.in_features, self.h2h.out_features))
        if shapes != ((input_size, 4 * hidden_size), (hidden_size, 4 * hidden_size)):
            raise ValueError(f"i2h and h2h must be Linear({input_size} -> {4 * hidden_size}) and "
                             f"Linear({hidden_size} -> {4 * hidden_size}), got {shapes}")

    @property
    def hidden_size(self) -> int:
        """H, the width of c and h."""
        return self.h2h.in_features

    def forward(self, x: torch.Tensor, c: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, in), c and h (N, H) -> (c', h'), each (N, H)."""
        z = self.i2h(x) + self.h2h(h)
        size = self.hidden_size
        in_gate, forget_gate, out_gate = torch.sigmoid(z[:, : 3 * size]).chunk(3, dim=1)
        cell_input = torch.tanh(z[:, 3 * size :])
        c_next = forget_gate * c + in_gate * cell_input
        return c_next, out_gate * torch.tanh(c_next)
