"""gradcam_core.tokenize: the VQA question tokenizer and encoder.

* word_tokenize (nltk's NLTKWordTokenizer) equals nltk 3.10.4's ``word_tokenize(text, preserve_line=True)``
  (what the oracle ran): on the questions of tests/data/vqa_questions.txt, on the inline edge cases below,
  and on generated text (hypothesis); the oracle's printed tokens pin the one-sentence decision.
* encode_question reproduces the oracle's printed tokens and ids (tests/data/cases/vqa_*/stdout.txt) with
  the fixture vocabulary, and grad-cam's prepro_ques.py logic on generated text.
* errors: vocabulary without UNK, empty question, nltk missing; nltk is imported only to tokenize.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradcam_core.errors import GradCamError
from gradcam_core.tasks.vqa.tokenize import (
    MAX_QUESTION_LENGTH,
    UNK,
    encode_question,
    question_tokens,
    word_to_ix_from_ix_to_word,
    word_tokenize,
)

DATA = Path(__file__).resolve().parent / "data"
CASES = DATA / "cases"
QUESTIONS_FILE = DATA / "vqa_questions.txt"
VOCAB_FILE = DATA / "VQA_LSTM_CNN" / "data_prepro.json"

REFERENCE_NLTK = "3.10.4"


def _nltk_reference() -> Callable[[str], list[str]]:
    """nltk's word_tokenize on one line (no Punkt), or skip the test when nltk 3.10.4 is missing."""
    nltk = pytest.importorskip("nltk")
    if nltk.__version__ != REFERENCE_NLTK:
        pytest.skip(f"the reference is nltk {REFERENCE_NLTK}, found {nltk.__version__}")
    from nltk.tokenize import word_tokenize as nltk_word_tokenize

    return lambda text: nltk_word_tokenize(text, preserve_line=True)


def _file_questions() -> list[str]:
    lines = QUESTIONS_FILE.read_text(encoding="utf-8").split("\n")
    return [line for line in lines if line.strip() and not line.startswith("#")]


# Questions a text file cannot hold verbatim, or that are better visible here: whitespace of every kind,
# leading/trailing spaces, rare code points, and the corner cases of individual rules.
INLINE_QUESTIONS = [
    "  What animal?",
    "What animal?   ",
    "What   animal    is\tthis?",
    "\tWhat color is the car?\t",
    "What color\nis the car?",
    "What color is the car?\n",
    "Is it a dog.\n",
    "Is it a dog.\n\n",
    "Is it a dog. \t ",
    "Is it a dog.\r\n",
    "Is this a dog.) ",
    'Is it "a dog." ',
    "Is it a dog.\x1c",
    "Is it a dog\x1cor a cat?",
    "wanna\x1cplay?",
    "Is it a\xa0dog?",
    "Is it a\u2028dog?",
    "Is it a\u3000dog?",
    "Is it a\x85dog?",
    "Is it a\u2009dog?",
    "# of people?",
    "#1 or #2?",
    "",
    "   ",
    "\t\n",
    "?",
    "...",
    "'",
    '"',
    "''",
    "``",
    "--",
    "a,,b",
    "1,000,000, or 2,5?",
    "10:30:, ok:",
    "x.y.z.",
    "dog..",
    "dog. ",
    "dog .",
    ". dog",
    '"Stop" sign?',
    '"stop"',
    "(\"quoted\") [\"x\"] {\"y\"} <\"z\">",
    "''double'' and ``tex''",
    "````four backticks",
    "it's it'S IT's IT'S",
    "I'd I'D i'm I'M",
    "you'll you'LL YOU'll",
    "can't CAN'T Can't can'T",
    "cannot CANNOT CanNot",
    "'tis 'twas ' tis x'tis",
    "'hello' 'world'",
    "'s 're 'll 'm 'd 't 'n 've",
    "'ss 'rex 'llama 'mom 'dad 'the 'now 'very",
    "dogs' cats' 'quote'",
    "rock 'n' roll",
    "o'clock o'neil d'artagnan",
    "'ſ 'ſx",
    "cafe\u0301's 'cafe\u0301 e\u0301'x",
    "x\u0301'y",
    "²'s '²x ½'x x'²",
    "Ⓐ'x 'Ⓐ '\u200dx x\u200d'y",
    "_'x '_x ‿'x",
    "ǅ'x 'ǅ",
    "Ⅻ'x 'Ⅻ",
    "What is 2²?",
    "Is it 5'10\" tall?",
    "Is it a :-) or a ;-( face?",
    "Is it <3 or </3?",
    "Is it $3.50/lb, ~$4?",
    "a@b.com, #tag, 100%, R&D",
    "Is it 1990–2000 or 1990—2000 or 1990‒2000 or 1990―2000?",
    "«Bonjour» „Hallo“ “Hi” ‘Yo’",
    "Is it the dog’s bowl?",
    "It’s a dog, isn’t it?",
    "What's up?!?!",
    "Huh?!...",
    "Is the man (left) holding a [red] {big} <small> thing?",
    "gonna wanna gotta gimme lemme",
    "wanna?",
    "wanna",
    "more'n d'ye",
    "Is this ſ or ß or ẞ?",
    "İs this İstanbul?",
    "Is it ΣΊΣΥΦΟΣ?",
    "What does the ℡ sign mean?",
    "Is it 😀 or 🐶?",
    "Is it a dog 🐶?",
    "url: https://example.com/a?b=c&d=e#frag",
]

