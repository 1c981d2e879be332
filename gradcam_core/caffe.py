"""The stable entry point for Caffe models: ``load_caffe(prototxt, caffemodel)``.

The code lives in :mod:`gradcam_core.formats.caffe`; this module keeps the documented import path
``from gradcam_core.caffe import load_caffe``.
"""
from .formats.caffe import load_caffe
from .nets.graph import GraphNet

__all__ = ["GraphNet", "load_caffe"]
