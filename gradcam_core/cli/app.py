"""Shared command-line plumbing for the three entry scripts.

* Options are named and defaulted as the Lua scripts' ``torch.CmdLine`` options; python-fire parses
  them, so ``-label 243`` (as ``th`` took it), ``--label 243`` and ``--label=243`` all work.
* Every option reaches the command as the string the user typed; it is converted by the type of the
  option's default, as ``torch.CmdLine`` did, with a clear message when a value does not fit.
* Errors: a :class:`GradCamError` (or a failed allocation) becomes one line on stderr and exit code 2;
  Ctrl-C and SIGTERM one line and exit codes 130 and 143; anything unexpected becomes one line and
  exit code 1. ``--debug`` shows the traceback of any error instead.
"""
from __future__ import annotations

import inspect
import os
import re
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from ..errors import GradCamError
from ..run.batches import write_line
from .options import is_number


def run_cli(main: Callable[..., None], argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``main`` as a fire command over ``argv`` (default ``sys.argv[1:]``) and exit.

    ``main``'s keyword parameters are the options. Unknown options and stray positional words are
    refused BEFORE anything runs (fire would otherwise run the command and complain afterwards).
    Ctrl-C and ``kill`` (SIGTERM) end the run through the same clean-up (temporary files are removed)
    with one line and exit codes 130 and 143; a failed allocation is one line and exit code 2.
    """
    prog = Path(sys.argv[0]).name or "gradcam"
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or "-debug" in args
    args = [a for a in args if a not in ("--debug", "-debug")]
    params = list(inspect.signature(main).parameters)
    if not debug:  # library warnings would break the "one line on stderr" promise of error paths
        warnings.simplefilter("ignore")
    signal.signal(signal.SIGTERM, _raise_terminated)
    if sys.stdout is not None:
        sys.stdout = _ReaderGoneGuard(sys.stdout)
    try:
        import fire  # in the try: a Ctrl-C during this slow import is handled too

        command = _normalize_argv(args, params)
        if command == ["--help"]:
            fill_methods_help(main)
        fire.Fire(main, command=command, name=prog)
    except GradCamError as err:
        if debug:  # where it was raised, for bug reports
            raise
        code = getattr(err, "exit_code", 2)  # 0: a run that completed with skipped images under torchrun
        if code == 0:
            if str(err):
                write_line(sys.stderr, f"{prog}: warning: {err}")
            sys.exit(0)
        _die(prog, str(err), code)
    except KeyboardInterrupt:
        _die(prog, "interrupted", 130)
    except Terminated:
        _die(prog, "terminated", 143)
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - the one place that turns surprises into one line
        if debug:
            raise
        if _out_of_memory(err):
            _die(prog, _memory_message(err), 2)
        msg = f"internal error: {type(err).__name__}: {err}".replace("\n", " ")
        _die(prog, f"{msg} (run with --debug for the traceback)", 1)
    sys.exit(0)


def console_script(main: Callable[..., None], prog: str) -> Callable[[], NoReturn]:
    """A console script (``gradcam-classify = ...:entry``) running ``main`` as ``prog`` (its name in
    messages and ``--help``)."""

    def entry() -> NoReturn:
        sys.argv[0] = prog
        run_cli(main)

    entry.__doc__ = f"The ``{prog}`` command."
    return entry


def seed_torch(seed: int) -> None:
    """torch's random generator seeded (the Lua scripts' ``torch.manualSeed(opt.seed)``); torch is
    imported here, once the options have been read, not when the command is."""
    import torch

    torch.manual_seed(seed)


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that ``finally`` clauses run (see :func:`run_cli`)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _out_of_memory(err: Exception) -> bool:
    """A failed allocation: Python's or numpy's MemoryError, torch's CPU allocator or a CUDA OOM."""
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    )


def _memory_message(err: Exception) -> str:
    """The one line for a failed allocation, with the size torch's allocator reports, if it did."""
    size = re.search(r"tried to allocate (\d+(?:\.\d+)? ?\w*)", str(err))
    return f"out of memory: an allocation of {size.group(1).rstrip('.')} failed" if size else "out of memory"


F = TypeVar("F", bound=Callable[..., Any])

MANY_IMAGES_HELP = """Many images: ``-input_image_path`` may be a folder (every .jpg/.jpeg/.png under it, recursively, any
    case; hidden names and symlinked folders skipped) or a glob (``'photos/*.jpg'``, ``**`` = any depth),
    explained ``-batch_size`` at a time, with a progress bar on stderr when it is a terminal. Each image's
    files go into ``<out_path>/<its path relative to the folder or the glob's fixed prefix>/``, named as
    above (``output/cats/tabby.jpg/{example}``); its {lines} lines are prefixed with its path. A bad image
    is reported on stderr (``skipping <path>: <reason>``) and skipped; exit code 0 if every image was
    explained, 2 if any was skipped (the last stderr line counts them; under ``torchrun``, which turns a
    rank's nonzero exit into its own error, the exit code is 0 either way). Under ``torchrun`` rank r takes
    chunks r, r + W, ... of ``-batch_size`` images of the sorted list (one GPU per rank, cuda:LOCAL_RANK,
    with -gpuid >= 0); the union of the ranks' files is the one-process run's."""


