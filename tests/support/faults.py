"""Building blocks of the ``faults`` tier: real processes, faults, and what recovery took.

* :func:`fault_settings`: a test's own topics and job id against a given broker.
* :class:`Timeline`: the first time each named thing happened, relative to a fault,
  printed as the recovery table the tests report (never asserted on: the machine is
  shared, tests assert counts and orders).
* :class:`FakeJob`: rank 0's map source, a sink per rank and :class:`FakeRanks`.
* :class:`FakeRanks`: ranks that offer timings to real ``KafkaTimingSink`` s at a steady
  pace from a thread, following the map version a map source holds, with a per-rank
  slowdown that can change mid-run (so "the loop adapted" is observable without DDP).
* :class:`ServiceProcess` / :class:`UpProcess`: ``shardsense processor|planner|console|up``
  as a child process (kill -9, restart, logs); :func:`service_env` gives it a test's
  settings; :func:`query_elsewhere` reads a stopped service's own chDB path.
* :func:`stored_steps`: what reached ClickHouse, per rank.

"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from shardsense.settings import Settings

__all__ = ["FakeJob", "FakeRanks", "ServiceProcess", "Timeline", "UpProcess", "committed",
           "fault_settings", "log_ends", "query_elsewhere", "service_env", "stored_steps",
           "wait_until"]


def fault_settings(bootstrap: str, clickhouse_url: str, data_dir: Path, **extra: Any) -> Settings:
    """Settings with their own job id and topics (created by the caller or the stack)."""
    tag = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap, "clickhouse_url": clickhouse_url,
        "data_dir": str(data_dir), "job_id": f"job-{tag}",
        "topic_timings": f"f-{tag}.timings", "topic_predictions": f"f-{tag}.predictions",
        "topic_shard_maps": f"f-{tag}.shard-maps", "topic_dead_letters": f"f-{tag}.dead-letters",
        "topic_partitions": 2,
    }
    values.update(extra)
    return Settings.from_env({}, **values)


def wait_until(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> float:
    """Poll ``cond`` until truthy; seconds it took. Fails naming ``what`` on timeout."""
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - started


class Timeline:
    """Named moments, each recorded once, relative to ``mark("fault")`` and friends."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.at: dict[str, float] = {}

    def mark(self, name: str) -> float:
        return self.at.setdefault(name, time.monotonic())

    def watch(self, name: str, cond: Callable[[], Any], timeout: float) -> float:
        wait_until(cond, timeout, name)
        return self.mark(name)

    def watch_all(self, conds: dict[str, Callable[[], Any]], timeout: float) -> None:
        """Poll every condition together; each is marked when it first holds."""
        pending = dict(conds)
        started = time.monotonic()
        while pending:
            for name, cond in list(pending.items()):
                if cond():
                    self.mark(name)
                    del pending[name]
            if pending and time.monotonic() - started > timeout:
                raise AssertionError(f"timed out after {timeout:.0f}s: {sorted(pending)}")
            time.sleep(0.05)

    def since(self, name: str, origin: str) -> float:
        return self.at[name] - self.at[origin]

    def report(self, origin: str) -> str:
        """The table the faults tests print (``-s`` or the junit log shows it)."""
        rows = sorted(self.at.items(), key=lambda kv: kv[1])
        lines = [f"{self.title} (seconds after '{origin}'):"]
        lines += [f"  {name:<44} {t - self.at[origin]:+7.2f}" for name, t in rows]
        text = "\n".join(lines)
        print(text, flush=True)
        return text


class FakeRanks:
    """``world`` ranks offering one timing each per ``step_s`` to their sinks (a thread)."""

    def __init__(self, sinks: list[Any], maps: Any, step_s: float = 0.05,
                 samples: int = 16, base_s: float = 0.02) -> None:
        self.sinks = sinks
        self.maps = maps
        self.step_s = step_s
        self.samples = samples
        self.base_s = base_s
        self.slowdown = [1.0] * len(sinks)
        self.step = 0
        self.offered_at: dict[int, float] = {}  # step -> wall time it was offered
        self.max_offer_s = 0.0  # the longest one sink.offer took: telemetry must never block
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-ranks", daemon=True)

    def start(self) -> FakeRanks:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            latest = self.maps.latest() if self.maps is not None else None
            version = latest.map_version if latest is not None else 0
            now = time.time()
            for rank, sink in enumerate(self.sinks):
                share = latest.batch_sizes[rank] if latest is not None else self.samples
                compute = self.base_s * self.slowdown[rank] * share / self.samples
                began = time.perf_counter()
                sink.offer(0, self.step, share, 0.001, compute, version, now)
                self.max_offer_s = max(self.max_offer_s, time.perf_counter() - began)
            self.offered_at[self.step] = now
            self.step += 1
            self._stop.wait(self.step_s)

    def steps_after(self, wall: float) -> set[int]:
        return {s for s, t in list(self.offered_at.items()) if t > wall}


