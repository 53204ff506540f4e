"""What ``KafkaTimingSink.offer`` costs the training thread, with a live broker and a dead one.

Run: ``python -m benchmarks.telemetry_bench [--calls N] [--bootstrap HOST:PORT]`` (without
``--bootstrap`` it starts the embedded broker on a free loopback port). Two figures per case:

* ``paced``: offers in bursts of 100 with pauses between, so the sender thread packs while
  the "training" thread sleeps: the cost a real loop sees (one offer per batch, then compute).
* ``tight``: back-to-back offers; includes the GIL time the sender thread takes meanwhile,
  and, with a dead broker, the drop path once the bounded queue is full.

``offer_cost_ns`` is the seam for ``benchmarks.bench``: any sink with ``offer`` will do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main", "offer_cost_ns"]


def offer_cost_ns(
    offer: Callable[..., None], calls: int = 20_000, *, burst: int = 0, pause_s: float = 0.002
) -> float:
    """Median ns per ``offer(...)`` call; ``burst`` > 0 times bursts separated by pauses."""
    burst = burst or calls
    per_burst: list[float] = []
    perf, done = time.perf_counter_ns, 0
    while done < calls:
        n = min(burst, calls - done)
        t0 = perf()
        for i in range(done, done + n):
            offer(0, i, 32, 0.0012, 0.0345, 1, 1_700_000_000.0 + i)
        per_burst.append((perf() - t0) / n)
        done += n
        if done < calls and pause_s:
            time.sleep(pause_s)
    return statistics.median(per_burst)


def _baseline(*_args: Any) -> None:
    """A Python call with the same arguments that does nothing: the floor."""


def _measure(label: str, settings: Any, calls: int, wait_s: float) -> dict[str, Any]:
    from producers.telemetry import KafkaTimingSink

    sink = KafkaTimingSink(settings, 0, message_timeout_s=wait_s)
    try:
        paced = offer_cost_ns(sink.offer, calls, burst=100)
        tight = offer_cost_ns(sink.offer, 5 * calls)
        time.sleep(wait_s + 0.5)  # let deliveries (or timeouts) settle
        snapshot = sink.stats()
    finally:
        t0 = time.monotonic()
        sink.close(timeout=5.0)
        close_s = time.monotonic() - t0
    final = sink.stats()
    return {
        "case": label, "paced_ns": round(paced), "tight_ns": round(tight),
        "offered": 6 * calls, "sent": final["sent"], "messages": final["messages"],
        "dropped": final["dropped"], "dropped_queue_full": final["dropped_queue_full"],
        "dropped_kafka": final["dropped_kafka"], "dropped_before_close": snapshot["dropped"],
        "close_s": round(close_s, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="paced offers per case")
    parser.add_argument("--bootstrap", default=None, help="live broker (default: embedded)")
    parser.add_argument("--wait", type=float, default=2.0, help="message timeout / settle, s")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead")
    args = parser.parse_args(argv)

    from infra.broker import EmbeddedBroker
    from shardsense.kafka import create_topics
    from shardsense.net import free_port
    from shardsense.settings import Settings

    tag = uuid.uuid4().hex[:8]
    common = {"job_id": f"bench-{tag}", "topic_timings": f"bench-{tag}.timings",
              "topic_predictions": f"bench-{tag}.predictions",
              "topic_shard_maps": f"bench-{tag}.shard-maps",
              "topic_dead_letters": f"bench-{tag}.dead-letters"}
    broker = None if args.bootstrap else EmbeddedBroker(free_port()).start()
    try:
        bootstrap = args.bootstrap or (broker.bootstrap if broker else "")
        live = Settings.from_env({}, kafka_bootstrap=bootstrap, **common)
        create_topics(live)
        dead = Settings.from_env({}, kafka_bootstrap=f"127.0.0.1:{free_port()}", **common)
        floor = offer_cost_ns(_baseline, args.calls, burst=100)
        rows = [_measure("live broker", live, args.calls, args.wait),
                _measure("dead broker", dead, args.calls, args.wait)]
    finally:
        if broker is not None:
            broker.stop()
    if args.json:
        print(json.dumps({"baseline_ns": round(floor), "cases": rows}))
        return 0
    print(f"offer() cost per call, ns (empty 7-arg Python call: {floor:.0f} ns)")
    print(f"{'case':<12} {'paced':>6} {'tight':>6} {'offered':>8} {'sent':>8} {'msgs':>5} "
          f"{'dropped':>8} {'(queue/kafka)':>14} {'close s':>7}")
    for r in rows:
        print(f"{r['case']:<12} {r['paced_ns']:>6} {r['tight_ns']:>6} {r['offered']:>8} "
              f"{r['sent']:>8} {r['messages']:>5} {r['dropped']:>8} "
              f"{r['dropped_queue_full']:>6}/{r['dropped_kafka']:<7} {r['close_s']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
