"""``python -m gradcam_core.evaluate``: the evaluation command (``gradcam-evaluate``), see
:mod:`gradcam_core.cli.commands.evaluate`."""
if __name__ == "__main__":
    from gradcam_core.cli.app import console_script
    from gradcam_core.cli.commands.evaluate import main

    console_script(main, "python -m gradcam_core.evaluate")()
