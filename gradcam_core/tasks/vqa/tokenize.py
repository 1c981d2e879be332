"""The VQA question tokenizer: what grad-cam's ``misc/prepro_ques.py`` computed, without NLTK.

The original turns the ``-question`` string into the LSTM's input like this::

    tokens = nltk.word_tokenize(str(question).lower())
    tokens = [t if t in vocabulary else "UNK" for t in tokens]
    ids    = 1-based vocabulary indices of the first 26 tokens, zero-padded to 26
    length = min(26, len(tokens))

This module does the same in pure Python (``re`` and ``unicodedata`` only; no torch, no nltk, no
NLTK data files):

* :func:`word_tokenize` -- NLTK's ``NLTKWordTokenizer`` (the "improved Treebank" tokenizer that
  ``nltk.word_tokenize`` runs on each sentence), re-implemented rule by rule. It equals
  ``nltk.tokenize.word_tokenize(text, preserve_line=True)`` of nltk 3.10.4.
* :func:`question_tokens` -- lower-case, tokenize, replace out-of-vocabulary tokens by ``UNK``, keep at
  most ``max_len``: the words the original printed, one per line.
* :func:`encode_question` -- those tokens as ``max_len`` 1-based indices, zero-padded, and the length.
* :func:`word_to_ix_from_ix_to_word` -- the inverse table the original built from
  ``data_prepro.json``'s ``ix_to_word``.

Sentence splitting (the one deliberate difference from the shipped script)
-------------------------------------------------------------------------
``nltk.word_tokenize`` first cuts the text into sentences with the Punkt model, then tokenizes each
sentence. The only thing this changes is the period at the end of a non-final sentence: with Punkt,
``"is it a dog. what color?"`` gives ``dog`` ``.``; tokenized as one line it gives ``dog.`` (which is
then an unknown word). The oracle fixtures were produced with ``preserve_line=True`` (no Punkt data could
be installed), and **we do the same: the whole question is one sentence, there is no sentence
splitting.** Reasons:

1. It is exactly what the oracle computed, so every behaviour of this module can be checked against
   nltk itself (the tests do, over hundreds of questions and thousands of generated strings).
2. Punkt's decisions come from a trained model (its abbreviation list, collocations and word-case
   statistics from nltk_data), which we neither have nor can test against. An approximation
   ("split a period followed by a space and a word unless the word is an abbreviation, an initial or a
   number") would be a guess that fails silently in both directions: where its abbreviation list is
   shorter than Punkt's it would split one-sentence questions ("what is mr. smith holding?") that the
   original kept whole.
3. VQA questions are single sentences (the VQA_LSTM_CNN models were trained on one question each), and
   for a single sentence both ways give the same tokens. The rare multi-sentence input differs only in
   "word." staying one token (usually UNK) instead of becoming "word", ".".

Exactness
---------
nltk 3.10.4 compiles most of the tokenizer's patterns with the third-party ``regex`` engine (via
``nltk.redos``), whose ``\\s`` and ``\\w`` differ from Python's ``re``: ``regex`` does not count
U+001C..U+001F as whitespace, and its word characters are Unicode's (letters, marks, decimal digits,
letter numbers, connector punctuation, ZWNJ/ZWJ, circled/squared letters) -- not ``re``'s (which adds
``²``, ``½`` and other numerals and omits combining marks). The MacIntyre contraction patterns are
compiled with ``re``. We use each engine's definition where nltk does, so the result is identical for
every character that Python's Unicode database (14.0 on Python 3.11) assigns. Characters assigned only
later (Unicode 15-17 scripts, which ``regex`` already knows) may differ, and only where one of them
touches an apostrophe or follows a ``:`` / ``,``.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Callable, Mapping, Sequence, Union

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


# --------------------------------------------------------------------------------------------------
# How nltk's regex engine classifies characters
# --------------------------------------------------------------------------------------------------

# Whitespace as the ``regex`` engine sees it (Unicode White_Space). Python's ``re`` would also take
# U+001C..U+001F. Written for use inside a character class.
_WS = r"\t\n\x0b\x0c\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

# Symbols (category So) that Unicode counts as Alphabetic and ``regex`` therefore as word characters:
# circled, squared, negative circled and negative squared Latin letters.
_ALPHABETIC_SYMBOLS = ((0x24B6, 0x24E9), (0x1F130, 0x1F149), (0x1F150, 0x1F169), (0x1F170, 0x1F189))


def _is_word_char(ch: str) -> bool:
    """True when the ``regex`` engine's ``\\w`` matches ``ch`` (one character)."""
    category = unicodedata.category(ch)
    if category[0] in "LM" or category in ("Nd", "Nl", "Pc"):
        return True
    code = ord(ch)
    if code in (0x200C, 0x200D):  # zero-width non-joiner / joiner (Join_Control)
        return True
    return any(lo <= code <= hi for lo, hi in _ALPHABETIC_SYMBOLS)


