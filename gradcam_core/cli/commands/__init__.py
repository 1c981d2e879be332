"""The three programs' options (``main``, run by python-fire) and their console scripts: ``classification``
(``gradcam-classify``), ``vqa`` (``gradcam-vqa``), ``captioning`` (``gradcam-caption``). The top-level
scripts of a checkout (``classification.py`` ...) run the same ``main``."""