class FakeJob:
    """Rank 0's map source with the job's first map, a sink per rank, and :class:`FakeRanks`."""

    def __init__(self, s: Settings, world: int = 3, shards: int = 48, batch: int = 48) -> None:
        from producers.mapfeed import KafkaMapSource
        from producers.maps import JobShape, elastic_map
        from producers.telemetry import KafkaTimingSink

        self.world, self.batch = world, batch
        self.maps = KafkaMapSource(s)
        self.maps.wait_ready(30)
        self.maps.publish(elastic_map(JobShape(s.job_id, 48_000, shards, batch), 1, world, None,
                                      reason="first map", at=(0, 0)))
        self.sinks = [KafkaTimingSink(s, r) for r in range(world)]
        self.ranks = FakeRanks(self.sinks, self.maps).start()

    def version(self) -> int:
        latest = self.maps.latest()
        return latest.map_version if latest else 0

    def adapts(self, tl: Timeline, rank: int, slowdown: float, shrinks: bool,
               timeout: float) -> int:
        """Change ``rank``'s speed; wait for a newer map giving it less (or its share back)."""
        version = self.version()
        self.ranks.slowdown[rank] = slowdown
        tl.mark(f"rank {rank} made {slowdown}x")
        fair = self.batch // self.world

        def planned() -> bool:
            m = self.maps.latest()
            share = m.batch_sizes[rank] if m else 0
            return bool(m and m.map_version > version and
                        (share < fair if shrinks else share >= fair))

        tl.watch(f"new map v>{version} in force on rank 0", planned, timeout)
        return self.version()

    def stop(self) -> None:
        self.ranks.stop()
        for sink in self.sinks:
            sink.close(2.0)
        self.maps.close(2.0)


def stored_steps(client: Any, job_id: str) -> dict[int, set[int]]:
    """Per rank, the steps ``v_batch_timings`` holds for the job (each once: FINAL)."""
    rows = client.query(
        "SELECT worker_id, groupUniqArray(step) FROM v_batch_timings "
        "WHERE job_id = {j:String} GROUP BY worker_id", parameters={"j": job_id},
    ).result_rows
    return {int(w): {int(s) for s in steps} for w, steps in rows}


class ServiceProcess:
    """``shardsense COMMAND ARGS`` in a child process, with its output kept for assertions."""

    def __init__(self, command: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.command = command
        self.args = args
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> Self:
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", self.command, *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip())

    def saw(self, needle: str) -> bool:
        return any(needle in line for line in list(self.lines))

    def wait_for(self, needle: str, timeout: float) -> float:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None and not self.saw(needle):
                raise AssertionError(f"{self.command} exited ({self.proc.returncode}) before "
                                     f"{needle!r}:\n" + "\n".join(self.lines[-40:]))
            return self.saw(needle)

        return wait_until(seen, timeout, repr(needle), every=0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else 0
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


class UpProcess(ServiceProcess):
    """``shardsense up`` in a child process; ``state()`` reads its ``stack.json``."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__("up", "--data-dir", str(data_dir), *args, env=env)
        self.data_dir = data_dir

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "stack.json").read_text()))


def service_env(s: Settings, broker: bool = True, **extra: str) -> dict[str, str]:
    """``SHARDSENSE_*`` variables that give a child process ``s``'s topics, job and broker
    (``broker=False`` for ``up``, which starts the embedded one on ``--broker-port``)."""
    env = {"SHARDSENSE_JOB_ID": s.job_id, "SHARDSENSE_TOPIC_PARTITIONS": str(s.topic_partitions),
           **{f"SHARDSENSE_TOPIC_{t.role.upper()}": t.name for t in s.topics()}}
    if broker:
        env["SHARDSENSE_KAFKA_BOOTSTRAP"] = s.bootstrap_servers
    return {**env, **{f"SHARDSENSE_{k.upper()}": v for k, v in extra.items()}}


#: Run in a child process (this one holds the session's chDB path): one query's rows as JSON.
_QUERY = """
import json, sys
from shardsense.clickhouse import connect
rows = connect(sys.argv[1]).query(sys.argv[2], parameters=json.loads(sys.argv[3])).result_rows
print(json.dumps([list(r) for r in rows], default=str))
"""


def query_elsewhere(url: str, sql: str, **params: Any) -> list[list[Any]]:
    """Rows of ``sql`` on another chDB path (a stopped service's), read by a child process."""
    out = subprocess.run([sys.executable, "-c", _QUERY, url, sql, json.dumps(params)],
                         capture_output=True, text=True, timeout=120)
    if out.returncode:
        raise AssertionError(f"query on {url} failed: {out.stderr[-2000:]}")
    return list(json.loads(out.stdout))


def log_ends(s: Settings, topic: str) -> dict[int, int]:
    """Per partition, the offset after its last message (read to the end: the embedded
    broker's high watermark is its last batch's base offset + 1, not the log end)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from shardsense.kafka import consumer_config

    consumer = Consumer(consumer_config(s, f"faults-ends-{uuid.uuid4().hex[:6]}",
                                        **{"enable.partition.eof": True}))
    parts = range(s.topic_partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    ends, pending = {p: 0 for p in parts}, set(parts)
    try:
        while pending:
            msg = consumer.poll(10)
            if msg is None:
                raise AssertionError(f"reading {topic} to its end timed out")
            if msg.error():
                pending.discard(msg.partition())  # end of partition (the only error asked for)
                continue
            ends[msg.partition()] = msg.offset() + 1
    finally:
        consumer.close()
    return ends


def committed(s: Settings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets per partition (-1: none), without joining the group."""
    from confluent_kafka import Consumer, TopicPartition

    from shardsense.kafka import consumer_config

    consumer = Consumer(consumer_config(s, group))
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(s.topic_partitions)],
                                 timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in tps}
