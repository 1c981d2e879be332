"""The one error type users of the tool see.

Every problem that comes from the user's input (a missing file, a corrupt model, a layer that does not
exist, an image that is not an image, ...) is raised as :class:`GradCamError` with a message of ONE line
that names the thing at fault. The command-line entry points print that line on stderr and exit with
code 2; library users can catch it.
"""
from __future__ import annotations


class GradCamError(Exception):
    """A user-facing error: ``str(err)`` is a single line naming the problem."""

    def __init__(self, message: str) -> None:
        # Keep the message on one line, whatever a file name or a decoded string held.
        super().__init__(" ".join(str(message).split()) if "\n" in str(message) else str(message))
