"""The layer builders, ONE FILE PER FAMILY, each holding the Caffe and the Torch7 builders of its family
and the shape rules of the modules they make (see :mod:`gradcam_core.nets.registry`):

* :mod:`.structure`   Caffe Input/Data layers and Split; Torch7 Identity
* :mod:`.merge`       Caffe Concat, Eltwise, Slice (several bottoms or tops)
* :mod:`.conv`        Caffe Convolution (grouped, depthwise), Deconvolution; Torch7 SpatialConvolution(MM)
* :mod:`.pool`        Caffe Pooling; Torch7 SpatialMax/AveragePooling
* :mod:`.norm`        Caffe LRN, BatchNorm, Scale, Bias; Torch7 SpatialCrossMapLRN, Normalize
* :mod:`.linear`      Caffe InnerProduct, Flatten; Torch7 Linear, View, Reshape
* :mod:`.shape`       Caffe Reshape, Crop
* :mod:`.activation`  ReLU, Sigmoid, TanH of both formats; Caffe PReLU, ELU, Power, AbsVal, BNLL
* :mod:`.softmax`     Caffe Softmax; Torch7 SoftMax, LogSoftMax
* :mod:`.dropout`     Dropout of both formats

Importing this package registers all of them. A new layer type is one decorated function in its
family's file (or a new file imported here).
"""
from . import activation, conv, dropout, linear, merge, norm, pool, shape, softmax, structure  # noqa: F401 (registration)
