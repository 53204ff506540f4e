"""A simulated training job on the real Kafka clients: the planner tests' moving parts.

Each :class:`SimJob` runs in its own thread like a job's ranks would: its
ranks' batch timings go through :class:`KafkaTimingSink` (one per rank), rank
0 publishes the job's first map and follows the newest one through
:class:`KafkaMapSource`, applying it at the next step (the runtime's agreement
is tested elsewhere). Speeds come from :class:`SimulatedFleet`; steps are paced
in real time so the processor sees a live job.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from producers.mapfeed import KafkaMapSource
from producers.maps import JobShape, elastic_map, map_problem
from producers.simulate import SimulatedFleet
from producers.telemetry import KafkaTimingSink
from shardsense.events import ShardMap
from shardsense.settings import Settings

__all__ = ["SimJob"]


@dataclass
class SimJob:
    """One job of ``world`` ranks; ``slow`` ranks run ``slowdown`` times slower from the start."""

    settings: Settings
    world: int = 3
    slow: tuple[int, ...] = (1,)
    slowdown: float = 2.0
    num_shards: int = 48
    global_batch: int = 48
    steps_per_epoch: int = 100
    s_per_sample: float = 0.0004
    #: (step of the map's first use, map) for every map this job trained under
    history: list[tuple[int, ShardMap]] = field(default_factory=list)
    step: int = 0

    def __post_init__(self) -> None:
        self.shape = JobShape(self.settings.job_id, self.global_batch * self.steps_per_epoch,
                              self.num_shards, self.global_batch)
        self.fleet = SimulatedFleet(self.world, self.slow, self.slowdown,
                                    base_s_per_sample=self.s_per_sample, jitter=0.03)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.settings.job_id}",
                                        daemon=True)

    def start(self) -> SimJob:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def current(self) -> ShardMap:
        return self.history[-1][1]

    def _run(self) -> None:
        maps = KafkaMapSource(self.settings)
        sinks = [KafkaTimingSink(self.settings, r) for r in range(self.world)]
        try:
            first = elastic_map(self.shape, 1, self.world, None, reason="first map (rank 0)")
            maps.publish(first)
            self.history.append((0, first))
            while not self._stop.is_set():
                self._step(maps, sinks)
        finally:
            for sink in sinks:
                sink.close()
            maps.close()

    def _step(self, maps: KafkaMapSource, sinks: list[KafkaTimingSink]) -> None:
        latest = maps.latest()
        if (latest is not None and latest.map_version > self.current.map_version
                and map_problem(latest, self.shape, self.world) is None):
            self.history.append((self.step, latest))
        sizes = self.current.batch_sizes
        times = self.fleet.step_times(sizes)
        epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
        now = time.time()
        for rank, sink in enumerate(sinks):
            sink.offer(epoch, in_epoch, sizes[rank], 0.0001, times[rank],
                       self.current.map_version, now)
        self.step += 1
        time.sleep(max(times) + 0.002)
