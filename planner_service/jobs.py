"""The jobs one planner instance plans: a policy each, when to evaluate it, when to forget it.

Evaluation is driven by input, debounced per job: the first prediction or map
of a job that arrives after its last evaluation makes it due ``debounce_s``
later (so one processor batch's predictions of all ranks are weighed once,
together). Every ``interval_s`` every job is due anyway: rank time-outs and
the passing of a scheduled map's apply step need no input to matter. A job
without any input for ``idle_s`` is forgotten (bounded memory: its state is
rebuilt from the compacted map topic and new predictions if it comes back).

>>> from planner_service.decision import PolicyConfig
>>> now = [0.0]
>>> jobs = JobTable(PolicyConfig(), debounce_s=0.02, interval_s=1.0, idle_s=60.0,
...                 clock=lambda: now[0])
>>> _ = jobs.policy("a", partition=0)
>>> jobs.touch("a"); jobs.due()
[]
>>> now[0] = 0.03; jobs.due(), jobs.due()
(['a'], [])
>>> now[0] = 61.0; jobs.expire()
['a']
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from planner_service.decision import PolicyConfig
from planner_service.policy import PlanPolicy

__all__ = ["Job", "JobTable"]


@dataclass
class Job:
    """One job's policy, the partition it came from, and its evaluation clock."""

    policy: PlanPolicy
    partition: int
    due_at: float = math.inf  # when input makes it due (inf: no new input)
    swept_at: float = 0.0  # last evaluation by the sweep or by input
    skip_recorded_at: float = field(default=-math.inf)  # last stored 'skipped' decision


class JobTable:
    """Policies by job id, with debounced evaluation and idle expiry."""

    def __init__(
        self, config: PolicyConfig, *, debounce_s: float, interval_s: float, idle_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if debounce_s < 0 or interval_s <= 0 or idle_s <= 0:
            raise ValueError(f"debounce_s >= 0, interval_s > 0, idle_s > 0 needed, got "
                             f"{debounce_s}, {interval_s}, {idle_s}")
        self.config = config
        self.debounce_s, self.interval_s, self.idle_s = debounce_s, interval_s, idle_s
        self.clock = clock
        self._jobs: dict[str, Job] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[tuple[str, Job]]:
        return iter(list(self._jobs.items()))

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def policy(self, job_id: str, partition: int) -> PlanPolicy:
        """The job's policy (a new one for a job not seen yet, or seen on another partition)."""
        job = self._jobs.get(job_id)
        if job is None or job.partition != partition:
            job = Job(PlanPolicy(self.config, job_id, clock=self.clock), partition,
                      swept_at=self.clock())
            self._jobs[job_id] = job
        return job.policy

    def touch(self, job_id: str) -> None:
        """New input for the job: due ``debounce_s`` from now unless already due sooner."""
        job = self._jobs.get(job_id)
        if job is not None and math.isinf(job.due_at):
            job.due_at = self.clock() + self.debounce_s

    def due(self) -> list[str]:
        """Jobs to evaluate now: input's debounce passed, or not evaluated for an interval."""
        now = self.clock()
        out = []
        for job_id, job in self._jobs.items():
            if now >= job.due_at or now - job.swept_at >= self.interval_s:
                job.due_at, job.swept_at = math.inf, now
                out.append(job_id)
        return out

    def next_due(self) -> float:
        """Seconds until the next job is due (the loop's poll timeout), at most an interval."""
        now = self.clock()
        soonest = min((min(j.due_at, j.swept_at + self.interval_s)
                       for j in self._jobs.values()), default=now + self.interval_s)
        return max(0.0, soonest - now)

    def record_skip(self, job_id: str) -> bool:
        """Whether a 'skipped' decision of the job is stored now (at most one per interval)."""
        job = self._jobs.get(job_id)
        now = self.clock()
        if job is None or now - job.skip_recorded_at < self.interval_s:
            return False
        job.skip_recorded_at = now
        return True

    def expire(self) -> list[str]:
        """Forget jobs without input for ``idle_s``; returns their ids."""
        now = self.clock()
        idle = [j for j, job in self._jobs.items() if now - job.policy.last_input > self.idle_s]
        for job_id in idle:
            del self._jobs[job_id]
        return idle

    def drop_partitions(self, partitions: set[int]) -> list[str]:
        """Forget the jobs of partitions this instance no longer owns; returns their ids."""
        gone = [j for j, job in self._jobs.items() if job.partition in partitions]
        for job_id in gone:
            del self._jobs[job_id]
        return gone
