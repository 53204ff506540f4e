"""The per-rank data loader: a torch DataLoader driven by the epoch schedule, timed per batch.

Micro-batching choice: **variable batch size**. Each step yields one batch of
exactly ``batch_sizes[rank]`` samples (the rank's share of the constant global
batch), bounded by ``max_batch_size``. We rejected "fixed micro-batch, varying
count under ``no_sync()``" because it quantises every share to a multiple of
the micro-batch (coarse at small global batches), and it breaks the drop-in
loop ``for batch in loader: train_step(batch)``: the user's step would have to
loop over micro-batches. Variable shapes cost nothing on CPU or eager GPU; users
of CUDA graphs / ``torch.compile(dynamic=False)`` should pad to the cap.

Timing: ``data_wait_s`` is the time spent inside ``next()``; ``compute_s`` is
the time from one ``next()`` returning to the next ``next()`` being called (the
training step), or, with a DDP model attached, this rank's busy part of it (see
``ShardSenseRuntime.compute_time``). Both go to the rank's
:class:`~producers.seams.TimingSink`, guarded so that telemetry can never raise
into the training loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from producers.seams import TimingSink

if TYPE_CHECKING:
    from producers.engine import ShardSenseRuntime

__all__ = ["LoaderOptions", "ShardLoader"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoaderOptions:
    """How each rank's torch DataLoader reads: ``ShardSenseRuntime(..., loader=...)``.

    ``loader_workers`` worker processes each prefetch ``prefetch_factor`` batches
    (the runtime applies map changes beyond that depth); ``collate_fn`` and
    ``pin_memory`` go to the DataLoader unchanged.

    >>> LoaderOptions(loader_workers=2).prefetch_depth
    4
    """

    loader_workers: int = 0
    prefetch_factor: int = 2
    collate_fn: Callable[[list[Any]], Any] | None = None
    pin_memory: bool = False

    def __post_init__(self) -> None:
        for name, minimum in (("loader_workers", 0), ("prefetch_factor", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

    @property
    def prefetch_depth(self) -> int:
        """Batches a rank's loader may have produced ahead of the training loop."""
        return self.loader_workers * self.prefetch_factor


class _StepSampler:
    """A torch ``batch_sampler``: the rank's index list per step, from the current step on."""

    def __init__(self, runtime: ShardSenseRuntime, rank: int) -> None:
        self.runtime = runtime
        self.rank = rank

    def __iter__(self) -> Iterator[list[int]]:
        rt = self.runtime
        epoch = rt.epoch
        for step in range(rt.progress(self.rank), rt.steps_per_epoch):
            if rt.epoch != epoch:  # the epoch was ended early; prefetchers stop here
                return
            yield rt.indices(self.rank, step)

    def __len__(self) -> int:
        return max(0, self.runtime.steps_per_epoch - self.runtime.progress(self.rank))


class ShardLoader:
    """Iterate once per epoch; yields collated batches of this rank's share."""

    def __init__(
        self,
        runtime: ShardSenseRuntime,
        rank: int,
        sink: TimingSink,
        options: LoaderOptions | None = None,
    ) -> None:
        from torch.utils.data import DataLoader

        self.runtime = runtime
        self.rank = rank
        self.sink = sink
        #: Exceptions raised by the sink (it must not raise; we still refuse to crash).
        self.telemetry_errors = 0
        opts = options or LoaderOptions()
        extra: dict[str, Any] = {}
        if opts.loader_workers:
            extra = {"prefetch_factor": opts.prefetch_factor, "persistent_workers": True}
        self._loader: DataLoader[Any] = DataLoader(
            runtime.dataset,  # type: ignore[arg-type]
            batch_sampler=_StepSampler(runtime, rank),
            num_workers=opts.loader_workers,
            collate_fn=opts.collate_fn,
            pin_memory=opts.pin_memory,
            **extra,
        )

    def __len__(self) -> int:
        return max(0, self.runtime.steps_per_epoch - self.runtime.progress(self.rank))

    def close(self) -> None:
        """Stop persistent worker processes now rather than at interpreter exit."""
        iterator = getattr(self._loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._loader._iterator = None

    def __iter__(self) -> Iterator[Any]:
        rt, rank = self.runtime, self.rank
        if rt.progress(rank) >= rt.steps_per_epoch:
            log.warning("epoch %d is finished: call runtime.epoch_end(%d) before iterating "
                        "again", rt.epoch, rt.epoch)
        epoch = rt.epoch
        steps = rt.steps_per_epoch
        sync_every = rt.sync_every
        clock, wall = time.perf_counter, time.time
        offer = self._offer
        done = object()
        it = iter(self._loader)
        pending: tuple[int, int, float, int, float] | None = None
        while True:
            t0 = clock()
            if pending is not None:
                step, samples, wait, version, ready = pending
                compute = rt.compute_time(rank, ready, t0)
                offer(epoch, step, samples, wait, compute, version, wall())
                pending = None
            step = rt.progress(rank)
            if step >= steps or rt.epoch != epoch:
                return
            if step and step % sync_every == 0:
                rt.sync_point(step)
            batch = next(it, done)
            if batch is done:
                return
            t1 = clock()
            version, samples = rt.begin_step(rank, step)
            pending = (step, samples, t1 - t0, version, t1)
            yield batch

    def _offer(
        self,
        epoch: int,
        step: int,
        samples: int,
        wait: float,
        compute: float,
        version: int,
        end_ts: float,
    ) -> None:
        try:
            self.sink.offer(epoch, step, samples, wait, compute, version, end_ts)
        except Exception:  # the training loop is sacred
            self.telemetry_errors += 1
            if self.telemetry_errors == 1:
                log.exception("timing sink raised; timings of rank %d are dropped", self.rank)
