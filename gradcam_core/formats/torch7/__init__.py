"""Torch7 ``.t7`` checkpoints: a safe, dependency-free reader (see :mod:`.reader`), and their modules as
torch modules (:mod:`.modules`)."""
from __future__ import annotations

from .reader import T7Function, T7Object, T7Table, load_t7

__all__ = ["load_t7", "T7Table", "T7Object", "T7Function"]
