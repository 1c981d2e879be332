"""The command-line front ends: options named and converted as the Lua scripts' ``torch.CmdLine``, errors
as one line and an exit code, and how each program's options become a task (:mod:`gradcam_core.run.task`)
and its targets.

* :mod:`.app`             ``run_cli``: python-fire, argv normalisation, errors -> exit codes
* :mod:`.options`         option values (ints, choices, several targets in one value)
* :mod:`.paths`           the files, folders and devices options name
* :mod:`.shapecheck`      an ``-input_sz`` the network cannot take -> one line
* :mod:`.optiontable`     every option once; each command's table
* :mod:`.program`         ``run_task``: a loaded task over the images (layer, lines, every method's files)
* :mod:`.classification`, :mod:`.vqa`, :mod:`.captioning`  the three programs
* :mod:`.commands`        their options (``main``) and console scripts; the top-level scripts run them
"""
