"""The local web demo: ``python -m gradcam_core.web`` (``gradcam-web``).

* :mod:`.demo`      the loaded models of the three tasks and one explanation per request (tasks/ and
  run/'s functions: the PNGs are the CLI's files)
* :mod:`.app`       the Starlette app: the page, ``GET /api/config``, ``POST /api/explain``, the guards
  (Host names, upload size, a bounded queue)
* :mod:`.__main__`  the command: the CLIs' model options, uvicorn
* ``static/``       the page: plain HTML, CSS and JavaScript, nothing fetched from elsewhere
"""