# --------------------------------------------------------------------------------------------------
# The tokenizer's rules, in the order they are applied
# --------------------------------------------------------------------------------------------------

_Replacement = Union[str, Callable[["re.Match[str]"], str]]
_Rule = tuple["re.Pattern[str]", _Replacement]

#: Pad the whole match with a space on each side.
_PAD = r" \g<0> "


def _rule(pattern: str, replacement: _Replacement, flags: int = 0) -> _Rule:
    """A rewrite rule; patterns are written in verbose mode (spaces are ``\\x20``)."""
    return re.compile(pattern, flags | re.VERBOSE), replacement


# A clitic that may follow an apostrophe ('re 've 'll 'm 't 's 'd 'n), in any letter case.
_CLITIC = re.compile(r"re|ve|ll|m|t|s|d|n", re.IGNORECASE)


def _open_single_quote(match: "re.Match[str]") -> str:
    """An apostrophe that starts a word is an opening quote: ``'hello`` -> ``'`` ``hello``.

    It is left alone when it follows a word character (``o'clock``, ``dog's``), when no word character
    follows it, or when what follows is a whole clitic (``'s``, ``'re``, ``'ll``, ...: the clitic rules
    below split those).
    """
    text, at = match.string, match.start()
    after = at + 1
    if at > 0 and _is_word_char(text[at - 1]):
        return "'"
    if after == len(text) or not _is_word_char(text[after]):
        return "'"
    clitic = _CLITIC.match(text, after)
    if clitic and (clitic.end() == len(text) or not _is_word_char(text[clitic.end()])):
        return "'"
    return "' "


_OPENING_QUOTES: list[_Rule] = [
    # Guillemet, curly and low-9 opening quotes, and runs of backticks, stand alone.
    _rule(r"[«“‘„] | `+", _PAD),
    # A straight double quote at the very start of the text is an opening quote, written ``.
    _rule(r'\A "', "``"),
    # Every `` is a token (this also splits a run of four backticks into two).
    _rule(r"``", _PAD),
    # A " or '' right after a space or an opening bracket opens a quotation: ``.
    _rule(r"""(?P<before>[\x20(\[{<]) (?:"|'')""", r"\g<before> `` "),
    # An apostrophe at the start of a word (see _open_single_quote).
    (re.compile(r"'"), _open_single_quote),
]

# Closing brackets and quotes that may stand between a text-final period and the end of the text.
_CLOSERS = r"\])}>\"'"
_CURLY_CLOSERS = r"»”’"