# Every question of the file and the inline list, as the original saw it (lower-cased) and verbatim.
ALL_QUESTIONS = _file_questions() + INLINE_QUESTIONS


def test_question_list_is_large_and_varied() -> None:
    questions = _file_questions()
    assert len(questions) >= 300
    assert len(set(questions)) == len(questions), "duplicate lines in vqa_questions.txt"


@pytest.mark.parametrize("lower", [True, False], ids=["lowercased", "verbatim"])
def test_equals_nltk_on_questions(lower: bool) -> None:
    reference = _nltk_reference()
    mismatches = []
    for question in ALL_QUESTIONS:
        text = question.lower() if lower else question
        expected, actual = reference(text), word_tokenize(text)
        if actual != expected:
            mismatches.append(f"{text!r}: nltk {expected} != ours {actual}")
    assert not mismatches, "\n".join(mismatches)


# ---------------------------------------------------------------------------------------------------
# Property tests against nltk
# ---------------------------------------------------------------------------------------------------

# Letters that take part in clitics and contractions (both cases), digits, every punctuation mark a
# rule mentions, whitespace the two regex engines disagree on, and word characters they disagree on.
ALPHABET = (
    "abcdegilmnorstvwy" "ADLMNRSTV" "0159"
    " .,:;?!'\"`()[]{}<>-*@#$%&/+=~^"
    "«»“”‘’„‒–—―"
    "\t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2009\u2028\u3000"
    "é\u0301²½ſⒶ\u200d_‿ßİΣ"
)
FRAGMENTS = [
    "can", "not", "cannot", "n't", "N'T", "'s", "'S", "'m", "'M", "'d", "'D", "'ll", "'LL", "'re", "'RE",
    "'ve", "'VE", "'t", "'n", "'ye", "gonna", "wanna", "gimme", "lemme", "gotta", "more'n", "d'ye",
    "'tis", "'twas", "...", "..", "--", "``", "''", "3.5", "1,000", "10:30", "what", "it", "dog", "S",
]
TEXT = st.one_of(
    st.text(alphabet=ALPHABET, max_size=40),
    st.lists(st.sampled_from(FRAGMENTS + list(ALPHABET)), max_size=16).map("".join),
)
PROPERTY_EXAMPLES = 2000


@pytest.mark.slow  # hypothesis, 2 s; the quick run keeps the worked cases above and the VQA oracles
@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT)
def test_property_equals_nltk(text: str) -> None:
    reference = _nltk_reference()
    assert word_tokenize(text) == reference(text)


# A small vocabulary: the fixture's words plus a few clitics, so that known and unknown tokens mix.
_SMALL_VOCAB = {w: i for i, w in enumerate(["what", "it", "dog", "'s", "?", ",", "ca", "n't", "can", "not", UNK], 1)}


