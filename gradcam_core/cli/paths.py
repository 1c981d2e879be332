"""The files, folders and devices the options name: checked before any work, one line naming the option."""
from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data import IMAGES, SQUEEZENET, bundled
from ..errors import GradCamError

if TYPE_CHECKING:
    from ..run.inputs import Inputs

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
"""The folder holding the package: a source checkout, or site-packages once installed."""
CHECKOUT: Path | None = PROJECT_DIR if (PROJECT_DIR / "scripts" / "download_models.sh").is_file() else None
"""The source checkout the package runs from (where scripts/download_models.sh puts the original's
models), or None in an installed package."""


def device_for(gpuid: int) -> Any:
    """``-gpuid`` as the Lua scripts read it: -1 = CPU, N >= 0 = the N-th CUDA device (0-based).

    Under ``torchrun`` (WORLD_SIZE > 1), -gpuid >= 0 means one GPU per rank: ``cuda:LOCAL_RANK``.
    """
    import torch

    from ..run.shards import Shard

    if gpuid < 0:
        return torch.device("cpu")
    shard = Shard.from_env()
    if shard.world > 1:
        gpuid = shard.local_rank
    if not torch.cuda.is_available():
        raise GradCamError(
            f"-gpuid {gpuid} asks for a GPU, but CUDA is not available on this machine; "
            "run with -gpuid -1 to use the CPU"
        )
    count = torch.cuda.device_count()
    if gpuid >= count:
        which = f"-gpuid {gpuid}"
        if shard.world > 1:
            which = f"rank {shard.rank} uses cuda:LOCAL_RANK = cuda:{gpuid}, which"
        raise GradCamError(f"{which} does not exist: this machine has {count} CUDA device(s) (0..{count - 1})")
    return torch.device(f"cuda:{gpuid}")


