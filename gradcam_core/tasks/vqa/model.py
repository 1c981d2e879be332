"""Visual question answering Grad-CAM: the pipeline behind ``visual_question_answering.py``
(``th visual_question_answering.lua``), with the VQA_LSTM_CNN model (VT-vision-lab) loaded from
``lstm.t7`` and ``data_prepro.json``.

What the original computes:

1. image: VGG-19 from the Caffe files without prob and fc8, plus ``nn.Normalize(2)``: the
   L2-normalised relu7 feature ``f`` (4096 values);
2. question: tokenized as grad-cam's ``misc/prepro_ques.py`` did (:mod:`gradcam_core.tokenize`), each
   word a one-hot row through ``Linear(V, E)`` + Tanh, then the ``-rnn_layers``-layer LSTM
   ``lstm_conventional`` over the words from a zero state. The question feature ``q`` is the final
   state ``[c1, h1, c2, h2, ...]`` (2 * L * H values): the cells are part of it, because the LSTM
   hands its whole state on as one vector and the model was trained on that vector;
3. answer scores (pre-softmax, A of them) = ``Linear(C, A)(tanh(W_q q + b_q) * tanh(W_i f + b_i))``
   (VQA_LSTM_CNN's ``netdef.AxB`` fusion; every Dropout is the identity at evaluation);
4. the explained answer is ``-answer`` if it is one of the model's answers, else the predicted one; its
   score's gradient w.r.t. ``f`` drives Grad-CAM at ``-layer_name`` and guided backprop.

Here the CNN runs once (:func:`gradcam_core.engine.explain`) with :class:`AnswerTarget` targets; K
answers share that forward.

Weights: ``lstm.t7`` is a table of three flat vectors, the ``getParameters()`` of the three nets:
``embedding_w_q`` = W_e (E x V), b_e; ``encoder_w_q`` = per layer i2h W, i2h b, h2h W, h2h b, then the
unused projection Linear(H, 1) W, b; ``multimodal_w`` = W_q (C x 2LH), b_q, W_i (C x 4096), b_i,
W_out (A x C), b_out. Weights are row-major out x in, as in PyTorch. Lengths that do not fit the
options are refused with the option that is probably wrong (:func:`check_vector_sizes`).

Precision: float64 end to end, as the original (``torch.setdefaulttensortype('torch.DoubleTensor')``,
CNN included). Measured against the oracle fixtures: float64 matches the scores, the gradient into the
image feature and the raw Grad-CAM map within 7e-15 relative, with at most 2 PNG values per image off by
one level. float32 would be 1.7x faster on a full-size VGG-19 and stays within 3.3e-6 relative (a 30x
margin on the 1e-4 tolerance), but moves up to 27 PNG values per image by one level: a 2x margin on
the 2-level PNG tolerance, short of the 10x asked of a precision that differs from the original's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ...engine import Explanation, explain
from ...errors import GradCamError
from ...fileio import open_regular
from ...formats.caffe import load_caffe
from ...formats.torch7 import load_t7
from ...nets.graph import GraphNet
from .tokenize import MAX_QUESTION_LENGTH, UNK, encode_question, question_tokens, word_to_ix_from_ix_to_word

DTYPE = torch.float64
"""Precision of the whole VQA computation: the original's (see the module docstring)."""

IMAGE_FEATURE_SIZE = 4096
"""Width of the image feature (relu7) the multimodal net reads; the Lua script hard-coded it."""

NORMALIZE_EPS = 1e-10
"""``nn.Normalize(2)``'s eps, added to the sum of squares inside the square root."""

VECTOR_KEYS = ("embedding_w_q", "encoder_w_q", "multimodal_w")


# --------------------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class Vocabulary:
    """``data_prepro.json``: the question words and the answers.

    Attributes:
        word_to_ix: word -> 1-based index (``UNK`` included).
        n_words: V, the number of ``ix_to_word`` entries (the one-hot width).
        answers: ``answers[i]`` is ``ix_to_ans[str(i + 1)]``.
    """

    word_to_ix: dict[str, int]
    n_words: int
    answers: tuple[str, ...]

    def answer_index(self, answer: str) -> Optional[int]:
        """0-based index of ``answer`` (its first occurrence), or None if it is not an answer."""
        try:
            return self.answers.index(answer)
        except ValueError:
            return None