def _prepro_ques_reference(question: str, wtoi: dict[str, int],
                           reference: Callable[[str], list[str]]) -> tuple[list[str], list[int], int]:
    """grad-cam misc/prepro_ques.py with nltk (as the oracle ran it): tokens printed, ids, length."""
    tokens = reference(str(question).lower())
    tokens = [w if w in wtoi else UNK for w in tokens]
    ids = [0] * 26
    for k, w in enumerate(tokens):
        if k < 26:
            ids[k] = wtoi[w]
    return tokens[:26], ids, min(26, len(tokens))


@pytest.mark.slow  # hypothesis, 1.7 s; the encoding of the oracle questions stays quick
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT)
def test_property_encoding_equals_prepro_ques(text: str) -> None:
    reference = _nltk_reference()
    if not reference(text.lower()):
        with pytest.raises(GradCamError):
            encode_question(text, _SMALL_VOCAB)
        return
    tokens, ids, length = _prepro_ques_reference(text, _SMALL_VOCAB, reference)
    assert question_tokens(text, _SMALL_VOCAB) == tokens
    assert encode_question(text, _SMALL_VOCAB) == (ids, length)


# ---------------------------------------------------------------------------------------------------
# Fixed expectations (written out, not computed by nltk)
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, tokens",
    [
        ("what's the dog doing?", ["what", "'s", "the", "dog", "doing", "?"]),
        ("isn't it a cat?", ["is", "n't", "it", "a", "cat", "?"]),
        ("can't you see? i cannot.", ["ca", "n't", "you", "see", "?", "i", "can", "not", "."]),
        ("won't they're i'm let's y'all", ["wo", "n't", "they", "'re", "i", "'m", "let", "'s", "y'all"]),
        ("the man's hat, the dogs' toys", ["the", "man", "'s", "hat", ",", "the", "dogs", "'", "toys"]),
        ('is the "stop" sign red?', ["is", "the", "``", "stop", "''", "sign", "red", "?"]),
        ("is it 'single'?", ["is", "it", "'", "single", "'", "?"]),
        ("3.5 m, 1,000 $ or 10%?", ["3.5", "m", ",", "1,000", "$", "or", "10", "%", "?"]),
        ("a (big) [red] dog...", ["a", "(", "big", ")", "[", "red", "]", "dog", "..."]),
        ("red--or blue; ok: fine!", ["red", "--", "or", "blue", ";", "ok", ":", "fine", "!"]),
        ("gonna wanna gimme", ["gon", "na", "wan", "na", "gim", "me"]),
        ("  spaced \t out  ", ["spaced", "out"]),
    ],
)
def test_known_tokenizations(text: str, tokens: list[str]) -> None:
    assert word_tokenize(text) == tokens


def test_no_sentence_splitting() -> None:
    """The documented choice: the whole question is one sentence (as the oracle ran nltk), so the period
    of a non-final sentence stays on its word; only the text-final period is split off."""
    assert word_tokenize("is it a dog. what color?") == ["is", "it", "a", "dog.", "what", "color", "?"]
    assert word_tokenize("look at the picture. what is it.") == ["look", "at", "the", "picture.", "what", "is", "it", "."]


def test_long_runs_stay_linear() -> None:
    """A text-final period followed by a long run of spaces and quotes must not backtrack quadratically."""
    for text in ["x." + " " * 50_000 + "y", "x." + "' " * 25_000 + "\t y", "x." + " " * 50_000]:
        start = time.perf_counter()
        word_tokenize(text)
        assert time.perf_counter() - start < 1.0


def test_word_tokenize_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        word_tokenize(b"what?")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# Encoding: the oracle's VQA cases and the fixture vocabulary
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vocab() -> dict[str, int]:
    ix_to_word = json.loads(VOCAB_FILE.read_text(encoding="utf-8").split("\n")[0])["ix_to_word"]
    return word_to_ix_from_ix_to_word(ix_to_word)


