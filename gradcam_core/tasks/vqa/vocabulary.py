"""``data_prepro.json``: the question words and the answers of a VQA_LSTM_CNN model."""
from __future__ import annotations

import json
from pathlib import Path

from ...errors import GradCamError
from ...fileio import open_regular
from ..vocabulary import UNK, Vocabulary
from .tokenize import word_to_ix_from_ix_to_word

__all__ = ["Vocabulary", "load_vocabulary"]


def load_vocabulary(path: Path) -> Vocabulary:
    """Read ``ix_to_word`` and ``ix_to_ans`` (1-based string keys) from ``data_prepro.json``.

    The words map to their ids as prepro_ques.py inverted ``ix_to_word`` (a repeated word keeps its
    last id in file order); the answers are in id order.
    """
    try:
        with open_regular(path) as f:  # a folder, FIFO or device is refused, not read (or waited on)
            text = f.read().decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is skipped
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                          parse_int=_bounded_int)
    except OSError as err:
        raise GradCamError(f"{path}: cannot read: {err.strerror or err}") from None
    except RecursionError:
        raise GradCamError(f"{path}: not a valid vocabulary file (its JSON is nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError, and the numbers refused below
        raise GradCamError(f"{path}: not a valid JSON file ({_first_line(err)})") from None
    if not isinstance(data, dict):
        raise GradCamError(f"{path}: expected a JSON object with ix_to_word and ix_to_ans")
    words = _indexed_table(data, "ix_to_word", path)
    answers = _indexed_table(data, "ix_to_ans", path)
    word_to_ix = word_to_ix_from_ix_to_word(data["ix_to_word"])
    if UNK not in word_to_ix:
        raise GradCamError(f"{path}: ix_to_word has no {UNK!r} entry, needed for words outside the vocabulary")
    return Vocabulary(dict(enumerate(words, start=1)), answers, word_to_ix=word_to_ix)


def _refuse_constant(name: str) -> float:
    """``NaN``, ``Infinity``: not JSON, though Python's reader takes them."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent, refused where it does not fit a float (``1e400``, or
    100,000 digits): Python would make it infinity."""
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is too large for a float")
    return number


MAX_DIGITS = 100
"""A whole number longer than this is refused (no vocabulary needs one; Python's int() would take
quadratic time, and refuses 4300 digits with advice about its own settings)."""


def _bounded_int(text: str) -> int:
    if len(text) > MAX_DIGITS:
        raise ValueError(f"a number of {len(text)} digits, more than {MAX_DIGITS}")
    return int(text)


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())[:200]


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
