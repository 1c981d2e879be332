#!/usr/bin/env python3
"""Grad-CAM for visual question answering: a drop-in for ``th visual_question_answering.lua``.

    python visual_question_answering.py -input_image_path images/cat_dog.jpg -question 'What animal?' -answer dog
    python visual_question_answering.py -input_image_path photos/ -question 'What animal?' -answer dog,cat

Run with ``--help`` for the options, several targets in one run, folder and glob mode, and the
output names.
"""
from gradcam_core.cli.app import run_cli
from gradcam_core.cli.commands.vqa import HINT, IMAGE, MODEL, PROTO, VOCAB, VQA_MODEL, main  # noqa: F401 (the script's names)

if __name__ == "__main__":
    run_cli(main)
