"""The image side of VQA: the Caffe CNN without its classifier, L2-normalised: the feature ``f``."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...errors import GradCamError
from ...nets.graph import GraphNet
from ...nets.modules import Normalize
from ..classify import load_classifier
from .model import DTYPE, IMAGE_FEATURE_SIZE

NORMALIZE_EPS = 1e-10
"""``nn.Normalize(2)``'s eps, added to the sum of squares inside the square root."""


class ImageFeatureNet(nn.Module):
    """The CNN without its classifier, plus ``nn.Normalize(2)``: (N, 3, S, S) BGR -> (N, 4096).

    Layer names and loadcaffe's 1-based indices resolve through the Caffe net, so
    ``explain(net, x, "relu5_4", ...)`` works as on a :class:`GraphNet`.
    """

    calls_activation_functions = False  # (as GraphNet)

    def __init__(self, cnn: GraphNet) -> None:
        super().__init__()
        self.cnn = cnn
        self.normalize = Normalize(2, NORMALIZE_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.cnn(x))

    def resolve_layer(self, layer: str | int) -> tuple[nn.Module, nn.Module]:
        return self.cnn.resolve_layer(layer)


def load_image_net(
    proto_file: Path, model_file: Path, device: torch.device = torch.device("cpu"), dtype: torch.dtype = DTYPE
) -> ImageFeatureNet:
    """VGG-19 as the script trimmed it: ``cnn:remove()`` twice dropped prob and fc8.

    :func:`~gradcam_core.tasks.classify.load_classifier` removes a final Softmax (of V1 and V2 files
    alike), then the final InnerProduct goes; what is left must end in a 4096-wide feature (fc7).
    """
    net = load_classifier(proto_file, model_file, device, dtype)
    if not len(net) or not isinstance(net.module_at(len(net)), nn.Linear):
        last = net.names[-1] if len(net) else "nothing"
        raise GradCamError(
            f"{model_file}: expected the net to end with its classifier (fc8, then prob); it ends with {last}"
        )
    net.remove_last()
    widths = [m.out_features for m in net if isinstance(m, nn.Linear)]
    if not widths or widths[-1] != IMAGE_FEATURE_SIZE:
        found = f"{widths[-1]} features" if widths else "no fully connected layer"
        raise GradCamError(f"{model_file}: the VQA model reads a {IMAGE_FEATURE_SIZE}-wide fc7 feature; "
                           f"without fc8 this net gives {found}")
    return ImageFeatureNet(net)
