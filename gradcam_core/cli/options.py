"""Option values converted as ``torch.CmdLine`` converted them (to the type of the option's
default), with a one-line GradCamError naming the option when a value does not fit; and option values
that name several targets (``-label 243,283``, ``-answer dog,cat``, ``-caption 'a|b'``)."""
from __future__ import annotations

import ast
from typing import Any, Optional, Sequence

from ..errors import GradCamError


def as_int(name: str, value: Any) -> int:
    """``value`` as an int, or a GradCamError naming the option."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        f = float(str(value).strip())
    except ValueError:
        raise GradCamError(f"-{name} must be a number, got {value!r}") from None
    if not f.is_integer():
        raise GradCamError(f"-{name} must be a whole number, got {value!r}")
    if abs(f) >= 2**63:  # torch (seeds), devices and sizes take 64-bit integers
        raise GradCamError(f"-{name} {value} is out of range")
    return int(f)


def as_positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1 (sizes, counts)."""
    n = as_int(name, value)
    if n < 1:
        raise GradCamError(f"-{name} must be at least 1, got {n}")
    return n


def as_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` as one of ``choices``."""
    text = as_str(value)
    if text not in choices:
        raise GradCamError(f"-{name} {text}: expected one of {', '.join(choices)}")
    return text


def as_str(value: Any) -> str:
    """``value`` as the string the user typed (defaults may be other types)."""
    return value if isinstance(value, str) else str(value)


def as_int_list(name: str, value: Any) -> list[int]:
    """``243``, ``"243"``, ``"243,283"`` or a list/tuple of those -> [243, 283]."""
    if isinstance(value, (list, tuple)):
        items: list[Any] = list(value)
    else:
        text = str(value).strip().strip("[]()")
        items = [t for t in text.replace(" ", ",").split(",") if t] if text else []
    if not items:
        raise GradCamError(f"-{name} needs at least one value")
    return [as_int(name, v) for v in items]


def as_str_list(name: str, value: Any, sep: str) -> list[str]:
    """Several targets in one option value (``-answer``, ``-caption``).

    * a list or tuple (library callers): its items;
    * a Python list literal of strings, ``'["a dog", "a cat"]'`` (the python-fire way): its items,
      each taken as written ('' included);
    * text containing ``sep``: the parts, stripped of surrounding spaces; empty parts are dropped;
    * any other text (also ''): that one value, unchanged.
    """
    if isinstance(value, (list, tuple)):
        items = [as_str(v) for v in value]
    else:
        text = as_str(value)
        items = _str_list_literal(text)
        if items is None:
            items = [p.strip() for p in text.split(sep) if p.strip()] if sep in text else [text]
    if not items:
        raise GradCamError(f"-{name} needs at least one value")
    return items


def _str_list_literal(text: str) -> Optional[list[str]]:
    """The strings of ``'["a", "b"]'``, or None if ``text`` is not a list literal of strings."""
    stripped = text.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return None
    try:
        value = ast.literal_eval(stripped)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None
