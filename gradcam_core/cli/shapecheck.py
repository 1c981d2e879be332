"""Turning "the network cannot take this input size" into one clear line.

A network with fully connected layers fixes its input size (VGG-16's fc6 wants 512 x 7 x 7 values, so
224 x 224 images); convolutions and poolings need at least their kernel's extent. ``-input_sz`` can ask
for any size, and torch then fails in the middle of the forward with "mat1 and mat2 shapes cannot be
multiplied". The forward of the first batch runs before anything is written, so the pipelines wrap
:func:`explain` in :func:`input_size_errors`, which re-raises such errors as :class:`GradCamError` naming
the option.

(Checking beforehand on the ``meta`` device would be exact, but its first use imports about 900 modules
and costs 0.6-2 s, more than a whole VGG-16 forward.)
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator

from ..errors import GradCamError

# torch's messages for inputs of the wrong extent (matmul, view/reshape, conv/pool too small, ...)
_SHAPE_ERROR = re.compile(
    r"shapes? cannot be multiplied|must have same reduction dim|is invalid for input of size|"
    r"size mismatch|output size is too small|Kernel size can't be greater|padded input size", re.IGNORECASE)


@contextlib.contextmanager
def input_size_errors(input_sz: int) -> Iterator[None]:
    """Re-raise torch's shape errors from the body as ``GradCamError("-input_sz <n>: the network cannot
    take a <n>x<n> image (<torch's first line>)")``; any other error passes unchanged."""
    try:
        yield
    except RuntimeError as err:
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        if "can't allocate memory" in text or not _SHAPE_ERROR.search(text):
            raise
        size = f"{input_sz}x{input_sz}"
        raise GradCamError(f"-input_sz {input_sz}: the network cannot take a {size} image ({first})") from None
