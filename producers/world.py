"""Rank/world arithmetic and the one collective the runtime needs: rank 0 broadcasts.

With torch.distributed initialised, ``World.detect`` reads rank and size from it
and ``broadcast`` sends rank 0's object to every rank (through a gloo side
group when the default backend is not gloo, since NCCL cannot carry Python
objects on CPU). Without it, one process plays every rank and ``broadcast``
returns its argument: the single-process mode of tests and demos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["World"]

T = TypeVar("T")


def _dist() -> Any:
    """torch.distributed if torch is installed and a process group is up, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # torch is an optional extra
        return None
    if dist.is_available() and dist.is_initialized():
        return dist
    return None


@dataclass
class World:
    """This process's place in the job: ``rank`` of ``size``, distributed or not."""

    rank: int = 0
    size: int = 1
    distributed: bool = False
    _group: Any = field(default=None, repr=False)

    @classmethod
    def detect(cls, size: int | None = None) -> World:
        """From torch.distributed when initialised; else one process of ``size`` ranks."""
        dist = _dist()
        if dist is None:
            if size is not None and size < 1:
                raise ValueError(f"num_workers must be >= 1, got {size}")
            return cls(0, size or 1, False)
        world = dist.get_world_size()
        if size is not None and size != world:
            raise ValueError(
                f"num_workers ({size}) differs from torch.distributed's world size ({world})"
            )
        group = None
        if dist.get_backend() != "gloo":
            group = dist.new_group(backend="gloo")  # collective: every rank calls detect
        return cls(dist.get_rank(), world, True, group)

    @property
    def is_coordinator(self) -> bool:
        """Whether this process decides (rank 0, or the only process)."""
        return self.rank == 0

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (identity without torch.distributed)."""
        if not self.distributed:
            return obj
        dist = _dist()
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return box[0]  # type: ignore[return-value]
