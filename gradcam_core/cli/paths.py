"""The files, folders and devices the options name: checked before any work, one line naming the option."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..errors import GradCamError

if TYPE_CHECKING:
    from ..run.inputs import Inputs

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent


def device_for(gpuid: int) -> "Any":
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
    if not path.is_file():  # reading a pipe would wait forever, /dev/zero would never end
        raise GradCamError(f"-{name}: {value} is not a regular file (a device, pipe or socket)")
    if not os.access(path, os.R_OK):
        raise GradCamError(f"-{name}: {value} is not readable")
    return path


def input_images(name: str, value: str, default: str, out_dir: Path) -> "Inputs":
    """``-input_image_path``: one image file, or a folder or glob of images (see :mod:`gradcam_core.run.inputs`).

    A single file resolves as :func:`input_path` does and keeps the Lua names in ``out_dir``; in folder
    and glob mode each image's files go into ``out_dir/<its relative path>/``.
    """
    from ..run import inputs

    if inputs.is_multi_image(value):
        return inputs.find_images(name, value, out_dir)
    return inputs.Inputs.single(input_path(name, value, default), out_dir)


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
    problem = _cannot_create_in(existing)
    if problem:
        what = "the folder is not writable" if existing == out else f"cannot create it in {existing}"
        raise GradCamError(f"-out_path {value}: {what} ({problem})")
    return out


def _cannot_create_in(folder: Path) -> Optional[str]:
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
