"""Class names: Caffe's ``synset_words.txt`` ("n01440764 tench, Tinca tinca", one class a line, line i+1
naming output i) or a plain file of one name a line (torchvision's ``imagenet_classes.txt`` style).

:func:`read_synset` reads one (bounded, safely opened) into :class:`ClassNames`; :func:`find_synset`
finds the one beside a model file. A line's text is a comma-separated list of synonyms; its display
name (:meth:`ClassNames.name`) is the FIRST synonym ("tiger cat", "tench"): short enough for a file
name or a printed line, and what torchvision's ImageNet category names are (the original printed no
class names at all). :meth:`ClassNames.text` gives the whole text, :meth:`ClassNames.wnid` the WordNet id.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import GradCamError
from ..fileio import open_regular

SYNSET_FILE = "synset_words.txt"
MAX_SYNSET_BYTES: int = 16 << 20
"""Largest class-names file read (ImageNet-21k's 21,841 synsets take about 1 MB)."""
MAX_CLASSES: int = 100_000
"""Most lines (classes) a class-names file may have."""
_WNID_LINE = re.compile(r"(n\d{8})\s+(\S.*)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tabs are fine; escapes and NULs are not


_LABEL_NUMBER = re.compile(r"[+-]?[0-9]+\Z")


def is_label_number(text: str) -> bool:
    """Whether a label as typed is a number (ASCII digits with an optional sign, as Lua read it) rather
    than a class name: ``"243"``, ``"-1"`` are numbers; ``"\u0663"``, ``"\uff15"``, ``"1_000"``, ``"1e3"``
    are names (looked up in :class:`ClassNames`)."""
    return bool(_LABEL_NUMBER.match(text))


def _key(text: str) -> str:
    """The form names are compared in: case-folded, runs of white space made one space."""
    return " ".join(text.casefold().split())


@dataclass(frozen=True)
class ClassNames:
    """The names of a net's classes, 0-based as the net's outputs (labels shown to users are 1-based).

    ``texts[i]`` is line i+1's text without its WordNet id, ``wnids[i]`` that id (None in a plain
    file); ``source`` names the file in messages.
    """

    texts: tuple[str, ...]
    wnids: tuple[str | None, ...]
    source: str
    _primary: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    _synonym: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        primary: dict[str, list[int]] = {}
        synonym: dict[str, list[int]] = {}
        for i, (text, wnid) in enumerate(zip(self.texts, self.wnids)):
            keys = {_key(text), _key(self.name(i))} | ({wnid.casefold()} if wnid else set())
            for k in keys:
                primary.setdefault(k, []).append(i)
            for k in {_key(s) for s in self.synonyms(i)} - keys:
                synonym.setdefault(k, []).append(i)
        object.__setattr__(self, "_primary", {k: tuple(v) for k, v in primary.items()})
        object.__setattr__(self, "_synonym", {k: tuple(v) for k, v in synonym.items()})

    def __len__(self) -> int:
        return len(self.texts)

    def _check(self, index: int) -> int:
        if not 0 <= index < len(self.texts):
            raise GradCamError(f"class index {index} is out of range: {self.source} names {len(self.texts)} "
                               f"classes (0..{len(self.texts) - 1})")
        return index

    def synonyms(self, index: int) -> tuple[str, ...]:
        """The comma-separated synonyms of class ``index`` (0-based), stripped, empty ones left out."""
        return tuple(s.strip() for s in self.texts[self._check(index)].split(",") if s.strip())

    def name(self, index: int) -> str:
        """The display name of class ``index`` (0-based): its first synonym, e.g. 282 -> "tiger cat"."""
        synonyms = self.synonyms(index)
        return synonyms[0] if synonyms else self.texts[index]

    def text(self, index: int) -> str:
        """The whole text of class ``index`` (0-based), e.g. 0 -> "tench, Tinca tinca"."""
        return self.texts[self._check(index)]

    def wnid(self, index: int) -> str | None:
        """The WordNet id of class ``index`` (0-based), e.g. 0 -> "n01440764"; None in a plain file."""
        return self.wnids[self._check(index)]

    def check_count(self, outputs: int) -> None:
        """Raise GradCamError unless there is one name per net output."""
        if len(self.texts) != outputs:
            raise GradCamError(f"{self.source} names {len(self.texts)} classes but the net has {outputs} outputs")

    def lookup(self, query: str) -> int:
        """The 0-based index of the class named ``query``, compared case-insensitively (white space
        runs as one space).

        A class is named by its whole text, its display name or its WordNet id first; only when no
        class is, by any of its other synonyms ("partridge" is class 86's display name and a synonym
        of 82's "ruffed grouse": it means 86). A name that still fits several classes ("crane": the
        bird 134 and the machine 517) raises GradCamError listing them with their 1-based labels; an
        unknown name raises GradCamError suggesting close matches (difflib).
        """
        key = _key(query)
        for table in (self._primary, self._synonym):
            found = table.get(key, ())
            if len(found) == 1:
                return found[0]
            if found:
                choices = "; ".join(f"label {i + 1} '{self._full(i)}'" for i in found)
                raise GradCamError(f"class name '{query}' is ambiguous in {self.source}: {choices}; "
                                   "give the label number instead")
        if not key:
            raise GradCamError(f"an empty class name cannot be looked up in {self.source}")
        close = difflib.get_close_matches(key, list(self._primary) + list(self._synonym), n=5, cutoff=0.6)
        hint = "; close matches: " + ", ".join(f"'{k}' ({self._labels(k)})" for k in close) if close else ""
        raise GradCamError(f"no class named '{query}' in {self.source}{hint}")

    def _full(self, index: int) -> str:
        wnid = self.wnids[index]
        return f"{wnid} {self.texts[index]}" if wnid else self.texts[index]

    def _labels(self, key: str) -> str:
        found = self._primary.get(key) or self._synonym.get(key, ())
        return ("label " if len(found) == 1 else "labels ") + ", ".join(str(i + 1) for i in found)


def parse_synset(text: str, source: str) -> ClassNames:
    """Class names from the text of a synset_words.txt or one-name-per-line file.

    Lines end with LF or CRLF; surrounding white space is stripped; trailing empty lines are ignored,
    but an empty line between names is refused (it would shift every later class). A line
    "n<8 digits> <text>" carries a WordNet id; any other line is a plain name. Raises GradCamError
    (naming ``source`` and the line) for no names, more than :data:`MAX_CLASSES` lines, an empty line
    or control characters."""
    lines = text.removeprefix("\ufeff").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise GradCamError(f"{source} holds no class names")
    if len(lines) > MAX_CLASSES:
        raise GradCamError(f"{source} has more than {MAX_CLASSES} lines: not a list of class names")
    texts, wnids = [], []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            raise GradCamError(f"{source} line {number} is empty (every line names one class, in output order)")
        if _CONTROL.search(line):
            raise GradCamError(f"{source} line {number} holds control characters: not a list of class names")
        match = _WNID_LINE.fullmatch(line)
        wnids.append(match.group(1) if match else None)
        texts.append(match.group(2) if match else line)
    return ClassNames(tuple(texts), tuple(wnids), source)


def read_synset(path: str | os.PathLike[str]) -> ClassNames:
    """The class names in the file at ``path`` (see :func:`parse_synset`). Raises GradCamError naming
    the file when it cannot be read, is larger than :data:`MAX_SYNSET_BYTES`, is binary (NUL bytes)
    or not UTF-8 text, or is not a list of names."""
    source = f"class names file '{os.fspath(path)}'"
    try:
        with open_regular(path) as f:  # a pipe or device is refused, never read
            data = _read_at_most(f, MAX_SYNSET_BYTES + 1)
    except OSError as err:
        raise GradCamError(f"cannot read {source}: {err.strerror or err}") from None
    if len(data) > MAX_SYNSET_BYTES:
        raise GradCamError(f"{source} is larger than {MAX_SYNSET_BYTES >> 20} MB: not a list of class names")
    if b"\0" in data:
        raise GradCamError(f"{source} is a binary file, not a list of class names")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise GradCamError(f"{source} is not UTF-8 text (byte {err.start}): not a list of class names") from None
    return parse_synset(text, source)


def _read_at_most(f: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes (an unbuffered read may return fewer than asked before the end)."""
    chunks, size = [], 0
    while size < limit:
        chunk = f.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def find_synset(model_file: str | os.PathLike[str]) -> Path | None:
    """The ``synset_words.txt`` beside ``model_file`` (in the same folder), if there is one."""
    candidate = Path(model_file).parent / SYNSET_FILE
    return candidate if candidate.is_file() else None
