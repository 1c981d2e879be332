#!/usr/bin/env python3
"""Grad-CAM for image classification: a drop-in for ``th classification.lua``.

    python classification.py -input_image_path images/cat_dog.jpg -label 243 -gpuid -1
    python classification.py -input_image_path photos/ -label 243,283 -batch_size 8
    torchrun --nproc_per_node 2 classification.py -input_image_path 'photos/**/*.jpg'

Run with ``--help`` for the options, several targets in one run, folder and glob mode, and the
output names.
"""
from gradcam_core.cli.app import run_cli
from gradcam_core.cli.commands.classification import IMAGE, MODEL, PROTO, main  # noqa: F401 (the script's names)

if __name__ == "__main__":
    run_cli(main)
