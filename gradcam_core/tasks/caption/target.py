"""What captioning explains: the log-probability of a caption given the image feature; the caption
<-> label rules of neuraltalk2 (``utils.sent_to_label``, ``net_utils.decode_sequence``)."""
from __future__ import annotations

import copy
import re
from collections.abc import Sequence

import torch

from ...engine import Explanation, explain
from ...errors import GradCamError
from ..vocabulary import Vocabulary
from .model import Captioner, LanguageModel

DEFAULT_CAPTION = "a dog and a cat posing for a picture"
"""The caption captioning.lua explained when given no ``-caption``."""

_WORD = re.compile(r"[A-Za-z0-9]+")  # Lua's %w+ (C locale): runs of ASCII letters and digits


def encode_caption(vocab: Vocabulary, caption: str, seq_length: int) -> list[int]:
    """``utils.sent_to_label``: the caption's ``%w+`` runs (ASCII letters and digits, case kept;
    anything else separates words and vanishes) -> 1-based ids; unknown words -> UNK's."""
    words = _WORD.findall(caption)
    if len(words) > seq_length:
        raise GradCamError(
            f"the caption has {len(words)} words; the captioning model takes at most {seq_length} "
            "(words are runs of letters and digits)"
        )
    return vocab.ids(words, "caption word")


def caption_labels(vocab: Vocabulary, caption: str, seq_length: int) -> torch.Tensor:
    """The caption as a (seq_length,) long label column, zero-padded."""
    out = torch.zeros(seq_length, dtype=torch.long)
    encoded = encode_caption(vocab, caption, seq_length)
    out[: len(encoded)] = torch.tensor(encoded, dtype=torch.long)
    return out


def decode_captions(vocab: Vocabulary, seq: torch.Tensor) -> list[str]:
    """(T, N) tokens -> N captions, each stopping at its first token that is not a word (END = V+1, or 0)."""
    return vocab.decode(seq.t().tolist())


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

    def __init__(self, model: Captioner, caption: str | None) -> None:
        self.lm, self.vocab, self.caption = model.lm, model.vocab, caption
        self.labels = None if caption is None else caption_labels(self.vocab, caption, self.lm.seq_length)  # (T,)

    def label_columns(self, feature: torch.Tensor) -> torch.Tensor:
        """(T, N) labels for the N images of ``feature`` (N, E)."""
        if self.labels is not None:
            return self.labels.to(feature.device)[:, None].expand(-1, feature.shape[0])
        captions = generate(self.lm, self.vocab, feature)
        seq_length = self.lm.seq_length
        return torch.stack([caption_labels(self.vocab, c, seq_length) for c in captions], dim=1).to(feature.device)

    def __call__(self, feature: torch.Tensor) -> torch.Tensor:
        """(N, E) -> (N,)."""
        return caption_score(self.lm, feature, self.label_columns(feature))

    def pin(self, feature: torch.Tensor, n: int) -> CaptionTarget:
        """This target for B perturbed copies of image ``n`` of ``feature`` (N, E): a given caption
        as it is; for the generated caption, the caption generated for that image unperturbed."""
        if self.labels is not None:
            return self
        pinned = copy.copy(self)
        pinned.labels = self.label_columns(feature[n : n + 1])[:, 0].cpu()  # (T,)
        return pinned


def generate(lm: LanguageModel, vocab: Vocabulary, feature: torch.Tensor) -> list[str]:
    """The greedy caption of each image feature (N, E)."""
    return decode_captions(vocab, lm.sample(feature.detach()))


def explain_captions(model: Captioner, image: torch.Tensor, layer: str | int,
                     captions: Sequence[str | None]) -> tuple[Explanation, list[str]]:
    """Explain K captions (None = each image's generated caption) for N images from ONE CNN forward.

    Args:
        image: (N, 3, S, S) preprocessed (BGR, mean-subtracted).
    Returns:
        the explanation (``scores`` = the (N, E) image features) and each image's generated caption.
    """
    targets = [CaptionTarget(model, c) for c in captions]  # a caption that does not fit fails here
    expl = explain(model.cnn, image, layer, targets)
    return expl, generate(model.lm, model.vocab, expl.scores)
