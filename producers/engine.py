"""ShardSenseRuntime: the drop-in that turns shard maps into per-rank batches.

    runtime = ShardSenseRuntime(dataset, num_shards=1024, num_workers=world_size,
                                loader=LoaderOptions(loader_workers=4))  # optional
    runtime.attach(ddp_model)            # gradient = mean over the global batch
    loader = runtime.get_dataloader(worker_id=rank)
    for epoch in range(epochs):
        for batch in loader:
            train_step(batch)
        runtime.epoch_end(epoch)

Agreement protocol (``producers.agreement``): at sync points (every
``sync_every`` steps, and at ``epoch_end``) rank 0 picks the newest valid map
and the point it applies from (its own apply point, or the earliest step no
rank has produced), and broadcasts both; every rank schedules exactly that.
Without torch.distributed one process plays all ranks and decides alone.

State: ``state_dict()`` holds epoch, step, seed, the epoch's plan (every map
with its apply step, including decided-but-future ones) and a map decided for
a later epoch. The schedule is a pure function of these, so ``load_state_dict``
replays the same order on any rank; with another world size rank 0 adds an
equal-split map at the resume step.

Timing under DDP: see :meth:`ShardSenseRuntime.compute_time` (busy time, not
the all-reduce wait, so that stragglers stay visible to the predictor).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from producers.agreement import AgreedMap, MapAgreement, Placement
from producers.loader import LoaderOptions, ShardLoader
from producers.maps import JobShape, assignment
from producers.memory import InMemoryMapSource, InMemoryTimingSink
from producers.schedule import EpochSchedule
from producers.seams import MapSource, TimingSink
from producers.shards import EpochOrder, VirtualShards
from producers.world import World
from shardsense.events import ShardMap

__all__ = ["LoaderOptions", "MapStyleDataset", "ShardSenseRuntime"]

log = logging.getLogger(__name__)
#: ``(apply_epoch, apply_step, map)``: a map decided for a later epoch.
Ahead = tuple[int, int, ShardMap]
STATE_FORMAT = 2  # 2 added "ahead"; format 1 states (no map ahead) still load


def _positive(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class MapStyleDataset(Protocol):
    """Anything with ``len()`` and integer indexing: a torch map-style Dataset, a list..."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> Any: ...


