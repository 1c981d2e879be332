"""Shared command-line plumbing for the three entry scripts.

* Options are named and defaulted as the Lua scripts' ``torch.CmdLine`` options; python-fire parses
  them, so ``-label 243`` (as ``th`` took it), ``--label 243`` and ``--label=243`` all work.
* Every option reaches the command as the string the user typed; it is converted by the type of the
  option's default, as ``torch.CmdLine`` did, with a clear message when a value does not fit.
* Errors: a :class:`GradCamError` becomes one line on stderr and exit code 2; anything unexpected
  becomes one line and exit code 1 (``--debug`` shows the traceback instead).
"""
from __future__ import annotations

import inspect
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

from .errors import GradCamError

PROJECT_DIR = Path(__file__).resolve().parent.parent


def run_cli(main: Callable[..., None], argv: Optional[Sequence[str]] = None) -> NoReturn:
    """Run ``main`` as a fire command over ``argv`` (default ``sys.argv[1:]``) and exit.

    ``main``'s keyword parameters are the options. Unknown options and stray positional words are
    refused BEFORE anything runs (fire would otherwise run the command and complain afterwards).
    """
    import fire

    prog = Path(sys.argv[0]).name or "gradcam"
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or "-debug" in args
    args = [a for a in args if a not in ("--debug", "-debug")]
    params = list(inspect.signature(main).parameters)
    if not debug:  # library warnings would break the "one line on stderr" promise of error paths
        warnings.simplefilter("ignore")
    try:
        fire.Fire(main, command=_normalize_argv(args, params), name=prog)
    except GradCamError as err:
        _die(prog, str(err), 2)
    except KeyboardInterrupt:
        _die(prog, "interrupted", 130)
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - the one place that turns surprises into one line
        if debug:
            raise
        msg = f"internal error: {type(err).__name__}: {err}".replace("\n", " ")
        _die(prog, f"{msg} (run with --debug for the traceback)", 1)
    sys.exit(0)


def _die(prog: str, message: str, code: int) -> NoReturn:
    sys.stdout.flush()
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


def _normalize_argv(args: list[str], params: list[str]) -> list[str]:
    """``-name value`` / ``--name value`` / ``-name=value`` -> ``--name='value'`` for fire.

    Unknown options and positional words are refused, naming them and the valid options. Each value
    is handed to fire as a Python string literal, so fire passes on exactly what was typed (its own
    guessing would make ``-answer 2`` an int and ``-output_image_name 1e3`` the float 1000.0), and
    a value such as ``-1`` or ``-what?`` is never read as a flag.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help", "-help"):
            return ["--help"]
        if not (arg.startswith("-") and len(arg) > 1) or _is_number(arg):
            raise GradCamError(f"unexpected argument {arg!r}: options are given as -name value")
        name, eq, value = arg.lstrip("-").partition("=")
        name = _expand_short(name, params)
        if name not in params:
            valid = " ".join(f"-{p}" for p in params)
            raise GradCamError(f"unknown option -{name}; valid options: {valid}")
        if not eq:
            if i + 1 >= len(args):
                raise GradCamError(f"option -{name} needs a value")
            i += 1
            value = args[i]
        out.append(f"--{name}={value!r}")
        i += 1
    return out


def _expand_short(name: str, params: list[str]) -> str:
    """fire's help advertises ``-g`` for ``--gpuid`` where the first letter is unique; honour it."""
    if len(name) == 1:
        hits = [p for p in params if p.startswith(name)]
        if len(hits) == 1:
            return hits[0]
    return name


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


# --- option conversion (torch.CmdLine converted values to the type of the default) ---------------


def as_int(name: str, value: Any) -> int:
    """``value`` as an int, or a GradCamError naming the option."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        f = float(str(value).strip())
    except ValueError:
        raise GradCamError(f"-{name} must be a number, got {value!r}") from None
    if not f.is_integer():
        raise GradCamError(f"-{name} must be a whole number, got {value!r}")
    return int(f)


def as_positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1 (sizes, counts)."""
    n = as_int(name, value)
    if n < 1:
        raise GradCamError(f"-{name} must be at least 1, got {n}")
    return n


def as_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` as one of ``choices``."""
    text = as_str(value)
    if text not in choices:
        raise GradCamError(f"-{name} {text}: expected one of {', '.join(choices)}")
    return text


def as_str(value: Any) -> str:
    """``value`` as the string the user typed (defaults may be other types)."""
    return value if isinstance(value, str) else str(value)


def as_int_list(name: str, value: Any) -> list[int]:
    """``243``, ``"243"``, ``"243,283"`` or a list/tuple of those -> [243, 283]."""
    if isinstance(value, (list, tuple)):
        items: list[Any] = list(value)
    else:
        text = str(value).strip().strip("[]()")
        items = [t for t in text.replace(" ", ",").split(",") if t] if text else []
    if not items:
        raise GradCamError(f"-{name} needs at least one value")
    return [as_int(name, v) for v in items]


# --- devices, paths, output folder ----------------------------------------------------------------


def device_for(gpuid: int) -> "Any":
    """``-gpuid`` as the Lua scripts read it: -1 = CPU, N >= 0 = the N-th CUDA device (0-based)."""
    import torch

    if gpuid < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise GradCamError(
            f"-gpuid {gpuid} asks for a GPU, but CUDA is not available on this machine; "
            "run with -gpuid -1 to use the CPU"
        )
    count = torch.cuda.device_count()
    if gpuid >= count:
        raise GradCamError(f"-gpuid {gpuid} does not exist: this machine has {count} CUDA device(s) (0..{count - 1})")
    return torch.device(f"cuda:{gpuid}")


def input_path(name: str, value: str, default: str, *, hint: str = "") -> Path:
    """Resolve a file option. A value the user left at its default is looked up in the current
    folder, then in the project folder (where scripts/download_models.sh puts models); a missing file
    is a GradCamError naming the option and, for defaults, how to get it."""
    path = Path(value).expanduser()
    if value == default and not path.exists() and (PROJECT_DIR / value).exists():
        path = PROJECT_DIR / value
    if not path.exists():
        extra = f"; {hint}" if hint and value == default else ""
        raise GradCamError(f"-{name}: {value} not found{extra}")
    if path.is_dir():
        raise GradCamError(f"-{name}: {value} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise GradCamError(f"-{name}: {value} is not readable")
    return path


def check_out_dir(value: str) -> Path:
    """Check, before any work, that ``-out_path`` is a folder we can write or create; create nothing.

    The folder (with its parents) is made only when the images are written (``outputs.write_all``),
    so a command that fails on its inputs leaves no trace. The Lua scripts concatenated
    ``out_path .. name`` (``-out_path out`` wrote ``outclassify_...``) and created only the last
    folder; here ``-out_path`` is always a folder."""
    out = Path(value or ".").expanduser()
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise GradCamError(f"-out_path {value}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "the folder is not writable" if existing == out else f"cannot create it in {existing}"
        raise GradCamError(f"-out_path {value}: {what}")
    return out


MODELS_HINT = "run scripts/download_models.sh to fetch the original models, or pass the file explicitly"
