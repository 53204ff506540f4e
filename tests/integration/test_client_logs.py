"""Issue 12 item 6: against a broker that is not there, each Kafka client logs one line
every few seconds (librdkafka's log and error callbacks through Python logging, rate-
limited per client), never hundreds; nothing reaches stderr around Python logging.

Measured before: ``shardsense up`` printed ~570 librdkafka lines in 30 s waiting for an
unreachable bootstrap. The clients run in a child process so that librdkafka's own
stderr output (fd 2) would be counted too.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from shardsense.net import free_port

pytestmark = pytest.mark.integration

SECONDS = 8.0
CLIENTS = ("telemetry rank 0", "shard-map consumer", "shard-map topic watch", "planner consumer",
           "planner producer", "planner topic watch", "Kafka at")

SCRIPT = """
import logging, sys, threading, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="LOG %(name)s: %(message)s")
from planner_service.service import Planner
from planner_service.sink import MemorySink
from producers.mapfeed import KafkaMapSource
from producers.telemetry import KafkaTimingSink
from shardsense.errors import StackError
from shardsense.kafka import wait_for_broker
from shardsense.settings import Settings

s = Settings.from_env({}, kafka_bootstrap=sys.argv[1], job_id="dead", kafka_log_interval_s=5)
seconds = float(sys.argv[2])
sink = KafkaTimingSink(s, 0)
maps = KafkaMapSource(s)
planner = Planner(s, sink=MemorySink()).start()
stop = time.monotonic() + seconds
def offer():
    step = 0
    while time.monotonic() < stop:
        sink.offer(0, step, 8, 0.0, 0.01, 1, time.time()); step += 1; time.sleep(0.01)
threading.Thread(target=offer, daemon=True).start()
try:
    wait_for_broker(s, timeout=seconds)
except StackError:
    pass
print("END", flush=True)
"""


def test_a_dead_broker_costs_each_client_one_line_every_few_seconds() -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = subprocess.run([sys.executable, "-c", SCRIPT, dead, str(SECONDS)],
                            capture_output=True, text=True, timeout=120)
    assert "END" in result.stdout, result.stderr[-3000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    stray = [ln for ln in lines if not ln.startswith("LOG ")]
    assert not stray, f"lines around Python logging (librdkafka stderr?): {stray[:5]}"
    kafka = [ln for ln in lines if "shardsense.kafka.client" in ln]
    per_client = {c: sum(c in ln for ln in kafka) for c in CLIENTS}
    print(f"{len(lines)} log lines in {SECONDS:.0f}s; Kafka client lines per client: {per_client}")
    # one line at the start and at most one per 5 s interval after it, per client
    assert all(n <= 1 + SECONDS // 5 for n in per_client.values()), per_client
    assert len(lines) <= 40, "\n".join(lines)
    assert any("similar suppressed" in ln for ln in kafka), "\n".join(kafka)
