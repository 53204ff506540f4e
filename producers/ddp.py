"""A DDP communication hook that makes uneven batches give the global-batch mean gradient.

Rank ``r``'s local gradient is the mean over its ``b_r`` samples (the loss must
use ``reduction="mean"``, PyTorch's default). DDP's default hook averages the
ranks' gradients, which would over-weight the samples of small batches. This
hook multiplies rank ``r``'s bucket by ``b_r / B`` and all-reduces with SUM:
``sum_r (b_r / B) * mean_r = (1 / B) * sum over the global batch``. The loader
sets ``scale`` when it hands out the batch, i.e. before that step's backward.
Not for gradient accumulation over several batches per optimizer step.

The hook also stamps ``ready_at`` (perf_counter) each time a bucket is ready:
the last stamp of a step is when this rank's own backward finished, before it
waits for its peers in the all-reduce. The loader uses it as the rank's busy
time (see ``ShardSenseRuntime(compute_timing=...)``).

(No ``from __future__ import annotations`` here: DDP checks the hook's
annotations at run time and rejects string annotations.)
"""

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["WeightState", "attach_weighted_mean", "weighted_mean_hook"]


@dataclass
class WeightState:
    """This rank's share of the current global batch, and the group DDP reduces over."""

    scale: float = 1.0
    group: Any = None
    ready_at: float = 0.0


def weighted_mean_hook(
    state: WeightState, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """Scale by the rank's share, then SUM-allreduce (no division by world size)."""
    state.ready_at = time.perf_counter()
    buffer = bucket.buffer()
    buffer.mul_(state.scale)
    fut = dist.all_reduce(buffer, group=state.group, async_op=True).get_future()

    def unpack(f: torch.futures.Future[Any]) -> torch.Tensor:
        return f.value()[0]  # type: ignore[no-any-return,unused-ignore]

    return fut.then(unpack)


def attach_weighted_mean(model: Any) -> WeightState:
    """Register the hook on a DistributedDataParallel ``model``; returns its state."""
    register = getattr(model, "register_comm_hook", None)
    if register is None:
        raise ValueError(
            f"model must be a torch.nn.parallel.DistributedDataParallel, got {type(model).__name__}"
        )
    state = WeightState(group=getattr(model, "process_group", None))
    register(state, weighted_mean_hook)
    return state
