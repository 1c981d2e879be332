"""Model files -> networks (:mod:`gradcam_core.nets`): one subpackage per file format.

* :mod:`.caffe`   prototxt + caffemodel
* :mod:`.torch7`  Torch7 ``.t7`` files (the VQA and neuraltalk2 checkpoints)
"""