class ShardSenseRuntime:
    """Virtual shards + epoch schedule + map agreement + timing, for one training job."""

    def __init__(
        self,
        dataset: MapStyleDataset,
        num_shards: int = 1024,
        num_workers: int | None = None,
        *,
        global_batch_size: int | None = None,
        batch_size: int = 32,
        seed: int = 0,
        job_id: str | None = None,
        max_batch_size: int = 0,
        sync_every: int = 8,
        loader: LoaderOptions | None = None,
        mid_epoch_move_limit: float = 0.25,
        compute_timing: str = "auto",
        sink: TimingSink | Callable[[int], TimingSink] | None = None,
        maps: MapSource | None = None,
        settings: Any = None,
        map_wait_s: float = 5.0,
    ) -> None:
        self.dataset = dataset
        self.world = World.detect(num_workers)
        self.seed = _positive("seed", seed, 0)
        self.sync_every = _positive("sync_every", sync_every, 1)
        self.loader_options = loader or LoaderOptions()
        if not 0.0 <= mid_epoch_move_limit <= 1.0:
            raise ValueError(f"mid_epoch_move_limit must be in [0, 1], got {mid_epoch_move_limit}")
        self.mid_epoch_move_limit = mid_epoch_move_limit
        if compute_timing not in ("auto", "step"):
            raise ValueError(f"compute_timing must be 'auto' or 'step', got {compute_timing!r}")
        self.compute_timing = compute_timing
        self.shards = VirtualShards(len(dataset), num_shards)
        job = job_id or (settings.job_id if settings is not None else "default")
        self.job = self._job_shape(job, num_shards, global_batch_size, batch_size,
                                   max_batch_size)
        # A map decided at a sync point lands on the first step no prefetcher reached.
        self._lead = self.loader_options.prefetch_depth
        self._settings = settings
        self._sink_arg = sink
        self.sinks: dict[int, TimingSink] = {}
        self._loaders: dict[int, ShardLoader] = {}
        self._progress: dict[int, int] = {}
        self._hook: Any = None
        self._synced: set[int] = set()
        self.maps = self._make_maps(maps)
        self._agree = MapAgreement(self.job, self.world, self.maps,
                                   move_limit=mid_epoch_move_limit)
        self._new_epoch(0, [(0, self._agree.initial(map_wait_s))])

    # ------------------------------------------------------------ public API

    @property
    def steps_per_epoch(self) -> int:
        """Same on every rank: ``num_samples // global_batch_size`` (the tail is dropped)."""
        return self._schedule.steps

    @property
    def step(self) -> int:
        """Steps this process's ranks have been handed in the current epoch."""
        return min(self._progress.values(), default=self._start_step)

    @property
    def map_version(self) -> int:
        """Version of the map the last handed-out batch followed (before any: the first map)."""
        return self._schedule.assignment_at(max(self.step - 1, 0)).version

    def get_dataloader(self, worker_id: int | None = None) -> ShardLoader:
        """The loader of rank ``worker_id`` (default: this process's torch.distributed rank)."""
        rank = self.world.rank if worker_id is None else worker_id
        if self.world.distributed and rank != self.world.rank:
            raise ValueError(f"worker_id {rank} is not this process's rank {self.world.rank}")
        if not 0 <= rank < self.world.size:
            raise ValueError(f"worker_id must be in 0..{self.world.size - 1}, got {rank}")
        if rank not in self._loaders:
            self._progress[rank] = self.step
            self._loaders[rank] = ShardLoader(self, rank, self._sink_for(rank),
                                              self.loader_options)
        return self._loaders[rank]

    def attach(self, model: Any) -> Any:
        """Weight each rank's gradient by its share so DDP's update is the global-batch mean."""
        from producers.ddp import attach_weighted_mean

        self._hook = attach_weighted_mean(model)
        return model

    def epoch_end(self, epoch: int) -> None:
        """The safe point for large reshards: rank 0's newest valid map applies from step 0."""
        if epoch != self.epoch:
            raise ValueError(f"epoch {epoch} is not the current epoch {self.epoch}")
        steps = self.steps_per_epoch
        decided = self._agree.at_epoch_end(self.epoch, steps, self._newest,
                                           self._schedule.assignment_at(steps - 1))
        if decided:
            self._place(decided)
        plan, ahead = [(0, self._plan[-1][1])], self._ahead
        if ahead is not None and ahead[0] == self.epoch + 1:
            plan, ahead = [*plan, (ahead[1], ahead[2])], None
        self._new_epoch(self.epoch + 1, plan, ahead=ahead)

    def sync_point(self, step: int) -> None:
        """Called by the loaders every ``sync_every`` steps; runs once per step.

        A map decided here applies from the first step no rank has produced:
        this very step without DataLoader workers (the loader calls this before
        it draws the step's indices), the prefetch depth beyond it with them.
        """
        if step in self._synced:
            return
        self._synced.add(step)
        steps = self.steps_per_epoch
        first = min(max(step + self._lead, self._schedule.position), steps)
        decided = self._agree.at_sync(self.epoch, first, steps, self._newest,
                                      self._schedule.assignment_at(first - 1))
        if decided:
            self._place(decided)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to replay this epoch's order exactly (same on every rank)."""
        return {
            "format": STATE_FORMAT,
            "job_id": self.job.job_id,
            "seed": self.seed,
            "epoch": self.epoch,
            "step": self.step,
            "num_samples": self.job.num_samples,
            "num_shards": self.job.num_shards,
            "global_batch_size": self.job.global_batch_size,
            "world_size": self.world.size,
            "plan": [{"apply_step": s, "map": m.to_dict()} for s, m in self._plan],
            "ahead": None if self._ahead is None else {
                "apply_epoch": self._ahead[0], "apply_step": self._ahead[1],
                "map": self._ahead[2].to_dict()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume where ``state`` stopped; a new world size gets an elastic map at that step."""
        if state.get("format") not in (1, STATE_FORMAT):
            raise ValueError(f"state: unsupported format {state.get('format')!r}")
        for key in ("num_samples", "num_shards", "global_batch_size", "job_id"):
            if state[key] != getattr(self.job, key):
                raise ValueError(f"state: {key} is {state[key]!r}, this runtime has "
                                 f"{getattr(self.job, key)!r}")
        epoch, step = int(state["epoch"]), int(state["step"])
        plan = [(int(e["apply_step"]), ShardMap.from_dict(e["map"])) for e in state["plan"]]
        if not plan or plan[0][0] != 0:
            raise ValueError("state: the plan must start with a map at step 0")
        held = state.get("ahead")
        ahead = None if not held else (int(held["apply_epoch"]), int(held["apply_step"]),
                                       ShardMap.from_dict(held["map"]))
        if plan[-1][1].world_size != self.world.size:
            versions = [m.map_version for _, m in plan] + ([ahead[2].map_version] if ahead else [])
            newest = max(versions)
            plan = [(s, m) for s, m in plan if s < step or s == 0]
            elastic = self._agree.elastic(plan[-1][1], newest, epoch, step)
            plan = [(s, m) for s, m in plan if s < step] + [(step, elastic)]
            ahead = None  # decided for the old world size: the elastic map replaces it
        self.seed = _positive("state: seed", int(state["seed"]), 0)
        self._new_epoch(epoch, plan, start_step=step, ahead=ahead)

    def close(self) -> None:
        """Close loaders, sinks and the map source (flushing what they can, briefly)."""
        for obj in [*self._loaders.values(), *self.sinks.values(), self.maps]:
            close = getattr(obj, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("closing %r failed", obj)

    def __enter__(self) -> ShardSenseRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ used by ShardLoader

    def progress(self, rank: int) -> int:
        return self._progress.get(rank, self._start_step)

    def indices(self, rank: int, step: int) -> list[int]:
        """Rank ``rank``'s sample indices at ``step`` of the current epoch."""
        segs = self._schedule.segments(rank, step, record=self._loaders.keys())
        return self._order.indices(segs)

    def begin_step(self, rank: int, step: int) -> tuple[int, int]:
        """Mark ``step`` handed out; set the gradient weight. Returns (map version, samples)."""
        a = self._schedule.assignment_at(step)
        samples = a.batch_sizes[rank]
        self._progress[rank] = step + 1
        if self._hook is not None and rank == self.world.rank:
            self._hook.scale = samples / self.job.global_batch_size
        return a.version, samples

    def compute_time(self, rank: int, handed_out: float, next_call: float) -> float:
        """``compute_s`` of a step: next()-to-next(), or the rank's busy part under DDP.

        In synchronous DDP every rank's next()-to-next() time is the slowest rank's
        (the fast ones wait in the all-reduce), which hides the straggler from the
        predictor. With ``compute_timing="auto"`` and a model attached, the step
        ends when this rank's last gradient bucket was ready (stamped by the hook).
        ``"step"`` always reports next()-to-next().
        """
        hook = self._hook
        if (
            hook is not None
            and rank == self.world.rank
            and self.compute_timing == "auto"
            and handed_out < hook.ready_at <= next_call
        ):
            return float(hook.ready_at - handed_out)
        return next_call - handed_out

    # ------------------------------------------------------------ internals

    def _job_shape(self, job_id: str, num_shards: int, global_batch_size: int | None,
                   batch_size: int, max_batch_size: int) -> JobShape:
        """What every map of this job must fit (the arguments checked, naming each)."""
        _positive("batch_size", batch_size, 1)
        _positive("max_batch_size", max_batch_size, 0)
        size, n = self.world.size, len(self.dataset)
        batch = batch_size * size if global_batch_size is None else global_batch_size
        _positive("global_batch_size", batch, size)
        if batch > n:
            raise ValueError(f"global_batch_size ({batch}) exceeds the dataset length")
        return JobShape(job_id, n, num_shards, batch, max_batch_size)

    def _new_epoch(self, epoch: int, plan: list[AgreedMap], start_step: int = 0,
                   ahead: Ahead | None = None) -> None:
        self.epoch = epoch
        self._order = EpochOrder(self.shards, self.seed, epoch)
        self._schedule = EpochSchedule(
            self.shards.sizes, self._order.priority, self.job.global_batch_size,
            assignment(plan[0][1]),
        )
        self._plan: list[AgreedMap] = []
        self._ahead = ahead
        self._newest = 0 if ahead is None else ahead[2].map_version
        for s, m in plan:
            self._schedule_map(s, m)
        self._schedule.advance_to(start_step)
        self._start_step = start_step
        self._progress = dict.fromkeys(self._progress, start_step)
        self._synced = set()

    def _schedule_map(self, step: int, m: ShardMap) -> None:
        self._schedule.schedule(step, assignment(m))
        self._plan = sorted([(s, old) for s, old in self._plan if s != step] + [(step, m)],
                            key=lambda entry: entry[0])
        self._newest = max(self._newest, m.map_version)
        if step:
            log.info("map v%d applies at epoch %d step %d", m.map_version, self.epoch, step)

    def _place(self, p: Placement) -> None:
        """Apply rank 0's decision: it replaces every map decided earlier and still to come."""
        withdrawn = self._schedule.withdraw(p.withdraw_from)
        if withdrawn or self._ahead is not None:
            log.info("map v%d replaces the maps still to come (epoch %d steps %s%s)",
                     p.shard_map.map_version, self.epoch, withdrawn,
                     "" if self._ahead is None else f", v{self._ahead[2].map_version} ahead")
        self._plan = [(s, m) for s, m in self._plan if s < p.withdraw_from]
        self._ahead = None
        if p.epoch == self.epoch:
            self._schedule_map(p.step, p.shard_map)
        else:
            self._ahead = (p.epoch, p.step, p.shard_map)
            self._newest = max(self._newest, p.shard_map.map_version)
            log.info("map v%d applies at epoch %d step %d", p.shard_map.map_version,
                     p.epoch, p.step)

    def _make_maps(self, maps: MapSource | None) -> MapSource:
        if maps is not None:
            return maps
        if self._settings is not None and self.world.is_coordinator:
            from producers.mapfeed import KafkaMapSource

            return KafkaMapSource(self._settings)  # type: ignore[no-any-return,unused-ignore]
        return InMemoryMapSource()

    def _sink_for(self, rank: int) -> TimingSink:
        if rank not in self.sinks:
            arg = self._sink_arg
            if arg is not None and hasattr(arg, "offer"):
                sink: TimingSink = arg  # type: ignore[assignment]
            elif arg is not None:
                sink = arg(rank)
            elif self._settings is not None:
                from producers.telemetry import KafkaTimingSink

                sink = KafkaTimingSink(self._settings, rank)
            else:
                sink = InMemoryTimingSink()
            self.sinks[rank] = sink
        return self.sinks[rank]
