"""The rank side of a product-path run: the public runtime with real Kafka clients.

Every rank builds ``ShardSenseRuntime(..., settings=run_settings)`` exactly as a
user's script does: the runtime then creates a ``KafkaTimingSink`` per rank and,
on rank 0, a ``KafkaMapSource``, and rank 0 publishes the first map. The bench
only *watches*: each rank records the map version and batch size of every step
(its own step clock is ``BenchRun.start_wall``), and rank 0 also when a new map
version first showed up in its map source (``seen``) and when its sync point
scheduled it (``agreed``: the step it decided at and the step it applies from).
Nothing here blocks or slows the training loop beyond a dict lookup per step.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.data import TensorDataset

    from benchmarks.bench.worker import BenchRun
    from shardsense.settings import Settings

__all__ = ["MapWatch", "RunControl", "run_product"]


class RunControl:
    """Rank 0 asks the bench's parent for each run's settings; every rank gets them."""

    def __init__(self, rank: int, queue: Any, replies: Any, timeout_s: float = 600.0) -> None:
        self.rank, self.queue, self.replies, self.timeout_s = rank, queue, replies, timeout_s

    def settings_for(self, scenario: str, method: str, shard_bytes: int) -> Settings | None:
        """The run's settings (None: the method needs no services); a collective.

        ``shard_bytes``: the data set's true bytes per shard (for overlays that use it).
        """
        import torch.distributed as dist

        box: list[Any] = [None]
        if self.rank == 0 and self.replies is not None:
            self.queue.put(("prepare", scenario, method, shard_bytes))
            box = [self.replies.get(timeout=self.timeout_s)]
        dist.broadcast_object_list(box, src=0)
        reply = box[0]
        if reply is None:
            return None
        status, value = reply
        if status != "ok":
            raise RuntimeError(f"the bench host could not prepare {scenario}/{method}: {value}")
        return value


class MapWatch:
    """Rank 0's view of the map chain: first seen in the source, agreed at a sync point."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[int, float]] = {}  # version -> (step, wall)
        self.agreed: dict[int, tuple[int, float, int]] = {}  # version -> (step, wall, apply)

    def after_batch(self, runtime: Any, step: int) -> None:
        """Called with the step just handed out (global step count of the run)."""
        latest = runtime.maps.latest()
        now = time.time()
        if latest is not None and latest.map_version not in self.seen:
            self.seen[latest.map_version] = (step, now)
        if (runtime.step - 1) % runtime.sync_every == 0:  # a sync point just ran
            for entry in runtime.state_dict()["plan"]:
                version = int(entry["map"]["map_version"])
                if version not in self.agreed:
                    epoch_base = step - (runtime.step - 1)
                    self.agreed[version] = (step, now, epoch_base + int(entry["apply_step"]))

    def to_dict(self) -> dict[str, Any]:
        return {"seen": {str(v): list(x) for v, x in self.seen.items()},
                "agreed": {str(v): list(x) for v, x in self.agreed.items()}}


def run_product(run: BenchRun, train: TensorDataset, world: int, settings: Settings | None
                ) -> dict[str, Any]:
    """ShardSenseRuntime on ``settings`` (Kafka sink and map source), trained like a user."""
    if settings is None:
        raise ValueError("settings: a product-path run needs the host's settings")
    cfg = run.cfg
    from producers.engine import ShardSenseRuntime

    runtime = ShardSenseRuntime(
        train, num_shards=cfg.num_shards, global_batch_size=cfg.global_batch, seed=cfg.seed,
        sync_every=cfg.sync_every, compute_timing=cfg.timing, settings=settings,
    )
    runtime.attach(run.ddp)
    watch = MapWatch() if run.rank == 0 else None
    versions: list[int] = []
    samples: list[int] = []
    loader = runtime.get_dataloader()
    done = False
    run.start()
    while not done:
        epoch = runtime.epoch
        for batch in loader:
            versions.append(runtime.map_version)
            samples.append(len(batch[0]))
            if watch is not None:
                watch.after_batch(runtime, run.step)
            if done := run.train(batch, epoch):
                break
        else:
            runtime.epoch_end(epoch)
    steps_per_epoch = runtime.steps_per_epoch
    runtime.close()
    out: dict[str, Any] = {"per_rank": {"versions": versions, "samples": samples},
                           "steps_per_epoch": steps_per_epoch, "job_id": settings.job_id}
    if watch is not None:
        out["map_watch"] = watch.to_dict()
    return out
