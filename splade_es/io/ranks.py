"""Sharding work across ``torchrun`` ranks (several GPUs or machines), with gloo for coordination."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ranks:
    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls) -> Ranks:
        """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them; one rank otherwise."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def default_device(self) -> str | None:
        """Each rank its own GPU (cuda:LOCAL_RANK) when several ranks share a machine."""
        import torch

        if self.world_size > 1 and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return None


class Group:
    """Barrier / broadcast / gather over the ranks; no-ops for a single process."""

    def __init__(self, ranks: Ranks) -> None:
        self.ranks = ranks
        self._dist = None
        if ranks.world_size > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo")
            self._dist = dist

    @classmethod
    def single(cls) -> Group:
        """One process, no collectives."""
        return cls(Ranks(0, 1, 0))

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self._dist is None:
            return value
        box = [value]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (on every rank)."""
        if self._dist is None:
            return [value]
        boxes: list[Any] = [None] * self.ranks.world_size
        self._dist.all_gather_object(boxes, value)
        return boxes

    def close(self) -> None:
        if self._dist is not None and self._dist.is_initialized():
            self._dist.destroy_process_group()
