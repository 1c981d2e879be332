"""Turning "the network cannot take this input size" into one clear line.

A network with fully connected layers fixes its input size (VGG-16's fc6 wants 512 x 7 x 7 values, so
224 x 224 images); convolutions and poolings need at least their kernel's extent. ``-input_sz`` can ask
for any size. A :class:`~gradcam_core.nets.graph.GraphNet` refuses a size it cannot take before any
work, by arithmetic on its layers' geometry (``GraphNet.check_input_size``, which its forward also
calls), with an :class:`~gradcam_core.nets.graph.InputSizeError` naming the layer; a program can call
it right after loading the net, inside :func:`input_size_errors`. Where that plan does not reach (a
module without a shape rule, another kind of model), torch fails in the middle of the forward with
e.g. "mat1 and mat2 shapes cannot be multiplied". The forward of the first batch runs before anything
is written, so the pipelines wrap :func:`explain` in :func:`input_size_errors` too, which re-raises
both kinds as :class:`GradCamError` naming the option.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from ..errors import GradCamError
from ..nets.graph import InputSizeError

# torch's messages for inputs of the wrong extent (matmul, view/reshape, conv/pool too small, ...)
_SHAPE_ERROR = re.compile(
    r"shapes? cannot be multiplied|must have same reduction dim|is invalid for input of size|"
    r"size mismatch|output size is too small|Kernel size can't be greater|padded input size", re.IGNORECASE)


@contextlib.contextmanager
def input_size_errors(input_sz: int) -> Iterator[None]:
    """Re-raise an :class:`InputSizeError` or torch's shape errors from the body as
    ``GradCamError("-input_sz <n>: the network cannot take a <n>x<n> image (<reason>)")``, the reason
    being the InputSizeError's ``reason`` or torch's first line; any other error passes unchanged."""
    size = f"{input_sz}x{input_sz}"
    try:
        yield
    except InputSizeError as err:
        raise GradCamError(f"-input_sz {input_sz}: the network cannot take a {size} image ({err.reason})") from None
    except RuntimeError as err:
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        if "can't allocate memory" in text or not _SHAPE_ERROR.search(text):
            raise
        raise GradCamError(f"-input_sz {input_sz}: the network cannot take a {size} image ({first})") from None
