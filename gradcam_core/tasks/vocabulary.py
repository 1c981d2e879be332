"""The word table of a model: 1-based word ids <-> words, the ``UNK`` word, and a VQA model's answers.

One class for both tasks: VQA_LSTM_CNN's ``data_prepro.json`` (``ix_to_word`` for the question words,
``ix_to_ans`` for the answers) and a neuraltalk2 checkpoint's ``vocab`` (ids -> words; captions are
encoded with it and generated ones decoded). Ids are Lua's, 1-based: 0 is never a word.

No torch here (the VQA tokenizer may import it without torch).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..errors import GradCamError

UNK = "UNK"
"""The word that stands for every word outside the vocabulary (both tasks' models were trained with it)."""


class Vocabulary:
    """A model's words and, for VQA, its answers.

    Args:
        words: 1-based id -> word (``ix_to_word``, ``checkpoint.vocab``).
        answers: the answers, ``answers[i]`` being answer i + 1 (``ix_to_ans``); empty for captioning.
        word_to_ix: word -> id, when the file's reader inverts ``words`` its own way (VQA's
            prepro_ques.py kept a repeated word's last id); by default a repeated word keeps its
            lowest id.
    """

    def __init__(self, words: Mapping[int, str], answers: Sequence[str] = (), *,
                 word_to_ix: Mapping[str, int] | None = None) -> None:
        self.words: dict[int, str] = dict(words)
        self.answers: tuple[str, ...] = tuple(answers)
        if word_to_ix is None:
            index: dict[str, int] = {}
            for i in sorted(self.words):
                index.setdefault(self.words[i], i)
            word_to_ix = index
        self.word_to_ix: dict[str, int] = dict(word_to_ix)

    def __repr__(self) -> str:
        return f"Vocabulary({self.n_words} words, {len(self.answers)} answers)"

    @property
    def n_words(self) -> int:
        """V, the number of words (the width of a one-hot word)."""
        return len(self.words)

    def ids(self, tokens: Sequence[str], what: str = "word") -> list[int]:
        """The 1-based id of each token, ``UNK``'s for a token the vocabulary lacks.

        Raises GradCamError for an unknown token when there is no ``UNK`` (``what`` names the tokens
        in the message, e.g. "caption word").
        """
        index = self.word_to_ix
        unknown = [t for t in tokens if t not in index]
        if unknown and UNK not in index:
            raise GradCamError(
                f"the {what} {unknown[0]!r} is not in the vocabulary, which has no {UNK} entry to stand for "
                "unknown words"
            )
        return [index[t] if t in index else index[UNK] for t in tokens]

    def decode(self, sequences: Iterable[Sequence[int]]) -> list[str]:
        """``net_utils.decode_sequence``: each sequence of ids -> its words joined by spaces, stopping at
        its first id that is not a word (END = V+1, or 0)."""
        texts = []
        for sequence in sequences:
            words = []
            for ix in sequence:
                if ix not in self.words:
                    break
                words.append(self.words[ix])
            texts.append(" ".join(words))
        return texts

    def answer_index(self, answer: str) -> int | None:
        """0-based index of ``answer`` (its first occurrence), or None if it is not an answer."""
        try:
            return self.answers.index(answer)
        except ValueError:
            return None
