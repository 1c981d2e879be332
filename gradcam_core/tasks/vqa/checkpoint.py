"""``lstm.t7``: the weights of the VQA nets, and the diagnosis of lengths that do not fit the options.

``lstm.t7`` is a table of three flat vectors, the ``getParameters()`` of the three nets:
``embedding_w_q`` = W_e (E x V), b_e; ``encoder_w_q`` = per layer i2h W, i2h b, h2h W, h2h b, then the
unused projection Linear(H, 1) W, b; ``multimodal_w`` = W_q (C x 2LH), b_q, W_i (C x 4096), b_i,
W_out (A x C), b_out. Weights are row-major out x in, as in PyTorch. The size options are not stored
in the file; lengths that do not fit them are refused with the option that is probably wrong
(:func:`check_vector_sizes`).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ...errors import GradCamError
from ...formats.torch7 import load_t7
from ..vocabulary import Vocabulary
from .model import DTYPE, IMAGE_FEATURE_SIZE, QuestionAnswerer, VQASizes

VECTOR_KEYS = ("embedding_w_q", "encoder_w_q", "multimodal_w")


def load_answerer(
    model_path: Path, vocab: Vocabulary, sizes: VQASizes, device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = DTYPE,
) -> QuestionAnswerer:
    """The VQA nets with the weights of ``lstm.t7``, checked against ``sizes`` and the vocabulary."""
    vectors = read_vectors(model_path)
    check_vector_sizes({k: v.size for k, v in vectors.items()}, sizes, vocab, model_path)
    model = QuestionAnswerer(vocab, sizes).to(device=device, dtype=dtype)
    with torch.no_grad():
        for key, params in model.torch7_parameters().items():
            _copy_flat(params, vectors[key])
    return model.eval()


def read_vectors(model_path: Path) -> dict[str, np.ndarray]:
    """The three flat vectors of ``lstm.t7`` (any numeric tensor type, flattened as Lua's copy did)."""
    root = load_t7(model_path)
    if not isinstance(root, dict):
        raise GradCamError(f"{model_path}: expected a table {{{', '.join(VECTOR_KEYS)}}}, found {type(root).__name__}")
    vectors = {}
    for key in VECTOR_KEYS:
        value = root.get(key)
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu" or value.size == 0:
            raise GradCamError(f"{model_path}: {key!r} is missing or is not a numeric tensor")
        vectors[key] = value.reshape(-1)
    return vectors


def _copy_flat(params: list[torch.Tensor], flat: np.ndarray) -> None:
    """Fill ``params`` with consecutive slices of ``flat`` (its length was checked)."""
    offset = 0
    for p in params:
        chunk = torch.from_numpy(flat[offset : offset + p.numel()])
        p.copy_(chunk.view(p.shape))
        offset += p.numel()


def embedding_size(n_words: int, e: int) -> int:
    """Values in ``embedding_w_q``: E x V weights + E biases."""
    return e * (n_words + 1)


def encoder_size(e: int, h: int, layers: int) -> int:
    """Values in ``encoder_w_q``: per layer i2h (4H x in + 4H) and h2h (4H x H + 4H), plus proj (H + 1)."""
    return 4 * h * (e + 1) + 4 * h * (h + 1) + (layers - 1) * 8 * h * (h + 1) + h + 1


def multimodal_size(state: int, c: int, a: int) -> int:
    """Values in ``multimodal_w``: C x (2LH + 1) + C x (4096 + 1) + A x (C + 1)."""
    return c * (state + 1) + c * (IMAGE_FEATURE_SIZE + 1) + a * (c + 1)


def check_vector_sizes(lengths: dict[str, int], sizes: VQASizes, vocab: Vocabulary, model_path: Path) -> None:
    """Refuse vector lengths that do not fit the options, naming the option that probably is wrong.

    Checked in order: embedding (E and the vocabulary's V), encoder (E, H, L), multimodal (C, A), then
    A against the vocabulary's answers. For a misfit, the message lists the single option values (or
    vocabulary size) that would fit.
    """
    e, h, layers, c, a = (sizes.input_encoding_size, sizes.rnn_size, sizes.rnn_layers,
                          sizes.common_embedding_size, sizes.num_output)
    v = vocab.n_words
    n = lengths["embedding_w_q"]
    if n != embedding_size(v, e):
        fits = _fits({"-input_encoding_size": lambda x: embedding_size(v, x)}, n)
        if n % e == 0 and n // e > 1:
            fits.append(f"a -vocab_file with {n // e - 1} words")
        _misfit(model_path, "embedding_w_q", n, f"-input_encoding_size {e} and a {v}-word vocabulary",
                embedding_size(v, e), fits)
    n = lengths["encoder_w_q"]
    if n != encoder_size(e, h, layers):
        fits = _fits({"-rnn_size": lambda x: encoder_size(e, x, layers),
                      "-rnn_layers": lambda x: encoder_size(e, h, x)}, n)
        _misfit(model_path, "encoder_w_q", n, f"-input_encoding_size {e} -rnn_size {h} -rnn_layers {layers}",
                encoder_size(e, h, layers), fits)
    n, state = lengths["multimodal_w"], sizes.state_size
    if n != multimodal_size(state, c, a):
        fits = _fits({"-common_embedding_size": lambda x: multimodal_size(state, x, a),
                      "-num_output": lambda x: multimodal_size(state, c, x)}, n)
        answers = len(vocab.answers)
        fit_c = _solve(lambda x: multimodal_size(state, x, answers), n)
        if not fits and fit_c is not None:
            fits.append(f"-common_embedding_size {fit_c} -num_output {answers}")
        _misfit(model_path, "multimodal_w", n,
                f"-rnn_size {h} -rnn_layers {layers} -common_embedding_size {c} -num_output {a}",
                multimodal_size(state, c, a), fits)
    if a != len(vocab.answers):
        raise GradCamError(f"-num_output {a} does not match the vocabulary, which lists {len(vocab.answers)} answers")


def _fits(candidates: dict[str, Callable[[int], int]], n: int) -> list[str]:
    """``"-option value"`` for each option whose size function reaches ``n`` at some value."""
    found = [(option, _solve(size, n)) for option, size in candidates.items()]
    return [f"{option} {x}" for option, x in found if x is not None]


def _solve(size: Callable[[int], int], n: int) -> int | None:
    """The x >= 1 with size(x) == n for a strictly increasing ``size``, or None."""
    lo, hi = 1, 1
    while size(hi) < n:
        lo, hi = hi + 1, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if size(mid) < n else (lo, mid)
    return lo if size(lo) == n else None


def _misfit(model_path: Path, key: str, n: int, options: str, need: int, fits: list[str]) -> None:
    hint = (f"it would fit {' or '.join(fits)}, so that is probably what is wrong" if fits
            else "no single option change fits it: check these options and -model_path")
    raise GradCamError(f"{model_path}: {key} has {n} values; {options} need {need} ({hint})")
