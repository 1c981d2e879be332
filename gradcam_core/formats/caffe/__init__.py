"""Caffe files -> a :class:`~gradcam_core.nets.graph.GraphNet`: ``load_caffe(prototxt, caffemodel)``.

* :mod:`.prototxt`  the text format (deploy files) -> a generic message tree, line numbers in errors
* :mod:`.wire`      the binary format (caffemodels): protobuf wire decoding, blob data mapped, not copied
* :mod:`.schema`    caffe.proto's field numbers, V1 enum names -> V2 type strings, blob shape rules
* :mod:`.build`     ``load_caffe``: the net from the prototxt (layers built by :mod:`gradcam_core.nets.layers`),
                    the weights by layer name from the caffemodel; ``planned_blobs``: the blob shapes a
                    prototxt's layers take (to write a caffemodel for it)
"""
from .build import load_caffe, planned_blobs

__all__ = ["load_caffe", "planned_blobs"]
