"""What the perturbation methods (Score-CAM, Ablation-CAM) share besides their :class:`.base.LayerContext`
(which scores replaced activations, :meth:`~.base.LayerContext.score_activations`): the batch size their
forwards can afford, and their progress bar."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from .base import LayerContext

_GIB = 1 << 30
CPU_BATCH_BYTES = _GIB
"""The most memory a CPU batch of perturbed forwards is planned to take."""
CPU_BATCH_IMAGES = 64
"""The most whole-model forwards of one CPU batch (Score-CAM's masked images): past a few dozen
images a batch no longer makes a CPU forward faster per image, it only holds more memory."""


# --- how many perturbed inputs one forward takes ------------------------------------------------------


class OutputBytes:
    """Forward hooks on every module of ``model`` for one forward: :attr:`largest`, the most bytes of
    tensors one module call returned, counting only calls that end after ``after`` has run (all calls
    when None). Use as a context manager; the hooks are removed on exit."""

    def __init__(self, model: nn.Module, after: nn.Module | None = None) -> None:
        self.largest = 0
        self._counting = after is None
        self._handles = [m.register_forward_hook(self._record) for m in model.modules()]
        if after is not None:
            self._handles.append(after.register_forward_hook(self._start))

    def _start(self, *_args: Any) -> None:
        self._counting = True

    def _record(self, _m: nn.Module, _inputs: tuple, output: Any) -> None:
        if self._counting:
            self.largest = max(self.largest, _tensor_bytes(output))

    def __enter__(self) -> OutputBytes:
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    return 0


def forward_bytes(largest_output: int) -> int:
    """The working memory of a no-grad forward whose largest layer output has ``largest_output``
    bytes: that layer's input and output and one more tensor held across it (a skip connection)."""
    return 3 * largest_output


def batch_size(ctx: LayerContext, bytes_per_item: int, items: int, *, whole_model: bool) -> int:
    """How many perturbed inputs of ``bytes_per_item`` working memory each one forward takes: what
    the memory budget (:func:`memory_budget`) holds, at most ``ctx.batch_size`` and ``items``, at
    least 1; for ``whole_model`` forwards on the CPU at most :data:`CPU_BATCH_IMAGES` (a batch of
    replaced activations has no such cap: the larger it is, the fewer times the layers below run)."""
    device = ctx.image.device
    fit = memory_budget(device) // max(bytes_per_item, 1)
    cap = items if ctx.batch_size is None else min(items, ctx.batch_size)
    if whole_model and device.type == "cpu":
        cap = min(cap, CPU_BATCH_IMAGES)
    return max(1, min(fit, cap))


def memory_budget(device: torch.device) -> int:
    """Bytes one batch of perturbed forwards may take: on CUDA half the free device memory; on the
    CPU a quarter of the available memory (the smaller of the system's and the cgroup's), at most
    :data:`CPU_BATCH_BYTES`; 256 MiB where the free memory is unknown."""
    free = free_memory(device)
    if free is None:
        return _GIB // 4
    if device.type == "cuda":
        return free // 2
    return min(free // 4, CPU_BATCH_BYTES)


def free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: ``torch.cuda.mem_get_info`` on CUDA; on the CPU /proc/meminfo's
    MemAvailable, lowered to the room left under a cgroup memory limit; None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    known = [v for v in (_meminfo_available(), _cgroup_room()) if v is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    # cgroup v2 (the container's root), then v1; a limit of "max" (or v1's huge number) is no limit
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            if limit_text == "max":
                return None
            limit, usage = int(limit_text), int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        return None if limit >= 1 << 60 else max(limit - usage, 0)
    return None


def progress_bar(ctx: LayerContext, total: int, desc: str) -> Any:
    """A tqdm bar on stderr counting ``total`` forwarded images: shown only with ``ctx.progress`` on a
    terminal, and only once the forwards have taken a second (``delay=1``); gone when closed."""
    from tqdm import tqdm

    isatty = getattr(sys.stderr, "isatty", None)
    show = ctx.progress and isatty is not None and bool(isatty())
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not show, delay=1, leave=False)
