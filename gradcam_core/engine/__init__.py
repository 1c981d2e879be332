"""The engine: Grad-CAM, Guided Backprop and Guided Grad-CAM from one forward pass, on any ``nn.Module``.

* :mod:`.core`         ``explain`` and ``Explanation``: the forward, the backwards, the channel-weight rule
* :mod:`.targets`      what is explained: ``ClassTarget``, ``SegmentationTarget`` and the protocol every target follows
* :mod:`.guided`       the switchable (plain / guided) ReLUs
* :mod:`.torch7_conv`  Torch7's convolution numerics for the guided forward
"""
from .core import Explanation, explain, release_workspace, resolve_layer
from .targets import ClassTarget, SegmentationTarget, Target

__all__ = ["ClassTarget", "Explanation", "SegmentationTarget", "Target", "explain", "release_workspace", "resolve_layer"]
