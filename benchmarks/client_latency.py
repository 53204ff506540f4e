"""How long a timing waits in the rank, and how long a new map waits for rank 0.

Run: ``shardsense client-latency [--seconds 20] [--rates 2,10,50,200]``
(starts the embedded broker on a free loopback port). Everything is measured side by
side in one run, on one broker:

* ``sink``: per step rate, one ``KafkaTimingSink`` with today's policy and one with the
  policy it replaced (a report every 0.5 s), all at once, offering one
  timing per step. A reader (fetch wait 5 ms) stamps each timing's arrival; latency =
  arrival - offer. ``floor`` is a bare producer (linger 0) sending one message per
  100 ms read by the same reader: broker + reader cost. Messages/s and timings per
  message come from the sinks' own counters.
* ``maps``: map sources with ``map_fetch_wait_ms`` 500 (librdkafka's default), 100 and
  20, plus the loop the map source had before (``consume(100, 0.2)``, fetch wait 500);
  a map is published every ~0.3 s and the time until each source holds it is taken.

Figures are wall-clock on a shared machine: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main"]


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _settings(bootstrap: str, **extra: Any) -> Any:
    from shardsense.kafka import create_topics
    from shardsense.settings import Settings

    tag = uuid.uuid4().hex[:8]
    s = Settings.from_env({}, kafka_bootstrap=bootstrap, job_id=f"bench-{tag}",
                          topic_timings=f"b-{tag}.timings", topic_predictions=f"b-{tag}.pred",
                          topic_shard_maps=f"b-{tag}.maps", topic_dead_letters=f"b-{tag}.dead",
                          topic_partitions=1, **extra)
    create_topics(s)
    return s


class _Reader(threading.Thread):
    """Reads a topic from the start; calls ``on`` with (arrival time, message)."""

    def __init__(self, settings: Any, topic: str, on: Callable[[float, Any], None]) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from shardsense.kafka import consumer_config

        self.consumer = Consumer(consumer_config(settings, f"r-{uuid.uuid4().hex[:6]}",
                                                 **{"fetch.wait.max.ms": 5}))
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.on = on
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            msg = self.consumer.poll(0.05)
            if msg is not None and msg.error() is None:
                self.on(time.time(), msg)
        self.consumer.close()


def _before_sink(settings: Any, rank: int) -> Any:
    """The sink with the flush policy it had before: what is queued leaves every 0.5 s."""
    from producers.telemetry import KafkaTimingSink

    class Before(KafkaTimingSink):
        def _run(self) -> None:
            last = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                if now - last >= 0.5 or len(self._queue) >= self._max_per_report:
                    self._drain(everything=True)
                    last = now
                self._producer.poll(0)
                self._stop.wait(0.05)
            self._shutdown()

    return Before(settings, rank)


def sink_latency(bootstrap: str, rates: Sequence[float], seconds: float) -> list[dict[str, Any]]:
    """Per step rate and policy: latency quantiles, messages/s and timings per message."""
    from confluent_kafka import Producer

    from producers.telemetry import KafkaTimingSink
    from shardsense.events import TimingReport, decode
    from shardsense.kafka import producer_config

    s = _settings(bootstrap)
    n = len(rates)
    lat: dict[int, list[float]] = {r: [] for r in range(2 * n + 1)}

    def on(arrival: float, msg: Any) -> None:
        if msg.key() == b"floor":
            lat[2 * n].append(arrival - float(msg.value()))
            return
        report = decode(msg.value(), expect=TimingReport)
        assert isinstance(report, TimingReport)
        lat[report.worker_id] += [arrival - t for t in report.timings["end_ts"]]

    reader = _Reader(s, s.topic_timings, on)
    reader.start()
    sinks = [KafkaTimingSink(s, r) for r in range(n)]
    sinks += [_before_sink(s, n + r) for r in range(n)]
    rates = [*rates, *rates]
    floor = Producer(producer_config(s, **{"linger.ms": 0}))
    for sink in sinks:  # first delivery waits for the producer id: not part of the figure
        sink.offer(0, 0, 1, 0.0, 0.0, 0, time.time())
    floor.produce(s.topic_timings, str(time.time()).encode(), b"floor")
    floor.flush(10)
    time.sleep(2.0)
    for values in lat.values():
        values.clear()
    sent0 = [sink.stats()["messages"] for sink in sinks]
    _pace(sinks, rates, floor, s.topic_timings, seconds)
    for sink in sinks:
        sink.close(5.0)
    time.sleep(1.0)
    reader.stop.set()
    rows = []
    for r, rate in enumerate(rates):
        st = sinks[r].stats()
        msgs = st["messages"] - sent0[r]
        rows.append({"policy": "now" if r < n else "before", "steps_per_s": rate,
                     "p50_ms": 1000 * _q(lat[r], 0.5),
                     "p95_ms": 1000 * _q(lat[r], 0.95), "max_ms": 1000 * max(lat[r], default=0),
                     "messages_per_s": msgs / seconds, "timings_per_message":
                     st["sent"] / max(1, st["messages"]), "dropped": st["dropped"]})
    f = lat[2 * n]
    rows.append({"policy": "floor", "steps_per_s": 10.0, "p50_ms": 1000 * _q(f, 0.5),
                 "p95_ms": 1000 * _q(f, 0.95), "max_ms": 1000 * max(f, default=0),
                 "messages_per_s": len(f) / seconds, "timings_per_message": 1, "dropped": 0})
    return rows


def _pace(sinks: list[Any], rates: Sequence[float], floor: Any, topic: str,
          seconds: float) -> None:
    """Offer timings at each sink's rate (one thread, a schedule per sink) for ``seconds``."""
    start = time.monotonic()
    due = [start] * len(sinks)
    steps = [1] * len(sinks)
    next_floor = start
    while (now := time.monotonic()) - start < seconds:
        for r, sink in enumerate(sinks):
            if now >= due[r]:
                sink.offer(0, steps[r], 32, 0.001, 0.01, 1, time.time())
                steps[r] += 1
                due[r] += 1.0 / rates[r]
        if now >= next_floor:
            floor.produce(topic, str(time.time()).encode(), b"floor")
            floor.poll(0)
            next_floor += 0.1
        time.sleep(max(0.0, min(min(due), next_floor) - time.monotonic()))