def load_vocabulary(path: Path) -> Vocabulary:
    """Read ``ix_to_word`` and ``ix_to_ans`` (1-based string keys) from ``data_prepro.json``."""
    try:
        with open_regular(path) as f:  # a folder, FIFO or device is refused, not read (or waited on)
            data = json.loads(f.read().decode("utf-8"))
    except OSError as err:
        raise GradCamError(f"{path}: cannot read: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GradCamError(f"{path}: not a valid JSON file ({err})") from None
    if not isinstance(data, dict):
        raise GradCamError(f"{path}: expected a JSON object with ix_to_word and ix_to_ans")
    words = _indexed_table(data, "ix_to_word", path)
    answers = _indexed_table(data, "ix_to_ans", path)
    word_to_ix = word_to_ix_from_ix_to_word(data["ix_to_word"])
    if UNK not in word_to_ix:
        raise GradCamError(f"{path}: ix_to_word has no {UNK!r} entry, needed for words outside the vocabulary")
    return Vocabulary(word_to_ix, len(words), tuple(answers))


def _indexed_table(data: dict, key: str, path: Path) -> list[str]:
    """``data[key]``, an object with keys "1".."n" and string values, as a list in index order."""
    table = data.get(key)
    if not isinstance(table, dict) or not table:
        raise GradCamError(f"{path}: {key!r} is missing or is not a non-empty object")
    expected = {str(i) for i in range(1, len(table) + 1)}
    if set(table) != expected:
        odd = sorted(set(table) - expected)[:3]
        raise GradCamError(f"{path}: {key!r} keys must be \"1\"..\"{len(table)}\"; found {odd}")
    values = [table[str(i)] for i in range(1, len(table) + 1)]
    if not all(isinstance(v, str) for v in values):
        raise GradCamError(f"{path}: {key!r} values must be strings")
    return values


# ----------------------------------------------------------------------------------- question model


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


class LSTMLayer(nn.Module):
    """One layer of VQA_LSTM_CNN's ``lstm_conventional``.

    z = i2h(x) + h2h(h) (two biases); the 4H sums are the gates in the order **i, f, o, g**
    (PyTorch's ``nn.LSTM`` uses i, f, g, o): c' = f * c + i * g, h' = o * tanh(c').
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.i2h = nn.Linear(input_size, 4 * hidden_size)
        self.h2h = nn.Linear(hidden_size, 4 * hidden_size)

    def forward(self, x: torch.Tensor, c: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, in), c and h (N, H) -> (c', h'), each (N, H)."""
        z = self.i2h(x) + self.h2h(h)
        size = h.shape[1]
        in_gate, forget_gate, out_gate = torch.sigmoid(z[:, : 3 * size]).chunk(3, dim=1)
        cell_input = torch.tanh(z[:, 3 * size :])
        c_next = forget_gate * c + in_gate * cell_input
        return c_next, out_gate * torch.tanh(c_next)


class QuestionEncoder(nn.Module):
    """``encoder_net_q``: an L-layer LSTM whose state is one vector [c1, h1, c2, h2, ...] (N, 2LH).

    Layer l > 1 reads layer l - 1's new h. ``proj`` (Linear(H, 1) on the top h) is the cell's second
    output, which the original never uses; it is kept because its weights are part of ``encoder_w_q``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.layers = nn.ModuleList(
            LSTMLayer(input_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers)
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

    def torch7_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Each flat vector's parameters in ``getParameters()`` order (nngraph's topological order:
        layer by layer i2h before h2h, then the projection; AxB's question Linear before its image one)."""
        encoder = [p for layer in self.encoder.layers for lin in (layer.i2h, layer.h2h) for p in (lin.weight, lin.bias)]
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


def _copy_flat(params: list[nn.Parameter], flat: np.ndarray) -> None:
    """Fill ``params`` with consecutive slices of ``flat`` (its length was checked)."""
    offset = 0
    for p in params:
        chunk = torch.from_numpy(flat[offset : offset + p.numel()])
        p.copy_(chunk.view(p.shape))
        offset += p.numel()


# ------------------------------------------------------------------------ vector sizes and diagnosis


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


def _solve(size: Callable[[int], int], n: int) -> Optional[int]:
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


# ------------------------------------------------------------------------------------- image branch


class L2Normalize(nn.Module):
    """``nn.Normalize(2)``: each row x (N, D) -> x / sqrt(sum x^2 + 1e-10). The eps sits inside the
    root (``F.normalize`` would divide by max(norm, eps) instead)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.pow(2).sum(dim=1, keepdim=True) + NORMALIZE_EPS)


class ImageFeatureNet(nn.Module):
    """The CNN without its classifier, plus L2 normalisation: (N, 3, S, S) BGR -> (N, 4096).

    Layer names and loadcaffe's 1-based indices resolve through the Caffe net, so
    ``explain(net, x, "relu5_4", ...)`` works as on a :class:`GraphNet`.
    """

    def __init__(self, cnn: GraphNet) -> None:
        super().__init__()
        self.cnn = cnn
        self.normalize = L2Normalize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.cnn(x))

    def resolve_layer(self, layer: str | int) -> tuple[nn.Module, nn.Module]:
        return self.cnn.resolve_layer(layer)


def load_image_net(
    proto_file: Path, model_file: Path, device: torch.device = torch.device("cpu"), dtype: torch.dtype = DTYPE
) -> ImageFeatureNet:
    """VGG-19 as the script trimmed it: ``cnn:remove()`` twice dropped prob and fc8.

    Our loader keeps the Softmax of V1 and V2 files alike, so a final Softmax is removed, then the
    final InnerProduct; what is left must end in a 4096-wide feature (fc7).
    """
    net = load_caffe(str(proto_file), str(model_file), device=device, dtype=dtype)
    if len(net) and isinstance(net.module_at(len(net)), nn.Softmax):
        net.remove_last()
    if not len(net) or not isinstance(net.module_at(len(net)), nn.Linear):
        last = net.names[-1] if len(net) else "nothing"
        raise GradCamError(
            f"{model_file}: expected the net to end with its classifier (fc8, then prob); it ends with {last}"
        )
    net.remove_last()
    widths = [m.out_features for m in net if isinstance(m, nn.Linear)]
    if not widths or widths[-1] != IMAGE_FEATURE_SIZE:
        found = f"{widths[-1]} features" if widths else "no fully connected layer"
        raise GradCamError(f"{model_file}: the VQA model reads a {IMAGE_FEATURE_SIZE}-wide fc7 feature; "
                           f"without fc8 this net gives {found}")
    return ImageFeatureNet(net)


# -------------------------------------------------------------------------------------- the target


class AnswerTarget:
    """The pre-softmax score of one answer for a fixed question: image feature f (N, 4096) -> (N,).

    Args:
        answer_net: the multimodal net.
        question: q (1 or N, 2LH), the question feature (fixed: no gradient flows into it).
        index: 0-based answer index, or None for each image's predicted answer.
    """

    def __init__(self, answer_net: AnswerNet, question: torch.Tensor, index: Optional[int]) -> None:
        self.answer_net, self.question, self.index = answer_net, question.detach(), index

    def __call__(self, feature: torch.Tensor) -> torch.Tensor:
        scores = self.answer_net(self.question, feature)
        if self.index is None:
            idx = scores.detach().argmax(dim=1)  # ties: the first maximum, as Torch's max
        else:
            idx = torch.full((scores.shape[0],), self.index, dtype=torch.long, device=scores.device)
        return scores.gather(1, idx[:, None])[:, 0]


def explain_answers(
    image_net: nn.Module, answer_net: AnswerNet, image: torch.Tensor, question: torch.Tensor,
    answers: Sequence[Optional[int]], layer: str | int,
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
    targets = [AnswerTarget(answer_net, question, index) for index in answers]
    expl = explain(image_net, image, layer, targets)
    with torch.no_grad():
        scores = answer_net(question, expl.scores)
    predicted = scores.argmax(dim=1).tolist()
    return expl, scores, [[p if index is None else index for index in answers] for p in predicted]
