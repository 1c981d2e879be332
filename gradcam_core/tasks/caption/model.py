"""Captioning Grad-CAM on neuraltalk2 checkpoints: the pipeline behind ``captioning.py``
(``th captioning.lua``).

A neuraltalk2 checkpoint (``torch.save`` of a Lua table) holds ``protos.cnn`` (VGG-16 up to drop7, then
Linear(4096, E) and ReLU: the image feature), ``protos.lm`` (``nn.LanguageModel``: a word lookup table
and an LSTM ``core`` built with nngraph) and ``vocab`` (``"1".."V"`` -> word). The original:

1. preprocesses the image as every grad-cam script does (BGR, mean-subtracted) and feeds it to this
   CNN, although neuraltalk2 swapped conv1_1's filters to take RGB - reproduced, so maps match;
2. generates a caption by greedy decoding, printed, and used when ``-caption`` is '';
3. scores the caption: the sum over its words of log p(word_t | image, words_<t) (no END term);
4. explains that score: Grad-CAM at ``-layer`` of the CNN, guided backprop, guided Grad-CAM.

Token numbering is Lua's, 1-based: words are 1..V; the lookup table has a row V+1 for the START token
and the decoder a class V+1 for END (the same number, two meanings); 0 pads label columns.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...engine import Explanation, explain
from ...errors import GradCamError
from ...formats.torch7 import T7Object, T7Table, load_t7
from ...formats.torch7.modules import convert_module, sequential_to_net
from ...nets.graph import GraphNet

DEFAULT_CAPTION = "a dog and a cat posing for a picture"
UNK = "UNK"
_WORD = re.compile(r"[A-Za-z0-9]+")  # Lua's %w+ (C locale): runs of ASCII letters and digits


# --------------------------------------------------------------------------------------------------
# The language model


class LanguageModel(nn.Module):
    """neuraltalk2's ``nn.LanguageModel`` at evaluation time (dropout is the identity).

    One step of the core, for layers l = 1..L with x_1 the step's input and x_l = h'_{l-1}:
    z = i2h_l(x_l) + h2h_l(h_l) viewed as 4 gates of R, i = σ(z1), f = σ(z2), o = σ(z3), g = tanh(z4)
    (Torch's order, not PyTorch's i, f, g, o); c'_l = f c_l + i g; h'_l = o tanh(c'_l);
    log-probabilities = log_softmax(decoder(h'_L)) over V+1 classes.

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
        self.i2h, self.h2h, self.drops = nn.ModuleList(i2h), nn.ModuleList(h2h), nn.ModuleList(drops)
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
        return self.h2h[0].in_features

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
        return [(zeros, zeros)] * len(self.i2h)

    def step(self, x: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]]
             ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """One LSTM step: x (N, E), state -> (new state, log-probabilities (N, V+1))."""
        new_state = []
        for i2h, h2h, drop, (c, h) in zip(self.i2h, self.h2h, self.drops, state):
            z = (i2h(drop(x)) + h2h(h)).view(x.shape[0], 4, -1)
            in_gate, forget_gate, out_gate = torch.sigmoid(z[:, :3]).unbind(1)
            c = forget_gate * c + in_gate * torch.tanh(z[:, 3])
            h = out_gate * torch.tanh(c)
            new_state.append((c, h))
            x = h
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
        state, tokens, x = self.start_state(feature), [], feature
        for t in range(self.seq_length + 2):
            if t == 1:
                x = self.embed(self._start(feature.shape[0], feature.device))
            elif t >= 2:
                tokens.append(logp.argmax(dim=1) + 1)
                x = self.embed(tokens[-1])
            state, logp = self.step(x, state)
        return torch.stack(tokens)

    def _start(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.full((n,), self.vocab_size + 1, dtype=torch.long, device=device)

    def _check(self, feature: torch.Tensor) -> None:
        if feature.dim() != 2 or feature.shape[1] != self.input_size:
            raise GradCamError(
                f"the language model takes (N, {self.input_size}) image features; the CNN gives "
                f"{tuple(feature.shape)}"
            )


# --------------------------------------------------------------------------------------------------
# Vocabulary: caption <-> labels


class Vocabulary:
    """``checkpoint.vocab``: ``words`` maps 1-based indices to words."""

    def __init__(self, words: dict[int, str]) -> None:
        self.words = dict(words)
        self._index: dict[str, int] = {}
        for i in sorted(self.words):  # a word listed twice keeps its first index
            self._index.setdefault(self.words[i], i)

    def encode(self, caption: str, seq_length: int) -> list[int]:
        """``utils.sent_to_label``: the caption's ``%w+`` runs (ASCII letters and digits, case kept;
        anything else separates words and vanishes) -> 1-based indices; unknown words -> UNK."""
        index = self._index
        words = _WORD.findall(caption)
        if len(words) > seq_length:
            raise GradCamError(
                f"the caption has {len(words)} words; the captioning model takes at most {seq_length} "
                "(words are runs of letters and digits)"
            )
        unknown = [w for w in words if w not in index]
        if unknown and UNK not in index:
            raise GradCamError(
                f"the caption word {unknown[0]!r} is not in the vocabulary, which has no {UNK} entry to "
                "stand for unknown words"
            )
        return [index[w] if w in index else index[UNK] for w in words]

    def labels(self, caption: str, seq_length: int) -> torch.Tensor:
        """The caption as a (seq_length,) long label column, zero-padded."""
        out = torch.zeros(seq_length, dtype=torch.long)
        encoded = self.encode(caption, seq_length)
        out[: len(encoded)] = torch.tensor(encoded, dtype=torch.long)
        return out

    def decode(self, seq: torch.Tensor) -> list[str]:
        """``net_utils.decode_sequence``: (T, N) tokens -> N captions, each stopping at its first
        index that is not a word (END = V+1, or 0)."""
        captions = []
        for column in seq.t().tolist():
            words = []
            for ix in column:
                if ix not in self.words:
                    break
                words.append(self.words[ix])
            captions.append(" ".join(words))
        return captions


# --------------------------------------------------------------------------------------------------
# The target


def caption_score(lm: LanguageModel, feature: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ_t log p(word_t | image, words_<t) per image: feature (N, E), labels (T, N) -> (N,).

    Exactly the entries ``utils.create_grad_input_lm`` seeded with 1: for every non-zero label t
    (1-based), row t+1 of the log-probabilities (step 1 consumed the image, step 2 START, so row t+1
    predicts word t) at class labels[t]. Nothing for END after the last word: the original seeded no
    such entry.
    """
    logp = lm(feature, labels)  # (T+2, N, V+1)
    picked = logp[1 : labels.shape[0] + 1].gather(2, (labels - 1).clamp_min(0)[..., None])[..., 0]  # (T, N)
    return torch.where(labels != 0, picked, torch.zeros_like(picked)).sum(dim=0)


class CaptionTarget:
    """A target for :func:`~gradcam_core.engine.explain` on the captioning CNN: maps the image features
    (N, E) to each image's :func:`caption_score` for ``caption``, or, when ``caption`` is None, for the
    caption greedy decoding generates for that image (as ``-caption ''`` did).

    A caption that does not fit (too many words, unknown word without UNK) raises here, before any
    work is done.
    """

    def __init__(self, lm: LanguageModel, vocab: Vocabulary, caption: Optional[str]) -> None:
        self.lm, self.vocab, self.caption = lm, vocab, caption
        self.labels = None if caption is None else vocab.labels(caption, lm.seq_length)  # (T,)

    def label_columns(self, feature: torch.Tensor) -> torch.Tensor:
        """(T, N) labels for the N images of ``feature`` (N, E)."""
        if self.labels is not None:
            return self.labels.to(feature.device)[:, None].expand(-1, feature.shape[0])
        captions = generate(self.lm, self.vocab, feature)
        return torch.stack([self.vocab.labels(c, self.lm.seq_length) for c in captions], dim=1).to(feature.device)

    def __call__(self, feature: torch.Tensor) -> torch.Tensor:
        """(N, E) -> (N,)."""
        return caption_score(self.lm, feature, self.label_columns(feature))


def generate(lm: LanguageModel, vocab: Vocabulary, feature: torch.Tensor) -> list[str]:
    """The greedy caption of each image feature (N, E)."""
    return vocab.decode(lm.sample(feature.detach()))


# --------------------------------------------------------------------------------------------------
# Checkpoint loading


@dataclass
class Captioner:
    """A loaded neuraltalk2 checkpoint: the CNN (image -> (N, E) features), the language model and
    the vocabulary."""

    cnn: GraphNet
    lm: LanguageModel
    vocab: Vocabulary

    def target(self, caption: Optional[str]) -> CaptionTarget:
        """The explanation target for ``caption`` (None = each image's generated caption)."""
        return CaptionTarget(self.lm, self.vocab, caption)


def load_checkpoint(path: str | Path, device: torch.device = torch.device("cpu"),
                    dtype: torch.dtype = torch.float32) -> Captioner:
    """Load a neuraltalk2 checkpoint (GPU or CPU version: cudnn or nn modules, Cuda or Float storages).

    Anything that is not one raises :class:`GradCamError` saying what the file holds instead.
    """
    try:
        root = load_t7(path)
    except GradCamError as err:
        detail = str(err).removeprefix(f"{path}: ")
        raise GradCamError(
            f"{path} is not a neuraltalk2 checkpoint (not a readable Torch7 file: {detail})"
        ) from None
    _check_layout(root, str(path))
    protos = root["protos"]
    try:
        cnn = sequential_to_net(protos["cnn"], "protos.cnn", dtype)
        lm = _language_model(protos["lm"], dtype)
        vocab = _vocabulary(root["vocab"], lm.vocab_size)
    except GradCamError as err:
        raise GradCamError(f"{path}: {err}") from None
    return Captioner(cnn.to(device), lm.to(device), vocab)


def _check_layout(root: Any, path: str) -> None:
    """A neuraltalk2 checkpoint is a table with protos.cnn, protos.lm (nn.LanguageModel) and vocab."""
    found = None
    if not isinstance(root, T7Table):
        found = f"it holds {_kind(root)}"
    elif not isinstance(root.get("protos"), T7Table) or not isinstance(root.get("vocab"), T7Table):
        keys = sorted(str(k) for k in root)
        shown = ", ".join(keys[:12] + ["..."] * (len(keys) > 12))
        found = f"it holds a table with keys {shown}" if keys else "it holds an empty table"
    else:
        protos = root["protos"]
        lm, cnn = protos.get("lm"), protos.get("cnn")
        if not (isinstance(lm, T7Object) and lm.typename == "nn.LanguageModel"):
            found = f"its protos.lm is {_kind(lm)}"
        elif not isinstance(cnn, T7Object):
            found = f"its protos.cnn is {_kind(cnn)}"
    if found:
        raise GradCamError(
            f"{path} is not a neuraltalk2 checkpoint (a table with protos.cnn, protos.lm of class "
            f"nn.LanguageModel and vocab): {found}"
        )


def _kind(value: Any) -> str:
    """What a value read from a .t7 file is, for messages ("a table", "a nn.Sequential", ...)."""
    if value is None:
        return "nothing"
    if isinstance(value, (T7Object, T7Table)):
        return f"a {value.typename}" if isinstance(value, T7Object) else "a table"
    if hasattr(value, "shape"):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, (bool, int, float)):
        return f"the value {value}"
    return type(value).__name__


MAX_SEQ_LENGTH = 1000  # neuraltalk2 trains with 16; the sampler runs seq_length + 2 steps


def _positive_int(lm: T7Object, name: str, most: Optional[int] = None) -> int:
    value = lm.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GradCamError(f"protos.lm: field '{name}' should be a positive whole number, is {value!r}")
    if most is not None and value > most:  # not tied to any weight: a hostile file could ask for 10^9 steps
        raise GradCamError(f"protos.lm: field '{name}' is {value}; a captioning model takes at most {most}")
    return value


def _core_modules(core: Any) -> dict[str, T7Object]:
    """The modules of the LSTM core's graph by their nngraph annotation name (i2h_1, decoder, ...)."""
    nodes = core.get("forwardnodes") if isinstance(core, T7Object) and core.typename == "nn.gModule" else None
    if not isinstance(nodes, T7Table):
        raise GradCamError(f"protos.lm.core should be an nn.gModule (nngraph), is {_kind(core)}")
    named = {}
    for node in nodes.values():
        data = node.get("data") if isinstance(node, T7Object) else None
        annotations = data.get("annotations") if isinstance(data, T7Table) else None
        name = annotations.get("name") if isinstance(annotations, T7Table) else None
        if isinstance(name, str) and isinstance(data.get("module"), T7Object):
            named[name] = data["module"]
    return named


def _language_model(lm: T7Object, dtype: torch.dtype) -> LanguageModel:
    """``protos.lm`` -> :class:`LanguageModel`, its Linear layers found by annotation name."""
    vocab_size, encoding, rnn = (_positive_int(lm, k) for k in ("vocab_size", "input_encoding_size", "rnn_size"))
    layers, seq_length = _positive_int(lm, "num_layers"), _positive_int(lm, "seq_length", MAX_SEQ_LENGTH)
    named = _core_modules(lm.get("core"))

    def linear(name: str, n_in: int, n_out: int) -> nn.Linear:
        if name not in named:
            found = ", ".join(sorted(named)) or "none"
            raise GradCamError(f"protos.lm.core has no module annotated '{name}' (annotated: {found})")
        module = convert_module(named[name], f"protos.lm.core '{name}'", dtype)
        if not isinstance(module, nn.Linear) or (module.in_features, module.out_features) != (n_in, n_out):
            raise GradCamError(f"protos.lm.core '{name}' should be Linear({n_in} -> {n_out}), is {module}")
        return module

    def dropout(name: str) -> nn.Module:  # absent when the model was trained without dropout
        return convert_module(named[name], f"protos.lm.core '{name}'", dtype) if name in named else nn.Identity()

    numbers = range(1, layers + 1)
    i2h = [linear(f"i2h_{k}", encoding if k == 1 else rnn, 4 * rnn) for k in numbers]
    h2h = [linear(f"h2h_{k}", rnn, 4 * rnn) for k in numbers]
    drops = [nn.Identity()] + [dropout(f"drop_{k}") for k in numbers[1:]]
    table = lm.get("lookup_table")
    weight = table.get("weight") if isinstance(table, T7Object) else None
    if getattr(weight, "shape", None) != (vocab_size + 1, encoding):
        raise GradCamError(
            f"protos.lm.lookup_table should hold a ({vocab_size + 1}, {encoding}) weight, has {_kind(weight)}"
        )
    return LanguageModel(torch.from_numpy(weight).to(dtype), i2h, h2h, drops, dropout("drop_final"),
                         linear("decoder", rnn, vocab_size + 1), seq_length)


def _vocabulary(vocab: T7Table, vocab_size: int) -> Vocabulary:
    """``checkpoint.vocab`` ({"1": word, ...}) -> :class:`Vocabulary`, checked against the model."""
    words = {}
    for key, word in vocab.items():
        ix = int(key) if isinstance(key, str) and key.isdigit() and str(int(key)) == key else None
        if ix is None or not 1 <= ix <= vocab_size or not isinstance(word, str):
            shown = repr(word) if isinstance(word, str) else _kind(word)
            raise GradCamError(f"vocab should map '1'..'{vocab_size}' to words; it maps {key!r} to {shown}")
        words[ix] = word
    return Vocabulary(words)


def explain_captions(model: Captioner, image: torch.Tensor, layer: str | int,
                     captions: Sequence[Optional[str]]) -> tuple[Explanation, list[str]]:
    """Explain K captions (None = each image's generated caption) for N images from ONE CNN forward.

    Args:
        image: (N, 3, S, S) preprocessed (BGR, mean-subtracted).
    Returns:
        the explanation (``scores`` = the (N, E) image features) and each image's generated caption.
    """
    targets = [model.target(c) for c in captions]  # a caption that does not fit fails here
    expl = explain(model.cnn, image, layer, targets)
    return expl, generate(model.lm, model.vocab, expl.scores)
