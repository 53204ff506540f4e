"""Many jobs on one platform: each adapts to its own straggler; planner instances split them.

Real broker, real chDB, real Faust processor and real planner instances (threads
or ``shardsense planner`` processes); the jobs are simulated ranks on the real
Kafka clients (tests/support/simjob.py). Bounds are in steps and counts.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from planner_service.ownership import partition_of
from planner_service.service import Planner
from shardsense.clickhouse import connect
from shardsense.events import Prediction, ShardMap, encode, new_event_id
from shardsense.kafka import producer_config
from shardsense.settings import Settings
from tests.support.simjob import SimJob

pytestmark = pytest.mark.integration


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def favours(m: ShardMap, rank: int) -> bool:
    """``rank``'s batch is the smallest in ``m``, by a margin."""
    return m.batch_sizes[rank] * 1.4 < min(b for r, b in enumerate(m.batch_sizes) if r != rank)


def adapted(job: SimJob, rank: int) -> bool:
    """The job trains under a map that gives its slow rank less."""
    return bool(job.history) and favours(job.current, rank)


def test_two_jobs_at_once_each_adapt_to_their_own_straggler(settings: Settings) -> None:
    """One stack: processor + planner; job A's rank 1 is 2x slow, job B's rank 2 is 3x slow.

    No warm start: the session's chDB holds every earlier test's rows, which a fresh
    job has no use for and which would only slow the processor's start.
    """
    from stream_processors.app import ProcessorThread, create_app
    from stream_processors.service import default_hooks

    settings = settings.replace(processor_warm_start_rows=0)
    client = connect(settings.resolved_clickhouse_url)
    hooks = default_hooks(settings, client)
    processor = ProcessorThread(create_app(settings, client, hooks), log_level="WARNING").start()
    planner = Planner(settings, client=client).start()
    a = SimJob(settings.replace(job_id=f"{settings.job_id}-a"), slow=(1,), slowdown=2.0)
    b = SimJob(settings.replace(job_id=f"{settings.job_id}-b"), world=4, slow=(2,),
               slowdown=3.0, num_shards=64, global_batch=64)
    try:
        wait_for(planner.ready.is_set, 60, "the planner to join and read the maps")
        a.start()
        b.start()
        try:
            wait_for(lambda: adapted(a, 1) and adapted(b, 2), 120, "both jobs to adapt")
        except AssertionError:
            print("planner", planner.stats, "histories", a.history, b.history, "steps",
                  a.step, b.step)
            raise
    finally:
        a.stop()
        b.stop()
        planner.stop()
        processor.stop()
        for h in hooks:
            h.close()  # type: ignore[attr-defined]
    for job, slow in ((a, 1), (b, 2)):
        first_adapted = next(step for step, m in job.history if favours(m, slow))
        print(f"{job.settings.job_id}: adapted at step {first_adapted}, maps "
              f"{[(step, m.map_version, m.batch_sizes) for step, m in job.history]}")
        assert first_adapted < 200, (job.settings.job_id, job.history)
        assert {m.job_id for _, m in job.history} == {job.settings.job_id}
    rows = dict(client.query(
        "SELECT job_id, countIf(decision = 'published') FROM v_planner_decisions "
        "WHERE job_id IN {jobs:Array(String)} GROUP BY job_id",
        parameters={"jobs": [a.settings.job_id, b.settings.job_id]}).result_rows)
    assert rows[a.settings.job_id] >= 1 and rows[b.settings.job_id] >= 1
    assert planner.stats["foreign"] == 0 and len(planner.jobs) == 2


# ---------------------------------------------------------------- two planner processes

PARTITIONS = 4


def co_partitioned(settings: Settings) -> Settings:
    """Fresh topics laid out as docs/EVENTS.md says: job-keyed, same partition count."""
    tag = uuid.uuid4().hex[:8]
    s = settings.replace(topic_predictions=f"p-{tag}.predictions",
                         topic_shard_maps=f"p-{tag}.shard-maps",
                         topic_dead_letters=f"p-{tag}.dead-letters")
    admin = AdminClient(s.kafka_config())
    topics = [NewTopic(s.topic_predictions, num_partitions=PARTITIONS),
              NewTopic(s.topic_shard_maps, num_partitions=PARTITIONS,
                       config={"cleanup.policy": "compact"}),
              NewTopic(s.topic_dead_letters, num_partitions=1)]
    for future in admin.create_topics(topics).values():
        future.result(30)
    return s


