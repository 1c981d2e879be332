#!/usr/bin/env python3
"""Grad-CAM for image captioning: a drop-in for ``th captioning.lua`` on neuraltalk2 checkpoints.

    python captioning.py -input_image_path images/cat_dog.jpg -caption "a dog and a cat posing for a picture"

Run with ``--help`` for the options, several targets in one run, folder and glob mode, and the
output names.
"""
from gradcam_core.cli.app import run_cli
from gradcam_core.cli.commands.captioning import CAPTION, IMAGE, MODEL, MODEL_HINT, main  # noqa: F401 (the script's names)

if __name__ == "__main__":
    run_cli(main)
