"""With no reachable broker, training completes and the telemetry drop counter moves."""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.unit
torch = pytest.importorskip("torch")
telemetry = pytest.importorskip("producers.telemetry")
mapfeed = pytest.importorskip("producers.mapfeed")

from producers.engine import ShardSenseRuntime  # noqa: E402
from shardsense.settings import Settings  # noqa: E402


def _dead_address() -> str:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class QuickSink(telemetry.KafkaTimingSink):  # short timeouts keep the unit tier fast
    def close(self, timeout: float = 0.5) -> None:
        super().close(timeout)


class QuickMaps(mapfeed.KafkaMapSource):
    def publish(self, shard_map, timeout: float = 0.5) -> None:
        super().publish(shard_map, timeout)

    def close(self, timeout: float = 0.5) -> None:
        super().close(timeout)


def test_training_completes_without_a_broker_and_drops_are_counted():
    settings = Settings(kafka_bootstrap=_dead_address(), job_id="no-broker")
    x = torch.randn(640, 8)
    data = torch.utils.data.TensorDataset(x, (x.sum(1) > 0).long())
    runtime = ShardSenseRuntime(
        data, num_shards=32, num_workers=1, global_batch_size=16, settings=settings,
        map_wait_s=0.5, maps=QuickMaps(settings),
        sink=lambda rank: QuickSink(settings, rank, max_queue=16),
    )
    model = torch.nn.Linear(8, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = runtime.get_dataloader(worker_id=0)
    trained = 0
    for epoch in range(3):
        for xb, yb in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            trained += 1
        runtime.epoch_end(epoch)
    # Every step of every epoch ran, and every timing was either dropped or is still
    # bounded in the sink's queue: offer() never waited for the broker.
    assert trained == 3 * runtime.steps_per_epoch
    stats = runtime.sinks[0].stats()
    assert stats["sent"] == 0 and stats["queued"] <= 16
    assert runtime.epoch == 3 and runtime.map_version == 1
    assert runtime.sinks[0].dropped > 0
    assert loader.telemetry_errors == 0
    runtime.close()
