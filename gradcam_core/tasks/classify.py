"""Classification: a classifier network and what to explain of it, class logits.

The original loaded the Caffe net, dropped its final SoftMax (``cnn:remove()``) and explained a
one-hot on the pre-softmax logits. Everything here is 0-based (class index 242 is ImageNet's "boxer",
the CLI's ``-label 243``); the CLI converts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from ..engine import ClassTarget, Explanation, explain
from ..formats.caffe import load_caffe
from ..nets.graph import GraphNet


def load_classifier(proto_file: Path, model_file: Path, device: torch.device = torch.device("cpu"),
                    dtype: torch.dtype = torch.float32) -> GraphNet:
    """The Caffe net with its final Softmax removed: Grad-CAM follows the pre-softmax logit.

    The Lua script removed the last module whatever it was; with loadcaffe that was the SoftMax of
    V1 files, but fc8 for V2 files (whose SoftMax loadcaffe had already dropped by a bug). Here only a
    final Softmax is removed, so V1 and V2 files give the same logits. (The VQA image net starts from
    this net too.)
    """
    net = load_caffe(str(proto_file), str(model_file), device=device, dtype=dtype)
    if len(net) and isinstance(net.module_at(len(net)), nn.Softmax):
        net.remove_last()
    return net


def explain_classes(
    net: nn.Module, image: torch.Tensor, layer: str | int, classes: Sequence[Optional[int]],
    *, names: Sequence[str] = (),
) -> tuple[Explanation, list[list[int]]]:
    """Explain K classes for a batch of N images from one forward.

    Args:
        image: (N, C, H, W) preprocessed for ``net``.
        classes: K 0-based class indices; None = each image's predicted class.
        names: how the user named each class, for the out-of-range message (e.g. "-label 1001").
    Returns:
        the explanation (K targets) and, per image, the 0-based class index of each target.
    """
    targets = [ClassTarget(c, label=names[k] if k < len(names) else "") for k, c in enumerate(classes)]
    expl = explain(net, image, layer, targets)
    predicted = expl.scores.reshape(expl.scores.shape[0], -1).argmax(dim=1).tolist()
    return expl, [[p if c is None else c for c in classes] for p in predicted]