def _oracle_encoding(case_dir: Path) -> tuple[str, list[str], list[int]]:
    """(question, printed tokens, printed ids) of one oracle VQA run."""
    words = shlex.split(json.loads((case_dir / "case.json").read_text())["command"])
    question = words[words.index("-question") + 1]
    lines = (case_dir / "stdout.txt").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Successfully loaded")) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("["))
    return question, lines[start:end], json.loads(lines[end])


VQA_CASES = sorted(p.name for p in CASES.iterdir() if p.name.startswith("vqa_"))


def test_vqa_cases_present() -> None:
    assert len(VQA_CASES) >= 6


@pytest.mark.parametrize("case_id", VQA_CASES)
def test_oracle_encoding(case_id: str, vocab: dict[str, int]) -> None:
    question, printed_tokens, printed_ids = _oracle_encoding(CASES / case_id)
    assert question_tokens(question, vocab) == printed_tokens
    assert encode_question(question, vocab) == (printed_ids, len(printed_tokens))


def test_fixture_vocabulary(vocab: dict[str, int]) -> None:
    assert len(vocab) == 40
    assert vocab["what"] == 1 and vocab["?"] == 8 and vocab[UNK] == 40
    assert encode_question("What animal?", vocab) == ([1, 2, 8] + [0] * 23, 3)
    ids, length = encode_question("What animal is sleeping here?", vocab)
    assert (ids[:6], length) == ([1, 2, 4, 40, 40, 8], 6)
    assert question_tokens("What's the dog's color?", vocab) == ["what", UNK, "the", "dog", UNK, "color", "?"]


def test_truncates_to_26(vocab: dict[str, int]) -> None:
    question = " ".join(["dog", "cat", "man"] * 10)  # 30 tokens
    ids, length = encode_question(question, vocab)
    assert length == MAX_QUESTION_LENGTH == 26
    assert len(ids) == 26 and 0 not in ids
    assert ids == ([20, 21, 22] * 10)[:26]
    assert len(question_tokens(question, vocab)) == 26


def test_exactly_26_and_custom_max_len(vocab: dict[str, int]) -> None:
    question = " ".join(["dog"] * 26)
    assert encode_question(question, vocab) == ([20] * 26, 26)
    assert encode_question("what animal?", vocab, max_len=2) == ([1, 2], 2)
    assert encode_question("what?", vocab, max_len=4) == ([1, 8, 0, 0], 2)
    with pytest.raises(ValueError):
        encode_question("what?", vocab, max_len=0)


def test_vocabulary_without_unk_is_an_error() -> None:
    with pytest.raises(GradCamError) as err:
        encode_question("what animal?", {"what": 1, "animal": 2, "?": 3})
    message = str(err.value)
    assert "UNK" in message and "vocabulary" in message and "\n" not in message


@pytest.mark.parametrize("question", ["", " ", "\t\n  ", "\u3000"])
def test_empty_question_is_an_error(question: str, vocab: dict[str, int]) -> None:
    with pytest.raises(GradCamError) as err:
        encode_question(question, vocab)
    assert "empty" in str(err.value) and "\n" not in str(err.value)


def test_word_to_ix_from_ix_to_word() -> None:
    assert word_to_ix_from_ix_to_word({"2": "b", "1": "a", "3": "UNK"}) == {"a": 1, "b": 2, "UNK": 3}
    # As prepro_ques.py's dict comprehension: a repeated word keeps its last index.
    assert word_to_ix_from_ix_to_word({"1": "a", "2": "a"}) == {"a": 2}
    with pytest.raises(GradCamError):
        word_to_ix_from_ix_to_word({"one": "a"})
    with pytest.raises(GradCamError):
        word_to_ix_from_ix_to_word({"0": "a"})


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=DATA.parent.parent
    )
    return out.stdout.strip()


def test_module_needs_no_torch_and_imports_nltk_only_to_tokenize() -> None:
    """No torch at all; nltk (slow to import) only once a question is tokenized, so the programs that
    import this module's package without a question never load it."""
    code = (
        "import sys, gradcam_core.tasks.vqa.tokenize as t; "
        "before = 'nltk' in sys.modules; "
        "t.encode_question('what?', {'what': 1, '?': 2, 'UNK': 3}); "
        "print(before, 'nltk' in sys.modules, 'torch' in sys.modules)"
    )
    assert _run(code) == "False True False"


def test_missing_nltk_is_one_clear_error() -> None:
    code = (
        "import sys; sys.modules['nltk'] = None; "  # as if nltk were not installed
        "import gradcam_core.tasks.vqa.tokenize as t\n"
        "try:\n t.word_tokenize('what?')\n"
        "except t.GradCamError as err:\n print(err)"
    )
    message = _run(code)
    assert "nltk" in message and "pip install" in message and "\n" not in message
