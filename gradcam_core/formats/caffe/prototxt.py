"""A parser for the protobuf TEXT format, as prototxt files use it.

Supported: ``name: value``, ``name { ... }``, ``name: { ... }``, ``name < ... >``, lists ``name: [1, 2]``
and ``name [{ ... }, { ... }]``, strings in single or double quotes with C escapes (adjacent strings
concatenate), enum identifiers, numbers (decimal, hex, octal, floats with exponent, ``f`` suffix,
``inf``/``nan``), ``#`` comments and optional ``;``/``,`` after a field.

:func:`parse` gives a schema-free tree (:class:`TextMessage`); :func:`to_msg` types it against a
message descriptor of :mod:`.schema`, the same :class:`~.schema.Msg` tree the wire decoder produces.
Fields the descriptor does not know are ignored (the descriptors cover only what the loader reads).
Every error is a :class:`GradCamError` "<file>:<line>: <what>". Hostile text is bounded: messages nest at most
:data:`~.wire.MAX_DEPTH` deep, files over :data:`MAX_BYTES` are refused, and lexing is linear in the text.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import GradCamError
from ...fileio import open_regular
from .schema import MESSAGES, MessageType, Msg
from .wire import MAX_DEPTH


@dataclass(frozen=True)
class Scalar:
    """A scalar token: ``kind`` is "string" (``text`` unescaped), "number" or "ident" (``text`` as
    written, a leading '-' included)."""

    kind: str
    text: str
    line: int


@dataclass
class TextMessage:
    """A message of the text tree: field name -> values in file order."""

    line: int
    fields: dict[str, list[Scalar | TextMessage]] = field(default_factory=dict)


_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\f\v]+) | (?P<newline>\n) | (?P<comment>\#[^\n]*)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?)(?![A-Za-z0-9_]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<symbol>[{}<>\[\]:;,\-])
    """,
    re.VERBOSE,
)
#: Largest prototxt read. Parsing takes up to ~120 bytes of memory per byte of text, so this bounds it
#: (~1 GB); the deploy prototxts of the largest published nets are well under 1 MiB.
MAX_BYTES = 8 << 20
_SIMPLE_ESCAPES = {"n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11, "\\": 92, "'": 39, '"': 34, "?": 63}
_ESCAPE = re.compile(
    r"\\(?:[xX](?P<hex>[0-9a-fA-F]{1,2})|(?P<oct>[0-7]{1,3})|u(?P<u4>[0-9a-fA-F]{4})|U(?P<u8>[0-9a-fA-F]{8})|(?P<other>.))",
    re.DOTALL,
)


def parse_file(path: str | Path) -> TextMessage:
    """Read and parse a prototxt; unreadable files (and files over :data:`MAX_BYTES`) raise
    :class:`GradCamError` naming the file."""
    try:
        with open_regular(path) as f:  # a directory, pipe or device is refused, never read
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise GradCamError(f"cannot read prototxt '{path}': {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise GradCamError(f"cannot read prototxt '{path}': it is larger than {MAX_BYTES >> 20} MiB, "
                           "far beyond any net definition")
    return parse(data.decode("utf-8", errors="replace"), str(path))


def parse(text: str, filename: str = "<prototxt>") -> TextMessage:
    """Parse protobuf text into a :class:`TextMessage` (the top-level message)."""
    return _Parser(text, filename).parse()


class _Parser:
    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        self.tokens = list(self._lex(text))
        self.pos = 0
        self.depth = 0  # messages open around the current position

    def _lex(self, text: str):
        line, i = 1, 0
        while i < len(text):
            m = _TOKEN.match(text, i)
            if m is None:
                raise self._error(line, f"unexpected character {text[i]!r}")
            kind = m.lastgroup
            if kind == "newline":
                line += 1
            elif kind == "string":
                yield kind, self._unescape(m.group()[1:-1], line), line
            elif kind not in ("space", "comment"):
                yield kind, m.group(), line
            i = m.end()
        yield "eof", "end of file", line

    def _unescape(self, body: str, line: int) -> str:
        out = bytearray()
        pos = 0
        for m in _ESCAPE.finditer(body):
            out += body[pos : m.start()].encode()
            out += self._escaped(m, line)
            pos = m.end()
        out += body[pos:].encode()
        return out.decode("utf-8", errors="replace")

    def _escaped(self, m: re.Match[str], line: int) -> bytes:
        """The bytes of one escape sequence; a malformed one (``\\x`` without digits, ``\\q``, a code
        point past U+10FFFF) is an error naming it."""
        if m["hex"] is not None:
            return bytes([int(m["hex"], 16)])
        if m["oct"] is not None:
            return bytes([int(m["oct"], 8) & 0xFF])
        code = m["u4"] or m["u8"]
        if code is not None and int(code, 16) <= 0x10FFFF:
            return chr(int(code, 16)).encode("utf-8", errors="replace")
        if m["other"] in _SIMPLE_ESCAPES:
            return bytes([_SIMPLE_ESCAPES[m["other"]]])
        raise self._error(line, f"invalid escape sequence {m.group()!r} in string")

    def _error(self, line: int, what: str) -> GradCamError:
        return GradCamError(f"{self.filename}:{line}: {what}")

    def _peek(self) -> tuple[str, str, int]:
        return self.tokens[self.pos]

    def _next(self) -> tuple[str, str, int]:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def _accept(self, symbol: str) -> bool:
        kind, text, _ = self._peek()
        if kind == "symbol" and text == symbol:
            self.pos += 1
            return True
        return False

    def _expect(self, symbol: str, what: str) -> None:
        if not self._accept(symbol):
            _, text, line = self._peek()
            raise self._error(line, f"expected '{symbol}' {what}, found {_show(text)}")

    def parse(self) -> TextMessage:
        return self._fields(TextMessage(1), closer=None)

    def _fields(self, msg: TextMessage, closer: str | None) -> TextMessage:
        while True:
            kind, text, line = self._peek()
            if kind == "eof":
                if closer is not None:
                    raise self._error(line, f"unexpected end of file: missing '{closer}' to close the message "
                                      f"opened on line {msg.line}")
                return msg
            if kind == "symbol" and text == closer:
                self.pos += 1
                return msg
            if kind != "ident":
                raise self._error(line, f"expected a field name, found {_show(text)}")
            self.pos += 1
            msg.fields.setdefault(text, []).extend(self._field_values(text))
            self._accept(";") or self._accept(",")

    def _field_values(self, name: str) -> list[Scalar | TextMessage]:
        colon = self._accept(":")
        kind, text, line = self._peek()
        if kind == "symbol" and text in "{<":
            return [self._message()]
        if kind == "symbol" and text == "[":
            self.pos += 1
            values: list[Scalar | TextMessage] = []
            while not self._accept("]"):
                if values:
                    self._expect(",", "between list elements")
                k, t, _ = self._peek()
                values.append(self._message() if k == "symbol" and t in "{<" else self._scalar())
            return values
        if not colon:
            raise self._error(line, f"expected ':' or '{{' after field name '{name}', found {_show(text)}")
        return [self._scalar()]

    def _message(self) -> TextMessage:
        _, opener, line = self._next()
        if self.depth >= MAX_DEPTH:  # the parser (and to_msg after it) recurses once per level
            raise self._error(line, f"messages nested more than {MAX_DEPTH} deep")
        self.depth += 1
        message = self._fields(TextMessage(line), closer="}" if opener == "{" else ">")
        self.depth -= 1
        return message

    def _scalar(self) -> Scalar:
        kind, text, line = self._next()
        if kind == "string":
            while self._peek()[0] == "string":  # adjacent strings concatenate
                text += self._next()[1]
            return Scalar("string", text, line)
        if kind == "symbol" and text == "-":
            kind, text, line = self._next()
            if kind not in ("number", "ident"):
                raise self._error(line, f"expected a number after '-', found {_show(text)}")
            return Scalar(kind, "-" + text, line)
        if kind in ("number", "ident"):
            return Scalar(kind, text, line)
        raise self._error(line, f"expected a value, found {_show(text)}")


def _show(text: str) -> str:
    return text if text == "end of file" else repr(text)


# --------------------------------------------------------------------------------------------------
# Typing a text tree against a descriptor

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1)}
_INT = re.compile(r"-?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_FLOAT_WORDS = {"inf": math.inf, "infinity": math.inf, "nan": math.nan}


def to_msg(tree: TextMessage, mtype: MessageType, filename: str) -> Msg:
    """Type ``tree`` against ``mtype``: numbers, enums, bools and strings become Python values and
    sub-messages :class:`Msg`. Unknown field names are skipped; a known field with a value of the
    wrong kind raises "<file>:<line>: ..."."""
    msg = Msg(mtype)
    for name, values in tree.fields.items():
        fdesc = mtype.by_name.get(name)
        if fdesc is None:
            continue
        for value in values:
            msg.add(name, _typed(value, fdesc, filename))
    return msg


def _typed(value: Scalar | TextMessage, fdesc, filename: str):
    where = f"{filename}:{value.line}: field '{fdesc.name}'"
    if fdesc.kind == "message":
        if not isinstance(value, TextMessage):
            raise GradCamError(f"{where} expects a message {{ ... }}, found {value.text!r}")
        return to_msg(value, MESSAGES[fdesc.message], filename)
    if isinstance(value, TextMessage):
        raise GradCamError(f"{where} expects a {fdesc.kind} value, found a message")
    kind, text = fdesc.kind, value.text
    if kind == "string":
        if value.kind != "string":
            raise GradCamError(f"{where} expects a quoted string, found {text}")
        return text
    if value.kind == "string":
        raise GradCamError(f"{where} expects a {kind} value, found the string {text!r}")
    if kind == "enum":
        if value.kind == "ident":
            if text not in fdesc.enum and fdesc.name == "type":
                return text  # an unknown V1 layer type: the layer table reports it with the layer's name
            if text not in fdesc.enum:
                raise GradCamError(f"{where}: unknown value {text} (known: {', '.join(fdesc.enum)})")
            return fdesc.enum[text]
        return _int(text, "int32", where)
    if kind == "bool":
        if text in ("true", "True", "t", "1"):
            return True
        if text in ("false", "False", "f", "0"):
            return False
        raise GradCamError(f"{where} expects true or false, found {text}")
    if kind in _INT_RANGES:
        return _int(text, kind, where)
    return _float(text, where)


def _int(text: str, kind: str, where: str) -> int:
    if not _INT.fullmatch(text):
        raise GradCamError(f"{where} expects an integer, found {text}")
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text)
    if digits[:2] in ("0x", "0X"):
        number = int(digits, 16)
    elif len(digits) > 1 and digits[0] == "0":
        number = int(digits, 8)
    elif len(digits) <= 20:  # longer is past any 64-bit value (and past Python's limit on int(str))
        number = int(digits)
    else:
        number = 1 << 64
    number *= sign
    lo, hi = _INT_RANGES[kind]
    if not lo <= number <= hi:
        shown = text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"
        raise GradCamError(f"{where}: {shown} is out of range for {kind}")
    return number


def _float(text: str, where: str) -> float:
    body = text.lstrip("-")
    sign = -1.0 if text.startswith("-") else 1.0
    if body.lower() in _FLOAT_WORDS:
        return sign * _FLOAT_WORDS[body.lower()]
    if body[:2] in ("0x", "0X"):
        return sign * int(body, 16)
    try:
        return sign * float(body.rstrip("fF"))
    except ValueError:
        raise GradCamError(f"{where} expects a number, found {text}") from None
