#!/usr/bin/env python3
"""Grad-CAM for object detection: a torchvision detector's boxes explained.

    python detection.py -arch fasterrcnn_resnet50_fpn -model_file fasterrcnn.pth -input_image_path street.jpg
    python detection.py -arch fasterrcnn_resnet50_fpn -model_file fasterrcnn.pth -box '10,20,200,310:dog'

Run with ``--help`` for the options, folder and glob mode, and the output names.
"""
from gradcam_core.cli.app import run_cli
from gradcam_core.cli.commands.detection import IMAGE, main  # noqa: F401 (the script's names)

if __name__ == "__main__":
    run_cli(main)