def with_many_images_help(example: str, lines: str) -> Callable[[F], F]:
    """Decorator for the entry scripts' ``main``: fills ``{many_images}`` in its docstring (what
    ``--help`` shows) with :data:`MANY_IMAGES_HELP`."""

    def fill(main: F) -> F:
        main.__doc__ = (main.__doc__ or "").replace("{many_images}", MANY_IMAGES_HELP.format(example=example, lines=lines))
        return main

    return fill


METHODS_HELP = """CAM methods (``-method``; several comma-separated, from one forward; ``-batch_size`` also bounds a
perturbation method's batch of masked images):

{methods}

``gradcam`` writes the original's files. Any other method writes ``<prefix>_<token>_hm_<name>.png``
(``<prefix>_<token>_<name>.png`` with ``-save_as_heatmap 0``), ``<prefix>_gb_<token>_<name>.png`` and, with
``-save_overlay 1``, ``<prefix>_overlay_<token>_<name>.png``, where ``<token>`` is the method's name with
``+`` written ``p`` (``gradcam++`` -> ``gradcampp``); guided backprop, the same for every method, is
``<prefix>_gb_<name>.png``, written once. ``-counterfactual 1`` adds ``_cf`` to the token (``gradcam_cf``
for Grad-CAM, so the original's files are never overwritten) and names guided backprop
``<prefix>_gb_cf_<name>.png``."""


def fill_methods_help(main: Callable[..., Any]) -> None:
    """Fill ``{cam_methods}`` in ``main``'s docstring with the registered CAM methods, one line each
    (:data:`METHODS_HELP`), when ``--help`` is shown: the registry imports torch, which a command
    imports only once it runs."""
    doc = main.__doc__ or ""
    if "{cam_methods}" not in doc:
        return
    from ..engine.methods import lookup, method_names

    lines = "\n".join(f"    {name}: {lookup(name).summary}" for name in method_names())
    main.__doc__ = doc.replace("{cam_methods}", METHODS_HELP.format(methods=lines))


def _die(prog: str, message: str, code: int) -> NoReturn:
    if sys.stdout is not None:  # None when the user closed it (>&-)
        sys.stdout.flush()
    write_line(sys.stderr, f"{prog}: error: {message}")
    sys.exit(code)


class _ReaderGoneGuard:
    """``sys.stdout`` that stops writing, quietly, once its reader has gone (``| head -1``): the
    messages are lost, but the run goes on and writes its images instead of dying half-way."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._guarded(self._stream.write, text)
        return len(text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, call: Callable[..., Any], *args: Any) -> None:
        try:
            call(*args)
        except BrokenPipeError:
            # What is still buffered (and Python's final flush) now goes to /dev/null, not to a
            # multi-line "Exception ignored" report on stderr.
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _normalize_argv(args: list[str], params: list[str]) -> list[str]:
    """``-name value`` / ``--name value`` / ``-name=value`` -> ``--name='value'`` for fire.

    Unknown options and positional words are refused, naming them and the valid options. Each value
    is handed to fire as a Python string literal, so fire passes on exactly what was typed (its own
    guessing would make ``-answer 2`` an int and ``-output_image_name 1e3`` the float 1000.0), and
    a value such as ``-1`` or ``-what?`` is never read as a flag. An option given twice is refused
    (fire would keep the last one silently); several targets go in one value (``-label 3,5``).
    """
    out: list[str] = []
    seen: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _HELP:
            return ["--help"]
        if arg == "--":  # fire's own flags follow; of those, its banner suggests `-- --help`
            rest = args[i + 1 :]
            if any(a in _HELP for a in rest):
                return ["--help"]
            if rest:
                raise GradCamError(f"unexpected argument(s) after '--': {' '.join(rest)!r} (only '-- --help' is understood)")
            break
        if not (arg.startswith("-") and len(arg) > 1) or is_number(arg):
            raise GradCamError(f"unexpected argument {arg!r}: options are given as -name value")
        name, eq, value = arg.lstrip("-").partition("=")
        name = _expand_short(name, params)
        if name not in params:
            valid = " ".join(f"-{p}" for p in params)
            raise GradCamError(f"unknown option -{name}; valid options: {valid}")
        if not eq:
            if i + 1 >= len(args) or _names_an_option(args[i + 1], params):
                raise GradCamError(f"option -{name} needs a value")
            i += 1
            value = args[i]
        if name in seen:
            several = f"give several in one value, as {_SEVERAL[name]}" if name in _SEVERAL else "give it once"
            raise GradCamError(f"option -{name} is given twice (-{name} {seen[name]} and -{name} {value}): {several}")
        seen[name] = value
        out.append(f"--{name}={value!r}")
        i += 1
    return out


_HELP = ("-h", "--help", "-help")
_SEVERAL = {"label": "-label 3,5", "answer": "-answer dog,cat", "caption": "-caption 'a dog|a cat'"}
"""The options that take several targets, and how."""


def _names_an_option(word: str, params: list[str]) -> bool:
    """Whether ``word`` is an option (``-label``, ``--label=3``, ``-g``, ``--help``) rather than a
    value: ``-1``, ``-1e2``, ``-what?`` and ``-`` are values, as they name no option."""
    if word in _HELP:
        return True
    if not word.startswith("-") or is_number(word):
        return False
    return _expand_short(word.lstrip("-").partition("=")[0], params) in params


def _expand_short(name: str, params: list[str]) -> str:
    """fire's help advertises ``-g`` for ``--gpuid`` where the first letter is unique; honour it."""
    if len(name) == 1:
        hits = [p for p in params if p.startswith(name)]
        if len(hits) == 1:
            return hits[0]
    return name
