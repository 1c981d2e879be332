#!/usr/bin/env python3
"""Grad-CAM for semantic segmentation (torchvision's FCN / DeepLabV3 / LR-ASPP, or an ONNX model).

    python segmentation.py -arch deeplabv3_resnet50 -model_file deeplabv3.pth -label person
    python segmentation.py -model_file seg.onnx -input_image_path photos/ -label -1 -save_overlay 1

Run with ``--help`` for the options, the targets (a class's predicted pixels, or -mask), folder and
glob mode, and the output names.
"""
from gradcam_core.cli.app import run_cli
from gradcam_core.cli.commands.segmentation import IMAGE, main  # noqa: F401 (the script's names)

if __name__ == "__main__":
    run_cli(main)