_PUNCTUATION: list[_Rule] = [
    # The period that ends the text -- possibly followed by closing quotes/brackets and spaces, then
    # only whitespace -- becomes a token, unless another period precedes it ("..." is handled below).
    # The run after the period is taken whole (a lookahead captures it, a backreference consumes it),
    # so the engine never re-splits a long run of spaces between it and the trailing whitespace.
    _rule(
        r"(?P<before>[^.]) \."
        r"(?=(?P<closing>[" + _CLOSERS + _CURLY_CLOSERS + r"\x20]*))(?P=closing)"
        r"[" + _WS + r"]* $",
        r"\g<before> . \g<closing> ",
    ),
    # A colon or comma becomes a token unless a digit follows it (1,000 and 10:30 stay whole). The
    # character after it is consumed, so in ",," only the first comma is split off.
    _rule(r"(?P<mark>[:,]) (?P<next>[^\d])", r" \g<mark> \g<next>"),
    # ... and also when it ends the text.
    _rule(r"(?P<mark>[:,]) $", r" \g<mark> "),
    # Two or more periods (an ellipsis) form one token.
    _rule(r"\.{2,}", _PAD),
    # These symbols, figure/en/em dashes and the horizontal bar are always tokens.
    _rule(r"[;@\#$%&\u2012-\u2015]", _PAD),
    # The plain Treebank form of the final-period rule (straight closers only, no spaces). After the
    # rule above it only adds spaces; applied anyway, in its place in the sequence.
    _rule(
        r"(?P<before>[^.]) \. (?P<closing>[" + _CLOSERS + r"]*) [" + _WS + r"]* $",
        r"\g<before> .\g<closing> ",
    ),
    # Question and exclamation marks.
    _rule(r"[?!]", _PAD),
    # An apostrophe followed by a space (end of a quotation, plural possessive "dogs' ") leaves the
    # word before it, unless that is another apostrophe.
    _rule(r"(?P<before>[^']) '\x20", r"\g<before> ' "),
    # Asterisks, then parentheses, square/curly/angle brackets.
    _rule(r"[*\]\[(){}<>]", _PAD),
    # A double hyphen is a dash.
    _rule(r"--", _PAD),
]

_CLOSING_QUOTES: list[_Rule] = [
    # Guillemet and curly closing quotes stand alone.
    _rule(r"[" + _CURLY_CLOSERS + r"]", _PAD),
    # Straight closing quotes, '' and every " not yet turned into ``, are written ''.
    _rule(r"''", " '' "),
    _rule(r'"', " '' "),
    # Any run of whitespace becomes one space (the clitic rules look for a space after the clitic).
    _rule(r"[" + _WS + r"]+", " "),
    # Clitics at the end of a word: 's 'm 'd (either case) and a lone apostrophe (possessive plural).
    _rule(r"(?P<word>[^'\x20]) (?P<clitic>'[sSmMdD]?) \x20", r"\g<word> \g<clitic> "),
    # 'll 're 've (all lower or all upper case) and n't / N'T: "can't" -> "ca" "n't".
    _rule(
        r"(?P<word>[^'\x20]) (?P<clitic>'(?:ll|LL|re|RE|ve|VE) | n't | N'T) \x20",
        r"\g<word> \g<clitic> ",
    ),
]

# Words written as one that the Treebank convention splits in two (Robert MacIntyre's list), in any
# letter case: cannot -> can not, gimme -> gim me, ... These use Python's own ``re`` (as nltk does).
_FUSED_PAIRS = (
    ("can", "not"),
    ("d", "'ye"),
    ("gim", "me"),
    ("gon", "na"),
    ("got", "ta"),
    ("lem", "me"),
    ("more", "'n"),
)
_FUSED_WORDS: list["re.Pattern[str]"] = [
    *(re.compile(r"\b(%s)(%s)\b" % pair, re.IGNORECASE) for pair in _FUSED_PAIRS),
    # "wanna" only when whitespace follows it.
    re.compile(r"\b(wan)(na)(?=\s)", re.IGNORECASE),
    # Archaic 'tis / 'twas after a space (rarely reached: an opening "'" is usually split off first).
    re.compile(r"\x20('t)(is)\b", re.IGNORECASE),
    re.compile(r"\x20('t)(was)\b", re.IGNORECASE),
]


def _apply(rules: Sequence[_Rule], text: str) -> str:
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text


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
    text = _apply(_OPENING_QUOTES, text)
    text = _apply(_PUNCTUATION, text)
    # Surround the text with spaces so that the clitic rules see a space after the last word.
    text = _apply(_CLOSING_QUOTES, f" {text} ")
    for pattern in _FUSED_WORDS:
        text = pattern.sub(r" \1 \2 ", text)
    return text.split()


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
