"""Beyond one machine: this process's part of the work under ``torchrun`` (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``). Rank r takes chunks r, r + W, r + 2W, ... of the sorted image list (:class:`Shard`), so
every image is explained in the same batch as in a one-process run and the union of the ranks' files
equals that run's, byte for byte. No process group is needed but for the final count of skipped images.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..errors import GradCamError

T = TypeVar("T")


# ------------------------------------------------------------------------------------------ shards


@dataclass(frozen=True)
class Shard:
    """This process's part of the work under ``torchrun``: rank r of W takes chunks r, r + W, ..."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Shard:
        """Read ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (as torchrun sets them); absent = one process."""
        world = _env_int(env, "WORLD_SIZE", 1)
        rank = _env_int(env, "RANK", 0)
        local = _env_int(env, "LOCAL_RANK", rank)
        if world < 1 or not 0 <= rank < world or local < 0:
            raise GradCamError(f"torch.distributed environment: RANK {rank}, LOCAL_RANK {local} and WORLD_SIZE "
                               f"{world} do not fit (0 <= RANK < WORLD_SIZE)")
        return cls(rank, world, local)

    def take(self, items: Sequence[T], chunk: int = 1) -> list[list[T]]:
        """This rank's chunks of the sorted list cut into consecutive chunks of ``chunk`` items."""
        chunks = [list(items[i : i + chunk]) for i in range(0, len(items), chunk)]
        return chunks[self.rank :: self.world]

    def describe(self) -> str:
        """"" for one process, else "rank r of W"."""
        return "" if self.world == 1 else f"rank {self.rank} of {self.world}"


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise GradCamError(f"torch.distributed environment: {name}={value!r} is not a whole number") from None


def sum_over_ranks(shard: Shard, counts: tuple[int, int]) -> tuple[int, int] | None:
    """(skipped, total) summed over the ranks, or None for one process or without a rendezvous
    (``MASTER_ADDR`` unset).

    A short-lived gloo process group, made only now that this rank's work is done: making it waits
    for every rank, so no rank exits before the others are finished (torchrun stops the remaining
    ranks as soon as one exits with an error, which would cut their shards short), and every rank
    learns whether any image was skipped. The group is always destroyed; one the caller had already
    made is used and kept.
    """
    if shard.world == 1 or not os.environ.get("MASTER_ADDR"):
        return None
    import datetime

    import torch
    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:  # ranks finish at different times: wait for the slowest one, however long its shard takes
        dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world,
                                timeout=datetime.timedelta(days=7))
    try:
        total = torch.tensor(counts, dtype=torch.int64)
        dist.all_reduce(total)
        return int(total[0]), int(total[1])
    finally:
        if own:
            dist.destroy_process_group()
