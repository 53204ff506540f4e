"""XGBoost's retrain cadence: the policy (rows, growth, drift, interval, floor), the drift
detector on the served error, and the background retrainer on a driven clock."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from shardsense.settings import Settings
from stream_processors.retrain import ErrorDrift, Retrainer, RetrainPolicy, RetrainReason

pytestmark = pytest.mark.unit


def policy(**kw) -> RetrainPolicy:
    return RetrainPolicy(**({"first_rows": 1000, "min_interval_s": 30.0,
                             "max_interval_s": 300.0, "created": 0.0} | kw))


def test_first_retrain_waits_for_rows_not_for_the_interval() -> None:
    p = policy()
    assert p.due(5.0, 999, drifted=True) is None  # no drift trigger before a first model
    assert p.due(5.0, 1000, drifted=False) is RetrainReason.FIRST


def test_small_jobs_still_get_a_model_after_the_longest_interval() -> None:
    p = policy()
    assert p.due(299.0, 500, drifted=False) is None
    assert p.due(300.0, 500, drifted=False) is RetrainReason.INTERVAL
    assert p.due(300.0, 199, drifted=False) is None  # below floor_rows: nothing to learn


def test_later_retrains_follow_growth_drift_and_interval_never_closer_than_the_floor() -> None:
    p = policy()
    p.started(10.0, 1000)
    assert p.due(39.0, 10_000, drifted=True) is None
    assert p.due(40.0, 1999, drifted=False) is None
    assert p.due(40.0, 2000, drifted=False) is RetrainReason.GROWTH
    assert p.due(40.0, 1500, drifted=True) is RetrainReason.DRIFT
    assert p.due(310.0, 1001, drifted=False) is RetrainReason.INTERVAL
    assert p.due(310.0, 1000, drifted=False) is None  # no new rows: nothing new to learn


def test_growth_stops_once_the_history_window_is_full() -> None:
    p = policy(history_rows=5000)
    p.started(0.0, 3000)
    assert p.due(100.0, 5000, drifted=False) is RetrainReason.GROWTH
    p.started(100.0, 5000)
    assert p.due(200.0, 5000, drifted=False) is None
    assert p.due(200.0, 5000, drifted=True) is RetrainReason.DRIFT


def test_policy_from_settings_and_bad_values() -> None:
    s = Settings(processor_retrain_min_rows=400, processor_retrain_min_interval_s=5,
                 processor_retrain_s=60, processor_retrain_growth_pct=50)
    p = RetrainPolicy.from_settings(s)
    assert (p.first_rows, p.min_interval_s, p.max_interval_s, p.growth) == (400, 5.0, 60.0, 0.5)
    with pytest.raises(ValueError, match="growth"):
        policy(growth=0.0)
    with pytest.raises(ValueError, match="first_rows"):
        policy(first_rows=0)


def test_drift_flags_a_lasting_rise_of_the_error_only() -> None:
    rng = np.random.default_rng(0)
    steady = ErrorDrift()
    assert not any(steady.update(rng.normal(0.1, 0.01, 8)) for _ in range(2000))
    rising = ErrorDrift()
    for _ in range(300):
        rising.update(rng.normal(0.1, 0.01, 8))
    fired = [rising.update(rng.normal(0.3, 0.01, 8)) for _ in range(200)]
    assert rising.drifted and fired.index(True) < 100
    falling = ErrorDrift()
    for _ in range(300):
        falling.update(rng.normal(0.3, 0.01, 8))
    for _ in range(300):
        falling.update(rng.normal(0.1, 0.01, 8))
    assert not falling.drifted
    assert not steady.update([]) and not steady.update([float("nan")])


class GrowingHistory:
    """A fake ClickHouse client whose history grows by the rows the test adds."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, float, float]] = []
        self.rng = np.random.default_rng(1)

    def add(self, n: int) -> None:
        for i in range(len(self.rows), len(self.rows) + n):
            tps = 1e-3 * (2.0 if i % 20 < 4 else 1.0) * self.rng.lognormal(0, 0.03)
            self.rows.append((i % 4, tps, 1.0, 1e-3))

    def query(self, sql, parameters=None):
        if "count()" in sql:
            return SimpleNamespace(result_rows=[(len(self.rows),)])
        return SimpleNamespace(result_rows=sorted(self.rows, key=lambda r: r[0]))


def drive(r: Retrainer, now: float) -> tuple[int, object] | None:
    """One batch's poll, then let the background probe finish; then collect it."""
    r.poll(now)
    r.wait(60)
    return r.poll(now)


def test_retrainer_trains_at_the_row_threshold_then_on_growth_and_drift(tmp_path) -> None:
    client = GrowingHistory()
    p = policy(first_rows=400, min_interval_s=10.0, max_interval_s=1e9)
    r = Retrainer(client, "job", tmp_path / "models", 1e9, policy=p, probe_s=1.0)
    client.add(300)
    assert drive(r, 1.0) is None and r.trainings == 0
    client.add(100)
    done = drive(r, 3.0)
    assert done is not None and done[0] == 1 and p.starts == 1
    client.add(300)  # 700 < 2 x 400: no growth retrain yet
    assert drive(r, 20.0) is None
    client.add(100)
    assert drive(r, 25.0)[0] == 2
    for _ in range(300):
        r.observe_error(0.05)
    for _ in range(100):
        r.observe_error(0.5)
    assert r.drift.drifted
    client.add(10)
    assert drive(r, 30.0) is None  # the floor: 5 s since the last start
    assert drive(r, 40.0)[0] == 3 and not r.drift.drifted
    r.close()


def test_a_due_interval_is_probed_at_once_not_at_the_next_probe_turn(tmp_path) -> None:
    """The batch that arrives after the longest interval starts the retrain, even if a
    probe ran a moment before (traffic may stop after that batch)."""
    client = GrowingHistory()
    client.add(300)
    p = policy(first_rows=10_000, min_interval_s=0.0, max_interval_s=1.0)
    r = Retrainer(client, "job", tmp_path / "models", 1.0, policy=p, probe_s=60.0)
    assert drive(r, 0.5) is None  # probed: not due yet
    done = drive(r, 1.2)  # within probe_s of the last probe, but the interval came due
    assert done is not None and p.starts == 1
    r.close()
