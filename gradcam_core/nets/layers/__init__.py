"""The layer builders, ONE FILE PER FAMILY, each holding the Caffe and the Torch7 builders of its family
and the shape rules of the modules they make (see :mod:`gradcam_core.nets.registry`):

* :mod:`.structure`   Caffe Input/Data layers and Split; Torch7 Identity
* :mod:`.conv`        Caffe Convolution; Torch7 SpatialConvolution(MM)
* :mod:`.pool`        Caffe Pooling; Torch7 SpatialMax/AveragePooling
* :mod:`.norm`        Caffe LRN; Torch7 SpatialCrossMapLRN, Normalize
* :mod:`.linear`      Caffe InnerProduct, Flatten; Torch7 Linear, View, Reshape
* :mod:`.activation`  ReLU, Sigmoid, TanH of both formats
* :mod:`.softmax`     Caffe Softmax; Torch7 SoftMax, LogSoftMax
* :mod:`.dropout`     Dropout of both formats

Importing this package registers all of them. A new layer type is one decorated function in its
family's file (or a new file imported here).
"""
from . import activation, conv, dropout, linear, norm, pool, softmax, structure  # noqa: F401 (registration)
