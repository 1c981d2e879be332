"""The command-line front ends: options named and converted as the Lua scripts' ``torch.CmdLine``, errors
as one line and an exit code, and each program's printed lines, 1-based labels and files.

* :mod:`.app`             ``run_cli``: python-fire, argv normalisation, errors -> exit codes
* :mod:`.options`         option values (ints, choices, several targets in one value)
* :mod:`.paths`           the files, folders and devices options name
* :mod:`.shapecheck`      an ``-input_sz`` the network cannot take -> one line
* :mod:`.classification`, :mod:`.vqa`, :mod:`.captioning`  the three programs
* :mod:`.commands`        their options (``main``) and console scripts; the top-level scripts run them
"""
