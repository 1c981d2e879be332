"""Option values converted as ``torch.CmdLine`` converted them (to the type of the option's
default), with a one-line GradCamError naming the option when a value does not fit; and option values
that name several targets (``-label 243,283``, ``-answer dog,cat``, ``-caption 'a|b'``)."""
from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from typing import Any

from ..errors import GradCamError
from ..formats.synset import is_label_number


def as_int(name: str, value: Any) -> int:
    """``value`` as an int, or a GradCamError naming the option."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        f = to_float(value)
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


def given(value: Any) -> bool:
    """Whether the user gave the option: a typed value reaches the command as a string (see
    ``app._normalize_argv``), a default as the default's own type (``-input_sz``'s int 224)."""
    return isinstance(value, str)


def as_str(value: Any) -> str:
    """``value`` as the string the user typed (defaults may be other types)."""
    return value if isinstance(value, str) else str(value)


def as_switch(name: str, value: Any) -> bool:
    """A 0/1 option (``-save_overlay``) as typed: 0 or 1 (any whole number :func:`as_int` reads as
    those), else a GradCamError naming the option."""
    number = as_int(name, value)
    if number not in (0, 1):
        raise GradCamError(f"-{name} {value}: expected 0 or 1")
    return number == 1


def as_input_options(preprocess: Any, mean_value: Any, mean_file: Any, input_scale: Any,
                     channel_order: Any) -> Any:
    """The preprocessing options of a classifier (``-preprocess``, ``-mean_value``, ``-mean_file``,
    ``-input_scale``, ``-channel_order``; '' = the model format's) as
    :class:`gradcam_core.tasks.classify.InputOptions`."""
    from ..tasks.classify import InputOptions  # imported here: it brings torch in
    from .paths import input_path

    if as_str(mean_value) and as_str(mean_file):  # Caffe's transform_param refuses both as well
        raise GradCamError("-mean_value and -mean_file are both given: give one of them (the mean is "
                           "either per channel or a whole mean image)")
    return InputOptions(
        preprocess=as_choice("preprocess", preprocess, ("", "caffe", "torchvision")),
        mean_value=as_float_list("mean_value", mean_value) if as_str(mean_value) else None,
        mean_file=input_path("mean_file", as_str(mean_file), "") if as_str(mean_file) else None,
        input_scale=as_float("input_scale", input_scale) if as_str(input_scale) else None,
        channel_order=as_choice("channel_order", channel_order, ("", "bgr", "rgb")),
    )


def as_int_list(name: str, value: Any) -> list[int]:
    """``243``, ``"243"``, ``"243,283"`` or a list/tuple of those -> [243, 283]."""
    if isinstance(value, (list, tuple)):
        items: list[Any] = list(value)
    else:
        text = str(value).strip().strip("[]()")
        items = [t for t in text.replace(" ", ",").split(",") if t] if text else []
    if not items:
        raise GradCamError(f"-{name} needs at least one value")
    if len(items) == 1:
        return [as_int(name, items[0])]
    numbers = []
    for item in items:  # a bad one among several: the message shows the whole value, as typed
        try:
            numbers.append(as_int(name, item))
        except GradCamError:
            shown = value if isinstance(value, str) else ",".join(map(str, items))
            raise GradCamError(f"-{name} {shown!r} must be a number, or several separated by commas "
                               f"({item!r} is not a whole number)") from None
    return numbers


def as_label_list(name: str, value: Any) -> list[int | str]:
    """``-label``: 1-based labels and class names, separated by commas: ``243``, ``"243,283"``,
    ``"243 283"``, ``"tiger cat"``, ``"boxer, 283"`` or a list/tuple of those -> [243, 283],
    ["tiger cat"], ["boxer", 283]. A part made of whole numbers only (ASCII digits with an optional
    sign) is labels; any other part is one class name (looked up once the model's names are known), so
    ``٣``, ``５``, ``1_000`` and ``1e3`` are names, not labels."""
    parts: list[Any] = list(value) if isinstance(value, (list, tuple)) else str(value).strip().strip("[]()").split(",")
    labels: list[int | str] = []
    for part in parts:
        if isinstance(part, (int, float)) and not isinstance(part, bool):
            labels.append(as_int(name, part))
            continue
        tokens = str(part).split()
        if tokens and all(is_label_number(t) for t in tokens):
            labels += [as_int(name, t) for t in tokens]
        elif tokens:
            labels.append(" ".join(tokens))
    if not labels:
        raise GradCamError(f"-{name} needs at least one value")
    return labels



def to_float(value: Any) -> float:
    """``value`` (surrounding spaces stripped) as a float, as Lua's ``tonumber`` read numbers: ASCII
    only, so the other digits Python's ``float`` takes (``٣``, ``５``) and its ``1_000`` raise ValueError."""
    text = str(value).strip()
    if not text.isascii() or "_" in text:
        raise ValueError(f"not a number: {text!r}")
    return float(text)


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a number (``-1``, ``1e3``; option values that look like flags)."""
    try:
        to_float(text)
    except ValueError:
        return False
    return True


def as_float_list(name: str, value: Any) -> tuple[float, ...]:
    """``104,117,123`` (or a list) -> (104.0, 117.0, 123.0); each a finite number."""
    items = list(value) if isinstance(value, (list, tuple)) else [t for t in str(value).replace(" ", ",").split(",") if t]
    try:
        numbers = tuple(to_float(v) for v in items)
    except ValueError:
        raise GradCamError(f"-{name} {value!r} must be numbers separated by commas") from None
    if not numbers or not all(abs(v) < float("inf") for v in numbers):
        raise GradCamError(f"-{name} {value!r} must be finite numbers separated by commas")
    return numbers


def as_float(name: str, value: Any) -> float:
    """``value`` as a finite float, or a GradCamError naming the option."""
    try:
        number = to_float(value)
    except ValueError:
        raise GradCamError(f"-{name} must be a number, got {value!r}") from None
    if not abs(number) < float("inf"):
        raise GradCamError(f"-{name} must be a finite number, got {value!r}")
    return number


def as_input_size(name: str, value: Any) -> int:
    """``-input_sz``: an int >= 1 whose square image stays within the decoder's pixel limit
    (``image.decode.MAX_PIXELS``, 8192 x 8192): each image is scaled to ``value`` x ``value``, and
    a larger size would take minutes and tens of GB before anything could fail."""
    from ..image.decode import MAX_PIXELS  # imported here: it brings torch in

    n = as_positive_int(name, value)
    if n * n > MAX_PIXELS:
        largest = math.isqrt(MAX_PIXELS)
        raise GradCamError(f"-{name} {n} is too large: a {n}x{n} input exceeds the limit of {MAX_PIXELS} pixels "
                           f"(at most {largest})")
    return n


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
        literal = _str_list_literal(text)
        if literal is not None:
            items = literal
        else:
            items = [p.strip() for p in text.split(sep) if p.strip()] if sep in text else [text]
    if not items:
        raise GradCamError(f"-{name} needs at least one value")
    return items


def _str_list_literal(text: str) -> list[str] | None:
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
