"""The bench's in-process loop without a process group: predictor, sink, planner."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import TensorDataset  # noqa: E402

from benchmarks.bench.loop import BenchSink, EwmaPredictor, InProcessPlanner  # noqa: E402
from benchmarks.bench.scenarios import BenchConfig  # noqa: E402
from benchmarks.bench.worker import policy_config  # noqa: E402
from producers.maps import JobShape, elastic_map  # noqa: E402
from producers.memory import InMemoryMapSource  # noqa: E402

pytestmark = pytest.mark.unit


def test_predictor_follows_a_confirmed_level_shift_in_two_windows():
    p = EwmaPredictor(alpha=0.3, shift=0.4, confirm=2)
    for _ in range(5):
        p.update(0, 1.0)
    assert p.update(0, 3.0) == pytest.approx(1.6)  # one window: maybe a blip
    assert p.update(0, 3.0) == pytest.approx(3.0)  # two: a new level
    assert p.uncertainty(0) == pytest.approx((0.1 * 3.0) * (0.3 / 1.7) ** 0.5)


def test_predictor_averages_a_fast_square_wave_instead_of_chasing_it():
    p = EwmaPredictor()
    values = [p.update(0, x) for x in [1.5] + [1.0, 2.0] * 20]
    assert all(1.2 < v < 1.8 for v in values)


def test_sink_sums_windows_and_skips_the_first_step():
    sink = BenchSink()
    for step in range(3):
        sink.offer(0, step, 16, 0.001, 0.010, 1, 0.0)
    seconds, samples = sink.drain()
    assert samples == 32 and seconds == pytest.approx(0.022)
    assert sink.drain() == [0.0, 0.0] and sink.versions[(0, 2)] == 1


def test_planner_publishes_a_map_that_shrinks_the_slow_rank():
    job = JobShape("bench", 1437, 128, 64)
    maps = InMemoryMapSource(elastic_map(job, 1, 4, None, reason="first"))

    train = TensorDataset(torch.zeros(1437, 64), torch.zeros(1437, dtype=torch.long))
    planner = InProcessPlanner(maps, "bench", policy_config(BenchConfig(), train))
    for step in range(2, 40, 4):
        planner.on_window(step, [0.048, 0.048, 0.048, 0.096], [16, 16, 16, 16])
    latest = maps.latest()
    assert latest is not None and latest.map_version == 2
    assert latest.batch_sizes[3] in (9, 10) and sum(latest.batch_sizes) == 64
    assert [d.outcome for _, d in planner.decisions].count("published") == 1
