"""Feature math: window statistics, fleet-relative slowdown, lag features, periods."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.evaluate import detection, make_fleet, make_trace, progressive
from stream_processors.drift import StragglerDetector
from stream_processors.features import FEATURE_NAMES, FleetState, LagFeatures, detect_period
from stream_processors.tickrows import window_stats

pytestmark = pytest.mark.unit


def test_tick_window_stats_match_numpy() -> None:
    rng = np.random.default_rng(0)
    values = rng.lognormal(0, 0.2, (5, 32))
    count = np.array([32, 20, 8, 3, 1])
    got = window_stats(values, count)
    for row, n in enumerate(count):
        win = values[row, :n]
        assert got[row, 0] == pytest.approx(win.mean())
        assert got[row, 1] == pytest.approx(np.percentile(win, 50))
        assert got[row, 2] == pytest.approx(np.percentile(win, 90))
        trend = np.polyfit(np.arange(n), win, 1)[0] / win.mean() if n >= 8 else 0.0
        assert got[row, 3] == pytest.approx(trend, abs=1e-12)


def test_fleet_median_ignores_nan_and_nonpositive() -> None:
    f = FleetState()
    for w, v in enumerate([1.0, 3.0, float("nan"), 0.0, 2.0]):
        f.set(w, v)
    assert f.median() == 2.0 and FleetState().median(default=7.0) == 7.0


def test_lag_features_are_relative_and_complete() -> None:
    lf = LagFeatures()
    assert set(lf.features(1.0)) == set(FEATURE_NAMES)
    for v in [2.0] * 40 + [4.0]:
        lf.update(v, fleet=2.0)
    x = lf.features(fleet=2.0)
    assert x["lag1"] == pytest.approx(2.0) and x["lag2"] == pytest.approx(1.0)
    assert x["slow1"] == pytest.approx(2.0) and x["fleet_rel"] == pytest.approx(1.0)
    assert lf.ref == 2.0  # a rolling median: one outlier does not move it


def test_period_is_found_and_used() -> None:
    lf = LagFeatures()
    for t in range(400):
        lf.update(3.0 if t % 20 < 3 else 1.0, fleet=1.0)
    assert lf.period == 20
    x = lf.features(1.0)  # t=400: 400 % 20 == 0 -> a slow batch is due
    assert x["season"] == pytest.approx(3.0)


def test_no_period_in_noise() -> None:
    assert detect_period(np.random.default_rng(1).lognormal(0, 0.1, 800)) == 0


def test_detector_flags_a_step_quickly_and_not_noise() -> None:
    rng = np.random.default_rng(2)
    d = StragglerDetector()
    noise = rng.lognormal(0, 0.08, 3000)
    assert not any(d.update(float(v)) for v in noise)
    delays = [i for i, v in enumerate(1.5 * rng.lognormal(0, 0.08, 50)) if d.update(float(v))]
    assert delays and delays[0] < 5 and d.straggler


def test_detector_measures_onset_against_the_workers_own_baseline() -> None:
    """A worker 20% faster than the fleet that slows 1.5x is only 1.2x the fleet
    median, but it is a 1.5x change: flagged as fast as a median worker would be."""
    rng = np.random.default_rng(3)
    d = StragglerDetector()
    assert not any(d.update(float(v)) for v in 0.8 * rng.lognormal(0, 0.05, 500))
    onset = [i for i, v in enumerate(1.2 * rng.lognormal(0, 0.05, 20)) if d.update(float(v))]
    assert onset and onset[0] <= 3


def test_leak_family_is_learnable_structure() -> None:
    level, noise = make_fleet("leak", 1, ticks=800, workers=4)  # 3 of 4 leak
    scores = progressive(level * noise, warmup=200, retrain_every=200, clean=level)
    assert scores.mae_us("hybrid") < 0.9 * scores.mae_us("ewma")
    assert scores.mae_us("oracle") < scores.mae_us("hybrid")


def test_detector_ignores_single_spikes() -> None:
    d = StragglerDetector()
    values = [1.0] * 100 + [20.0] + [1.0] * 100
    assert not any(d.update(v) for v in values)


def test_progressive_and_detection_smoke() -> None:
    scores = progressive(make_trace("periodic", 0, ticks=400, workers=4), warmup=100,
                         retrain_every=150)
    assert scores.n == 300 * 4
    assert scores.mae_us("river") < scores.mae_us("ewma")  # structure is learnt
    delays, misses, _false, clean = detection(trials=3, ticks=600, workers=4)
    assert not misses and max(delays) <= 5 and clean > 0
