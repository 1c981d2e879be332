"""Networks as torch modules, whatever format they came from.

* :mod:`.registry`  ONE registry: (format, layer type) -> builder, module class -> shape rule; ``LayerError``
* :mod:`.layers`    the builders, one file per layer family (conv, pool, norm, linear, ...), both formats side by side
* :mod:`.graph`     ``GraphNet``: named layers over named blobs, lookup by name, blob or loadcaffe's number,
                    ``check_input_size`` (the shape plan, ``InputSizeError``)
* :mod:`.modules`   modules PyTorch lacks, shared by the formats (Caffe pooling, View, L2 normalise, ...)
"""
from . import layers as _layers  # noqa: F401 (every builder and shape rule registers itself here)
