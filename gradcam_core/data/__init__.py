"""The files shipped inside the package, found through :mod:`importlib.resources` (so they are found
wherever the package is installed, not relative to a source checkout):

* ``squeezenet1_1/``  SqueezeNet 1.1 trained on ImageNet: ``deploy.prototxt`` + ``squeezenet1_1.caffemodel``
  (Caffe), ``squeezenet1_1.pth`` (its torchvision state_dict), ``synset_words.txt``, ``PROVENANCE.md``
* ``images/``         the sample photos (``cat_dog.jpg``, the original's example image, and others)

In a source checkout ``models/squeezenet1_1`` and ``images`` are relative symlinks to these folders, so
the original's command lines (``-input_image_path images/cat_dog.jpg``) keep working from there.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled(name: str) -> Path:
    """The file system path of the bundled file or folder ``name`` (e.g. ``"squeezenet1_1"``).

    The package is installed as files (a wheel, an editable install or a checkout), so its resources
    are real paths, which the Caffe reader maps into memory and the web demo serves."""
    return Path(str(resources.files(__name__) / name))


SQUEEZENET = "squeezenet1_1"
IMAGES = "images"
