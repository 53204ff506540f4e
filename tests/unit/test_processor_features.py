"""Feature math: window statistics, fleet-relative slowdown, lag features, periods."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.evaluate import detection, make_fleet, make_trace, progressive
from stream_processors.drift import StragglerDetector
from stream_processors.features import (
    FEATURE_NAMES,
    FleetState,
    LagFeatures,
    WorkerStats,
    detect_period,
)

pytestmark = pytest.mark.unit


def test_worker_stats_match_numpy() -> None:
    rng = np.random.default_rng(0)
    ws = WorkerStats(window=50, alpha=0.2)
    all_tps: list[float] = []
    ewma = None
    for r in range(6):
        samples = rng.integers(0, 64, size=20).tolist()
        wait = rng.uniform(0, 0.01, size=20).tolist()
        comp = rng.uniform(0.01, 0.05, size=20).tolist()
        out = ws.observe(samples, wait, comp, list(range(r * 20, r * 20 + 20)))
        assert out is not None
        tps, per_batch = out
        ok = [i for i, n in enumerate(samples) if n > 0]
        total = sum(wait[i] + comp[i] for i in ok)
        assert tps == pytest.approx(total / sum(samples[i] for i in ok))
        for i in ok:
            v = (wait[i] + comp[i]) / samples[i]
            all_tps.append(v)
            ewma = v if ewma is None else ewma + 0.2 * (v - ewma)
        assert list(per_batch) == pytest.approx(all_tps[-len(ok):])
    row = ws.row("j", 3, "e", 1.0, tps, fleet=ewma / 2)
    win = np.array(all_tps[-50:])
    assert row.ewma_tps == pytest.approx(ewma)
    assert row.mean_tps == pytest.approx(win.mean())
    assert row.p50_tps == pytest.approx(np.percentile(win, 50))
    assert row.p90_tps == pytest.approx(np.percentile(win, 90))
    assert row.slowdown == pytest.approx(2.0)
    assert row.last_step == 119 and row.batches == len(all_tps)
    assert 0 < row.wait_share < 1


def test_trend_sign_and_zero_samples() -> None:
    ws = WorkerStats(window=64)
    ws.observe([10] * 64, [0.0] * 64, [0.01 * (1 + i / 64) for i in range(64)], list(range(64)))
    assert ws.row("j", 0, "e", 0.0, 0.001, 0.001).trend > 0
    assert ws.observe([0, 0], [0.1, 0.1], [0.1, 0.1], [64, 65]) is None


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