def stat_option_path(option: str, value: str, path: Path) -> os.stat_result | None:
    """``os.stat(path)`` (symlinks followed) for a path that option ``-option value`` names; None if
    nothing is there (``ENOENT``, or ``ENOTDIR``: a file where a folder is expected on the way).

    Every check of an option's path goes through here: any other OSError - a name longer than the
    file system allows, a folder on the way that may not be searched, a loop of symlinks, an I/O
    error - is a GradCamError naming the option, not an internal error."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise GradCamError(f"-{option} {value}: {_why(err)}") from None


def _why(err: OSError) -> str:
    reason = (err.strerror or str(err)).lower()
    if err.errno == errno.ENAMETOOLONG:
        return f"{reason} (a name in it is longer than the file system allows, usually 255 bytes)"
    if err.errno == errno.EACCES:
        return f"{reason} (a folder on the way cannot be searched)"
    return reason


def _require_value(name: str, value: str) -> None:
    """An empty path would mean the current folder (``Path('')`` is ``.``): refused, naming the option."""
    if not value:
        raise GradCamError(f"-{name} is empty: give a file name")


def input_path(name: str, value: str, default: str, *, hint: str = "") -> Path:
    """Resolve a file option. A value the user left at its default is looked up in the current
    folder, then, in a source checkout, in the checkout (where scripts/download_models.sh puts models),
    then, for the original's sample image (``images/cat_dog.jpg``), among the package's own images; a
    missing file is a GradCamError naming the option and, for defaults, how to get it."""
    _require_value(name, value)
    path = Path(value).expanduser()
    st = stat_option_path(name, value, path)
    if st is None and value == default:
        for candidate in _default_places(value):
            if (st := stat_option_path(name, value, candidate)) is not None:
                path = candidate
                break
    if st is None:
        extra = f"; {hint}" if hint and value == default else ""
        raise GradCamError(f"-{name}: {value} not found{extra}")
    if stat.S_ISDIR(st.st_mode):
        raise GradCamError(f"-{name}: {value} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):  # reading a pipe would wait forever, /dev/zero would never end
        raise GradCamError(f"-{name}: {value} is not a regular file (a device, pipe or socket)")
    if not os.access(path, os.R_OK):
        raise GradCamError(f"-{name}: {value} is not readable")
    return path


def _default_places(value: str) -> list[Path]:
    """Where else a default file is looked for: the checkout, then the package's data for a path in
    ``images/`` or ``models/squeezenet1_1/`` (the folders a checkout links to it)."""
    places = [CHECKOUT / value] if CHECKOUT is not None else []
    parts = Path(value).parts
    if len(parts) > 1 and parts[0] == IMAGES:
        places.append(bundled(IMAGES).joinpath(*parts[1:]))
    elif len(parts) > 2 and parts[:2] == ("models", SQUEEZENET):
        places.append(bundled(SQUEEZENET).joinpath(*parts[2:]))
    return places


def input_images(name: str, value: str, default: str, out_dir: Path) -> Inputs:
    """``-input_image_path``: one image file, or a folder or glob of images (see :mod:`gradcam_core.run.inputs`).

    A single file resolves as :func:`input_path` does and keeps the Lua names in ``out_dir``; in folder
    and glob mode each image's files go into ``out_dir/<its relative path>/``.
    """
    from ..run import inputs

    _require_value(name, value)
    stat_option_path(name, value, Path(value).expanduser())  # a name too long, a folder that cannot be searched
    if inputs.is_multi_image(value):
        root, _ = inputs.split_pattern(value)
        stat_option_path(name, value, root)  # a glob's fixed prefix
        return inputs.find_images(name, value, out_dir)
    return inputs.Inputs.single(input_path(name, value, default), out_dir)


def check_out_dir(value: str) -> Path:
    """Check, before any work, that ``-out_path`` is a folder we can write or create; create nothing.

    The folder (with its parents) is made only when the images are written (``outputs.write_all``),
    so a command that fails on its inputs leaves no trace. The Lua scripts concatenated
    ``out_path .. name`` (``-out_path out`` wrote ``outclassify_...``) and created only the last
    folder; here ``-out_path`` is always a folder ('' is the current folder, as in Lua)."""
    out = Path(value or ".").expanduser()
    existing = out
    while (st := stat_option_path("out_path", value, existing)) is None and existing != existing.parent:
        existing = existing.parent
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise GradCamError(f"-out_path {value}: {existing} is not a folder")
    problem = _cannot_create_in(existing)
    if problem:
        what = "the folder is not writable" if existing == out else f"cannot create it in {existing}"
        raise GradCamError(f"-out_path {value}: {what} ({problem})")
    return out


def _cannot_create_in(folder: Path) -> str | None:
    """Why nothing can be created in ``folder``, or None. Tried for real (a folder made and removed at
    once): permission bits say nothing for root, on read-only mounts or in /proc."""
    probe = folder / f".gradcam-probe-{secrets.token_hex(6)}"
    try:
        probe.mkdir()
    except OSError as err:
        return err.strerror or str(err)
    probe.rmdir()
    return None


MODELS_HINT = "run scripts/download_models.sh to fetch the original models, or pass the file explicitly"

BUNDLED_STATE_DICTS = {"squeezenet1_1": (SQUEEZENET, "squeezenet1_1.pth")}
"""The torchvision state_dicts shipped in the package (:mod:`gradcam_core.data`), by architecture."""


def shown_bundled(folder: str, name: str) -> Path:
    """How a message names the package's file ``folder/name``: ``models/<folder>/<name>`` where that
    leads to it from the current folder (a checkout), else its full path."""
    path = bundled(folder) / name
    relative = Path("models", folder, name)
    return relative if relative.is_file() and relative.resolve() == path.resolve() else path


def bundled_classifier_hint() -> str:
    """The options that explain the bundled SqueezeNet 1.1, for a message about a missing model."""
    return (f"the bundled SqueezeNet 1.1 is -proto_file {shown_bundled(SQUEEZENET, 'deploy.prototxt')} "
            f"-model_file {shown_bundled(SQUEEZENET, 'squeezenet1_1.caffemodel')}")


def arch_weights_missing(arch: str) -> GradCamError:
    """The one line for ``-arch`` with ``-model_file`` left at its default (a Caffe file, which no
    torchvision architecture can load): the architecture's weights are a state_dict the user names;
    nothing is downloaded. Where the package ships that architecture's weights, the line says where."""
    where = ""
    shipped = BUNDLED_STATE_DICTS.get(arch.lower())
    if shipped is not None and (bundled(shipped[0]) / shipped[1]).is_file():
        where = f" (the project ships one: -model_file {shown_bundled(*shipped)})"
    return GradCamError(f"-arch {arch} needs its weights: give its torchvision state_dict (a .pth file of "
                        f"model.state_dict()) with -model_file{where}; nothing is downloaded")
