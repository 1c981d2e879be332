"""Caffe model loading (our loadcaffe): ``load_caffe(prototxt, caffemodel) -> CaffeNet``.

Modules: :mod:`.prototxt` (text format), :mod:`.wire` (binary format), :mod:`.schema` (caffe.proto
fields and the V1/V2 interpretation), :mod:`.layers` (layer type -> torch module), :mod:`.net`
(``CaffeNet``, ``load_caffe``), :mod:`.write` (writer for tests and benchmarks).
"""
from .net import CaffeNet, InputSpec, load_caffe

__all__ = ["CaffeNet", "InputSpec", "load_caffe"]