def map_latency(bootstrap: str, maps: int = 30) -> list[dict[str, Any]]:
    """Per map-source variant: time until a published map is held (quantiles)."""
    from producers.mapfeed import KafkaMapSource
    from producers.maps import JobShape, elastic_map

    s = _settings(bootstrap)
    variants: dict[str, Any] = {
        f"fetch wait {w} ms": KafkaMapSource(s.replace(map_fetch_wait_ms=w), republish=False)
        for w in (500, 100, 20)
    }
    variants["before: consume(100, 0.2), wait 500"] = _OldSource(s)
    for src in variants.values():
        src.wait_ready(30)
    publisher = KafkaMapSource(s, republish=False)
    job = JobShape(s.job_id, 48_000, 48, 48)
    waits: dict[str, list[float]] = {name: [] for name in variants}
    for version in range(1, maps + 1):
        m = elastic_map(job, version, 3, None, reason="bench", at=(0, 0))
        publisher.publish(m)
        sent = time.monotonic()
        pending = dict(variants)
        while pending and time.monotonic() - sent < 5:
            for name, src in list(pending.items()):
                got = src.latest()
                if got is not None and got.map_version >= version:
                    waits[name].append(time.monotonic() - sent)
                    del pending[name]
            time.sleep(0.001)
        time.sleep(0.3 + 0.01 * (version % 7))  # not in step with any poll or fetch period
    for src in [*variants.values(), publisher]:
        src.close(2.0)
    return [{"source": name, "p50_ms": 1000 * _q(w, 0.5), "p95_ms": 1000 * _q(w, 0.95),
             "max_ms": 1000 * max(w, default=0), "maps": len(w)} for name, w in waits.items()]


class _OldSource:
    """The map source's consumer loop as it was: ``consume(100, 0.2)``, default fetch wait."""

    def __init__(self, settings: Any) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from shardsense.kafka import consumer_config

        self.c = Consumer(consumer_config(settings, f"old-{uuid.uuid4().hex[:6]}"))
        self.c.assign([TopicPartition(settings.topic_shard_maps, 0, OFFSET_BEGINNING)])
        self.version = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for msg in self.c.consume(100, 0.2):
                if msg.error() is None and msg.value():
                    version = json.loads(msg.value() or b"{}")["map_version"]
                    self.version = max(self.version, version)
        self.c.close()

    def wait_ready(self, timeout: float) -> bool:
        return True

    def latest(self) -> Any:
        class _V:
            map_version = self.version

        return _V() if self.version else None

    def close(self, timeout: float) -> None:
        self.stop.set()
        self.t.join(timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="paced time per sink run")
    parser.add_argument("--rates", default="2,10,50,200", help="steps/s, comma-separated")
    parser.add_argument("--maps", type=int, default=30, help="maps published")
    parser.add_argument("--bootstrap", default=None, help="live broker (default: embedded)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    from infra.broker import EmbeddedBroker
    from shardsense.net import free_port

    broker = None if args.bootstrap else EmbeddedBroker(free_port()).start()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    try:
        rates = [float(x) for x in args.rates.split(",")]
        sink = sink_latency(bootstrap, rates, args.seconds)
        maps = map_latency(bootstrap, args.maps)
    finally:
        if broker is not None:
            broker.stop()
    if args.json:
        print(json.dumps({"sink": sink, "maps": maps}, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for title, rows in (("timing -> reader latency per step rate", sink),
                        ("published map -> held by rank 0", maps)):
        table = Table(title=title)
        for key in rows[0]:
            table.add_column(key)
        for row in rows:
            table.add_row(*(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()))
        console.print(table)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