def jobs_on_every_partition(prefix: str, per_partition: int = 2) -> list[str]:
    out: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    i = 0
    while any(len(v) < per_partition for v in out.values()):
        job = f"{prefix}-{i}"
        p = partition_of(job.encode(), PARTITIONS)
        if len(out[p]) < per_partition:
            out[p].append(job)
        i += 1
    return [j for v in out.values() for j in v]


class Fleet:
    """Rank 0's first maps and the processor's predictions for many jobs, by hand."""

    def __init__(self, settings: Settings, jobs: list[str]) -> None:
        self.s, self.jobs = settings, jobs
        self.producer = Producer(producer_config(settings))

    def first_maps(self) -> None:
        for job in self.jobs:
            m = ShardMap.build(job, 1, [list(range(r * 8, (r + 1) * 8)) for r in range(3)],
                               [16] * 3, num_samples=48 * 100, worker_id=0)
            self.producer.produce(self.s.topic_shard_maps, encode(m), key=job.encode())
        assert self.producer.flush(10) == 0

    def predict(self, slow_rank: int, step: int) -> None:
        for job in self.jobs:
            for rank in range(3):
                t = 0.02 if rank == slow_rank else 0.01
                p = Prediction(job, rank, new_event_id(), time.time(), time_per_sample_s=t,
                               based_on_step=step, straggler=rank == slow_rank)
                self.producer.produce(self.s.topic_predictions, encode(p), key=job.encode())
        assert self.producer.flush(10) == 0


def latest_maps(settings: Settings, jobs: list[str]) -> dict[str, list[int]]:
    """Every map version of each job on the compacted topic, in order."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from shardsense.events import decode
    from shardsense.kafka import consumer_config

    consumer = Consumer(consumer_config(settings, "t", **{"enable.partition.eof": True}))
    consumer.assign([TopicPartition(settings.topic_shard_maps, p, OFFSET_BEGINNING)
                     for p in range(PARTITIONS)])
    versions: dict[str, list[int]] = {j: [] for j in jobs}
    unread, deadline = set(range(PARTITIONS)), time.monotonic() + 10
    try:
        while unread and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                unread.discard(msg.partition())
                continue
            m = decode(msg.value(), expect=ShardMap)
            assert isinstance(m, ShardMap)
            assert msg.partition() == partition_of(m.job_id.encode(), PARTITIONS)
            versions.setdefault(m.job_id, []).append(m.map_version)
    finally:
        consumer.close()
    return versions


def start_planner(s: Settings, data: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHARDSENSE_CLICKHOUSE_URL": f"chdb://{data}", "PYTHONUNBUFFERED": "1"}
    flags = ["--kafka-bootstrap", s.kafka_bootstrap, "--topic-predictions", s.topic_predictions,
             "--topic-shard-maps", s.topic_shard_maps, "--topic-dead-letters",
             s.topic_dead_letters, "--planner-evidence-steps", "0", "--planner-interval-ms",
             "200", "--planner-learn-bandwidth", "0"]
    return subprocess.Popen([sys.executable, "-m", "infra.cli", "planner", *flags], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def assigned(log: Path) -> list[int] | None:
    found = re.findall(r"assigned prediction partitions \[([\d, ]*)\]", log.read_text())
    return [int(x) for x in found[-1].split(",") if x.strip()] if found else None


def test_two_planner_processes_split_the_jobs_and_one_takes_over_a_killed_one(
    settings: Settings, tmp_path: Path
) -> None:
    s = co_partitioned(settings)
    jobs = jobs_on_every_partition(settings.job_id)
    fleet = Fleet(s, jobs)
    fleet.first_maps()
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_planner(s, tmp_path / f"ch-{i}", logs[i]) for i in range(2)]
    try:
        wait_for(lambda: all(assigned(lg) for lg in logs) and sorted(
            p for lg in logs for p in assigned(lg) or []) == list(range(PARTITIONS)), 90,
            "the partitions to be split between the two instances")
        fleet.predict(slow_rank=1, step=10)
        wait_for(lambda: all(v[-1:] == [2] for v in latest_maps(s, jobs).values()), 60,
                 "every job's map v2 from its owner")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        wait_for(lambda: assigned(logs[1]) == list(range(PARTITIONS)), 90,
                 "the survivor to take every partition")
        time.sleep(0.5)
        fleet.predict(slow_rank=2, step=20)  # a new straggler in every job
        wait_for(lambda: all(v[-1:] == [3] for v in latest_maps(s, jobs).values()), 60,
                 "every job's map v3, the killed instance's jobs too")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(20)
    versions = latest_maps(s, jobs)
    assert all(v == [1, 2, 3] for v in versions.values()), versions  # one writer per version
    for lg in logs:
        assert "Traceback" not in lg.read_text()
