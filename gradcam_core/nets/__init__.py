"""Networks as torch modules, whatever format they came from.

* :mod:`.graph`    ``GraphNet``: named layers over named blobs, lookup by name or loadcaffe's number
* :mod:`.modules`  modules PyTorch lacks, shared by the formats (Caffe pooling, View, L2 normalise, ...)
"""
