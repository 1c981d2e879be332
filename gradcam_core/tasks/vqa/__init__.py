"""Visual question answering Grad-CAM: VQA_LSTM_CNN (VT-vision-lab) loaded from ``lstm.t7`` and
``data_prepro.json``, as grad-cam's ``visual_question_answering.lua`` ran it.

What the original computes:

1. image: VGG-19 from the Caffe files without prob and fc8, plus ``nn.Normalize(2)``: the
   L2-normalised relu7 feature ``f`` (4096 values);
2. question: tokenized as grad-cam's ``misc/prepro_ques.py`` did (:mod:`.tokenize`), each word a
   one-hot row through ``Linear(V, E)`` + Tanh, then the ``-rnn_layers``-layer LSTM
   ``lstm_conventional`` over the words from a zero state. The question feature ``q`` is the final
   state ``[c1, h1, c2, h2, ...]`` (2 * L * H values): the cells are part of it, because the LSTM
   hands its whole state on as one vector and the model was trained on that vector;
3. answer scores (pre-softmax, A of them) = ``Linear(C, A)(tanh(W_q q + b_q) * tanh(W_i f + b_i))``
   (VQA_LSTM_CNN's ``netdef.AxB`` fusion; every Dropout is the identity at evaluation);
4. the explained answer is ``-answer`` if it is one of the model's answers, else the predicted one; its
   score's gradient w.r.t. ``f`` drives Grad-CAM at ``-layer_name`` and guided backprop.

Here the CNN runs once (:func:`gradcam_core.engine.explain`) with answer targets; K answers share that
forward.

* :mod:`.tokenize`    the question -> tokens and 1-based ids (no torch)
* :mod:`.vocabulary`  ``data_prepro.json`` -> :class:`~gradcam_core.tasks.vocabulary.Vocabulary`
* :mod:`.model`       the question encoder and answer net (``QuestionAnswerer``), sizes, precision
* :mod:`.checkpoint`  ``lstm.t7``'s three flat vectors, checked against the size options
* :mod:`.image_net`   the CNN without its classifier, L2-normalised
* :mod:`.target`      ``AnswerTarget`` and ``explain_answers`` (0-based answer indices)

Precision: float64 end to end, as the original (``torch.setdefaulttensortype('torch.DoubleTensor')``,
CNN included): float64 matches the oracle's scores, the gradient into the image feature and the raw map
within 7e-15 relative; float32 would move up to 27 PNG values per image by one level, too close to the
2-level PNG tolerance for a precision that differs from the original's.

The public names of the submodules are attributes of this package too (``vqa.load_answerer``), loaded
when first used, so that ``import gradcam_core.tasks.vqa.tokenize`` does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("tokenize", "vocabulary", "model", "checkpoint", "image_net", "target")


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    for module in _SUBMODULES[1:]:
        found = getattr(importlib.import_module(f"{__name__}.{module}"), name, _MISSING)
        if found is not _MISSING:
            return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_MISSING = object()
