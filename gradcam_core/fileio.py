"""Opening the files users name (models, images), safely: a pipe never blocks, a device is never read.

A FIFO opened for reading waits for a writer (forever, if none comes) and ``/dev/zero`` never ends,
so the readers open every input through :func:`open_regular`, which checks what the path is on the
open descriptor (no race between a check and the open) before anything is read.
"""
from __future__ import annotations

import errno
import io
import os
import stat

NOT_REGULAR = "it is not a regular file (a device, pipe or socket)"


def open_regular(path: str | os.PathLike[str]) -> io.FileIO:
    """``path`` opened for unbuffered binary reading, if it is a regular file (symlinks followed).

    Raises ``IsADirectoryError`` ("it is a directory") for a folder, ``OSError`` (EINVAL,
    :data:`NOT_REGULAR`) for anything else that is not a regular file, and the usual ``OSError``s of
    ``open`` (missing, permission denied, ...)."""
    # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer (no effect on files).
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "it is a directory", os.fspath(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, NOT_REGULAR, os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
