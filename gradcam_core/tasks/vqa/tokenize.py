"""The VQA question tokenizer: what grad-cam's ``misc/prepro_ques.py`` computed.

The original turns the ``-question`` string into the LSTM's input like this::

    tokens = nltk.word_tokenize(str(question).lower())
    tokens = [t if t in vocabulary else "UNK" for t in tokens]
    ids    = 1-based vocabulary indices of the first 26 tokens, zero-padded to 26
    length = min(26, len(tokens))

This module does the same with nltk's own word tokenizer (no torch; nltk is imported only when a
question is tokenized, so that the classification and captioning programs never load it):

* :func:`word_tokenize` -- ``nltk.tokenize.destructive.NLTKWordTokenizer``, the "improved Treebank"
  tokenizer that ``nltk.word_tokenize`` runs on each sentence; it needs no NLTK data files. It equals
  ``nltk.word_tokenize(text, preserve_line=True)``.
* :func:`question_tokens` -- lower-case, tokenize, replace out-of-vocabulary tokens by ``UNK``, keep at
  most ``max_len``: the words the original printed, one per line.
* :func:`encode_question` -- those tokens as ``max_len`` 1-based indices, zero-padded, and the length.
* :func:`word_to_ix_from_ix_to_word` -- the inverse table the original built from
  ``data_prepro.json``'s ``ix_to_word``.

Sentence splitting (the one deliberate difference from the shipped script)
-------------------------------------------------------------------------
``nltk.word_tokenize`` first cuts the text into sentences with the Punkt model (``sent_tokenize``,
which needs the ``punkt_tab`` data files), then tokenizes each sentence. The only thing this changes is
the period at the end of a non-final sentence: with Punkt, ``"is it a dog. what color?"`` gives
``dog`` ``.``; tokenized as one line it gives ``dog.`` (which is then an unknown word). The oracle
fixtures were produced with ``preserve_line=True`` (no Punkt data could be installed), and **we do the
same: the whole question is one sentence, there is no sentence splitting.** Reasons:

1. It is exactly what the oracle computed, and it needs no data files at run time (nltk's tokenizer
   rules are code; Punkt's model is a download).
2. Punkt's decisions come from a trained model (its abbreviation list, collocations and word-case
   statistics from nltk_data), which we neither ship nor test against. An approximation ("split a
   period followed by a space and a word unless the word is an abbreviation, an initial or a number")
   would be a guess that fails silently in both directions: where its abbreviation list is shorter
   than Punkt's it would split one-sentence questions ("what is mr. smith holding?") that the original
   kept whole.
3. VQA questions are single sentences (the VQA_LSTM_CNN models were trained on one question each), and
   for a single sentence both ways give the same tokens. The rare multi-sentence input differs only in
   "word." staying one token (usually UNK) instead of becoming "word", ".".
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from ...errors import GradCamError

__all__ = [
    "MAX_QUESTION_LENGTH",
    "UNK",
    "encode_question",
    "question_tokens",
    "word_to_ix_from_ix_to_word",
    "word_tokenize",
]

#: Number of question positions the VQA_LSTM_CNN model reads (prepro_ques.py's ``max_length``).
MAX_QUESTION_LENGTH = 26

#: The vocabulary entry that stands for every word the vocabulary does not hold.
UNK = "UNK"


@functools.lru_cache(maxsize=1)
def _treebank_tokenizer() -> Any:
    """nltk's ``NLTKWordTokenizer``, imported on first use (importing nltk takes a while: it loads
    numpy, and SciPy where installed)."""
    from ...extras import require

    require("vqa")
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    """Split ``text`` into Treebank tokens, as ``nltk.word_tokenize(text, preserve_line=True)`` does.

    No lower-casing and no sentence splitting (see the module docstring). A double quote becomes two
    backticks when it opens a quotation and two apostrophes otherwise; clitics are split (``what's`` ->
    ``what`` ``'s``, ``can't`` -> ``ca`` ``n't``, ``cannot`` -> ``can`` ``not``); ``?``, ``!``, ``;``,
    brackets, ``$``, ``%`` and a text-final ``.`` are tokens; numbers such as ``3.5`` and ``1,000`` stay
    whole.

    >>> word_tokenize('is the "stop" sign red? it\\'s 3.5 m.')
    ['is', 'the', '``', 'stop', "''", 'sign', 'red', '?', 'it', "'s", '3.5', 'm', '.']
    """
    if not isinstance(text, str):
        raise TypeError(f"word_tokenize expects a str, got {type(text).__name__}")
    return list(_treebank_tokenizer().tokenize(text))


# --------------------------------------------------------------------------------------------------
# Question encoding (grad-cam misc/prepro_ques.py)
# --------------------------------------------------------------------------------------------------

def word_to_ix_from_ix_to_word(ix_to_word: Mapping[str, str]) -> dict[str, int]:
    """Invert ``data_prepro.json``'s ``ix_to_word`` (keys ``"1"``..``"V"``) into word -> 1-based index.

    As in the original (``{w: i for i, w in itow.items()}``), a word listed twice keeps its last index.
    """
    word_to_ix: dict[str, int] = {}
    for key, word in ix_to_word.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise GradCamError(
                f"question vocabulary: ix_to_word key {key!r} is not an integer index"
            ) from None
        if index < 1:
            raise GradCamError(f"question vocabulary: ix_to_word index {index} is not 1-based (must be >= 1)")
        word_to_ix[str(word)] = index
    return word_to_ix


def question_tokens(question: str, word_to_ix: Mapping[str, int], max_len: int = MAX_QUESTION_LENGTH) -> list[str]:
    """The question's tokens as the model sees them (and the original printed them).

    ``question`` is lower-cased with ``str.lower``, tokenized with :func:`word_tokenize`; tokens the
    vocabulary lacks become ``UNK``; at most ``max_len`` are kept.

    Raises :class:`GradCamError` if the vocabulary has no ``UNK`` entry or the question has no token.
    """
    if not isinstance(question, str):
        raise TypeError(f"the question must be a str, got {type(question).__name__}")
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    if UNK not in word_to_ix:
        raise GradCamError(
            f"question vocabulary has no {UNK!r} entry (ix_to_word in data_prepro.json); "
            "it is needed for words outside the vocabulary"
        )
    tokens = word_tokenize(question.lower())
    if not tokens:
        raise GradCamError(f"the question {question!r} is empty: it has no words to encode")
    return [token if token in word_to_ix else UNK for token in tokens[:max_len]]


def encode_question(
    question: str, word_to_ix: Mapping[str, int], max_len: int = MAX_QUESTION_LENGTH
) -> tuple[list[int], int]:
    """Encode a question as the VQA model's input: ``(ids, length)``.

    ``ids`` holds ``max_len`` ints: the 1-based vocabulary index of each of the first ``max_len`` tokens
    (``UNK``'s index for unknown words), then zeros. ``length = min(max_len, number of tokens)``.

    >>> vocab = {"what": 1, "animal": 2, "?": 8, "UNK": 40}
    >>> encode_question("What animal?", vocab, max_len=5)
    ([1, 2, 8, 0, 0], 3)

    Raises :class:`GradCamError` if the vocabulary has no ``UNK`` entry, or if the question is empty or
    only whitespace (the original crashed on it).
    """
    tokens = question_tokens(question, word_to_ix, max_len)
    ids = [int(word_to_ix[token]) for token in tokens]
    return ids + [0] * (max_len - len(ids)), len(ids)
