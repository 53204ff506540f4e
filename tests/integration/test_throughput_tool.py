"""``shardsense throughput`` end to end on the real broker, as small as it goes: one job
of 4 ranks against one ``shardsense processor`` process; every timing stored, the table
and the verdict printed."""

from __future__ import annotations

import pytest

from benchmarks.throughput import main

pytestmark = pytest.mark.integration


def test_a_small_fleet_is_kept_up_and_reported(kafka_broker: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--jobs", "1", "--ranks", "4", "--instances", "1", "--seconds", "3",
                 "--warmup", "1", "--partitions", "2", "--kafka-bootstrap", kafka_broker]) == 0
    out = capsys.readouterr().out
    assert "1 x 4 x 5/s" in out and "NO" not in out
    assert "1 instance(s): largest fleet kept up 1 x 4 x 5/s = 4 ranks" in out
