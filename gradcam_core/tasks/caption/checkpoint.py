"""Reading a neuraltalk2 checkpoint (``torch.save`` of a Lua table, GPU or CPU version) into a
:class:`~.model.Captioner`, refusing anything else with what the file holds instead."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import GradCamError
from ...formats.torch7 import T7Object, T7Table, load_t7
from ...formats.torch7.modules import convert_module, sequential_to_net
from ..vocabulary import Vocabulary
from .model import Captioner, LanguageModel


def load_checkpoint(path: str | Path, device: torch.device = torch.device("cpu"),
                    dtype: torch.dtype = torch.float32) -> Captioner:
    """Load a neuraltalk2 checkpoint (GPU or CPU version: cudnn or nn modules, Cuda or Float storages).

    Anything that is not one raises :class:`GradCamError` saying what the file holds instead.
    """
    try:
        root = load_t7(path)
    except GradCamError as err:
        detail = str(err).removeprefix(f"{path}: ")
        raise GradCamError(
            f"{path} is not a neuraltalk2 checkpoint (not a readable Torch7 file: {detail})"
        ) from None
    _check_layout(root, str(path))
    protos = root["protos"]
    try:
        cnn = sequential_to_net(protos["cnn"], "protos.cnn", dtype)
        lm = _language_model(protos["lm"], dtype)
        vocab = _vocabulary(root["vocab"], lm.vocab_size)
    except GradCamError as err:
        raise GradCamError(f"{path}: {err}") from None
    return Captioner(cnn.to(device), lm.to(device), vocab)


def _check_layout(root: Any, path: str) -> None:
    """A neuraltalk2 checkpoint is a table with protos.cnn, protos.lm (nn.LanguageModel) and vocab."""
    found = None
    if not isinstance(root, T7Table):
        found = f"it holds {_kind(root)}"
    elif not isinstance(root.get("protos"), T7Table) or not isinstance(root.get("vocab"), T7Table):
        keys = sorted(str(k) for k in root)
        shown = ", ".join(keys[:12] + ["..."] * (len(keys) > 12))
        found = f"it holds a table with keys {shown}" if keys else "it holds an empty table"
    else:
        protos = root["protos"]
        lm, cnn = protos.get("lm"), protos.get("cnn")
        if not (isinstance(lm, T7Object) and lm.typename == "nn.LanguageModel"):
            found = f"its protos.lm is {_kind(lm)}"
        elif not isinstance(cnn, T7Object):
            found = f"its protos.cnn is {_kind(cnn)}"
    if found:
        raise GradCamError(
            f"{path} is not a neuraltalk2 checkpoint (a table with protos.cnn, protos.lm of class "
            f"nn.LanguageModel and vocab): {found}"
        )


def _kind(value: Any) -> str:
    """What a value read from a .t7 file is, for messages ("a table", "a nn.Sequential", ...)."""
    if value is None:
        return "nothing"
    if isinstance(value, (T7Object, T7Table)):
        return f"a {value.typename}" if isinstance(value, T7Object) else "a table"
    if hasattr(value, "shape"):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, (bool, int, float)):
        return f"the value {value}"
    return type(value).__name__


MAX_SEQ_LENGTH = 1000  # neuraltalk2 trains with 16; the sampler runs seq_length + 2 steps


def _positive_int(lm: T7Object, name: str, most: int | None = None) -> int:
    value = lm.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GradCamError(f"protos.lm: field '{name}' should be a positive whole number, is {value!r}")
    if most is not None and value > most:  # not tied to any weight: a hostile file could ask for 10^9 steps
        raise GradCamError(f"protos.lm: field '{name}' is {value}; a captioning model takes at most {most}")
    return value


def _core_modules(core: Any) -> dict[str, T7Object]:
    """The modules of the LSTM core's graph by their nngraph annotation name (i2h_1, decoder, ...)."""
    nodes = core.get("forwardnodes") if isinstance(core, T7Object) and core.typename == "nn.gModule" else None
    if not isinstance(nodes, T7Table):
        raise GradCamError(f"protos.lm.core should be an nn.gModule (nngraph), is {_kind(core)}")
    named = {}
    for node in nodes.values():
        data = node.get("data") if isinstance(node, T7Object) else None
        annotations = data.get("annotations") if isinstance(data, T7Table) else None
        name = annotations.get("name") if isinstance(annotations, T7Table) else None
        module = data.get("module") if isinstance(data, T7Table) else None
        if isinstance(name, str) and isinstance(module, T7Object):
            named[name] = module
    return named


def _language_model(lm: T7Object, dtype: torch.dtype) -> LanguageModel:
    """``protos.lm`` -> :class:`LanguageModel`, its Linear layers found by annotation name."""
    vocab_size, encoding, rnn = (_positive_int(lm, k) for k in ("vocab_size", "input_encoding_size", "rnn_size"))
    layers, seq_length = _positive_int(lm, "num_layers"), _positive_int(lm, "seq_length", MAX_SEQ_LENGTH)
    named = _core_modules(lm.get("core"))

    def linear(name: str, n_in: int, n_out: int) -> nn.Linear:
        if name not in named:
            found = ", ".join(sorted(named)) or "none"
            raise GradCamError(f"protos.lm.core has no module annotated '{name}' (annotated: {found})")
        module = convert_module(named[name], f"protos.lm.core '{name}'", dtype)
        if not isinstance(module, nn.Linear) or (module.in_features, module.out_features) != (n_in, n_out):
            raise GradCamError(f"protos.lm.core '{name}' should be Linear({n_in} -> {n_out}), is {module}")
        return module

    def dropout(name: str) -> nn.Module:  # absent when the model was trained without dropout
        return convert_module(named[name], f"protos.lm.core '{name}'", dtype) if name in named else nn.Identity()

    numbers = range(1, layers + 1)
    i2h = [linear(f"i2h_{k}", encoding if k == 1 else rnn, 4 * rnn) for k in numbers]
    h2h = [linear(f"h2h_{k}", rnn, 4 * rnn) for k in numbers]
    drops = [nn.Identity()] + [dropout(f"drop_{k}") for k in numbers[1:]]
    table = lm.get("lookup_table")
    weight = table.get("weight") if isinstance(table, T7Object) else None
    if getattr(weight, "shape", None) != (vocab_size + 1, encoding):
        raise GradCamError(
            f"protos.lm.lookup_table should hold a ({vocab_size + 1}, {encoding}) weight, has {_kind(weight)}"
        )
    return LanguageModel(torch.from_numpy(weight).to(dtype), i2h, h2h, drops, dropout("drop_final"),
                         linear("decoder", rnn, vocab_size + 1), seq_length)


def _vocabulary(vocab: T7Table, vocab_size: int) -> Vocabulary:
    """``checkpoint.vocab`` ({"1": word, ...}) -> :class:`Vocabulary`, checked against the model."""
    words = {}
    for key, word in vocab.items():
        ix = int(key) if isinstance(key, str) and key.isdigit() and str(int(key)) == key else None
        if ix is None or not 1 <= ix <= vocab_size or not isinstance(word, str):
            shown = repr(word) if isinstance(word, str) else _kind(word)
            raise GradCamError(f"vocab should map '1'..'{vocab_size}' to words; it maps {key!r} to {shown}")
        words[ix] = word
    return Vocabulary(words)
