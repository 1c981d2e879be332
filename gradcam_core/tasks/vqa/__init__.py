"""VQA_LSTM_CNN (VT-vision-lab) from ``lstm.t7`` and ``data_prepro.json``, as grad-cam ran it.

The names of :mod:`.model` are loaded when first used, so the tokenizer imports without torch.
"""
from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module(f"{__name__}.model"), name)
