"""The columnar state equals the per-worker reference, rank by rank.

Each column class (lags, onset, learners, ticks) is driven for several ranks at
once in rounds, and the same values go through the reference objects one by one;
every output must match. This is what lets the processor batch without changing
what each rank learns.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_processors.drift import StragglerDetector
from stream_processors.features import FEATURE_NAMES, LagFeatures
from stream_processors.lags import LagColumns
from stream_processors.learners import CANDIDATES, LearnerColumns
from stream_processors.models import XGBoostForecaster, make_forecaster
from stream_processors.onset import OnsetColumns
from stream_processors.retrain import train_booster
from stream_processors.slots import SlotTable, grouped_median, rounds
from stream_processors.ticks import TickColumns

pytestmark = pytest.mark.unit


def _series(rng: np.random.Generator, n: int, period: int) -> np.ndarray:
    t = np.arange(n)
    return 1e-3 * (1 + (t % period < 3)) * rng.lognormal(0, 0.05, n)


def test_lag_columns_equal_lag_features_tick_by_tick() -> None:
    rng = np.random.default_rng(0)
    ranks, n = 3, 300
    values = np.stack([_series(rng, n, p) for p in (12, 20, 1000)])
    fleet = 1e-3 * rng.lognormal(0, 0.02, n)
    lc = LagColumns()
    lc.ensure(ranks)
    ref = [LagFeatures() for _ in range(ranks)]
    slots = np.arange(ranks)
    for t in range(n):
        f = np.full(ranks, fleet[t])
        X = lc.features(slots, f)
        for w in range(ranks):
            x = ref[w].features(fleet[t])
            assert X[w] == pytest.approx([x[k] for k in FEATURE_NAMES], rel=1e-9, abs=1e-12)
            ref[w].update(float(values[w, t]), fleet[t])
        lc.update(slots, values[:, t], f)
        assert lc.ref == pytest.approx([r.ref for r in ref], rel=1e-12)
        assert lc.ewma == pytest.approx([r.ewma for r in ref], rel=1e-12)
    assert lc.period.tolist() == [r.period for r in ref] and ref[0].period == 12


def test_relevel_makes_the_level_the_recent_history() -> None:
    lc = LagColumns()
    lc.ensure(1)
    s = np.array([0])
    for _ in range(40):
        lc.update(s, np.array([1.0]), np.array([1.0]))
    lc.relevel(s, np.array([2.5]))
    X = lc.features(s, np.array([1.0]))[0]
    assert lc.ref[0] == lc.ewma[0] == 2.5
    assert X[FEATURE_NAMES.index("lag1")] == X[FEATURE_NAMES.index("mean8")] == 1.0
    assert X[FEATURE_NAMES.index("slow1")] == pytest.approx(2.5)


def test_onset_columns_equal_the_straggler_detector() -> None:
    rng = np.random.default_rng(1)
    ranks, n = 4, 400
    x = rng.lognormal(0, 0.06, (ranks, n))
    x[1, 200:] *= 1.6
    x[2, 120:] *= 1.3
    x[3, 300] = 20.0
    oc = OnsetColumns()
    oc.ensure(ranks)
    ref = [StragglerDetector() for _ in range(ranks)]
    slots = np.arange(ranks)
    for t in range(n):
        fired = oc.update(slots, x[:, t], x[:, t], np.ones(ranks), np.zeros(ranks, int),
                          np.full(ranks, t))
        assert fired.tolist() == [d.update(float(x[w, t])) for w, d in enumerate(ref)]
        assert oc.straggler(slots).tolist() == [d.straggler for d in ref]
    assert oc.alarms.tolist() == [d.alarms for d in ref] and oc.alarms[1] >= 1


def test_onset_estimates_the_change_point_and_the_new_level() -> None:
    rng = np.random.default_rng(2)
    oc = OnsetColumns()
    oc.ensure(1)
    s = np.array([0])
    step = 0
    for level, n in ((1.0, 300), (2.5, 10)):
        for _ in range(n):
            v = level * float(rng.lognormal(0, 0.05))
            oc.update(s, np.array([v]), np.array([v]), np.ones(1), np.zeros(1, int),
                      np.array([step]))
            step += 1
    assert oc.alarms[0] == 1
    assert abs(int(oc.onset_step[0]) - 300) <= 2
    assert oc.level_s(s)[0] == pytest.approx(2.5, rel=0.1)


def test_a_recovery_moves_the_level_back_at_once_and_steady_noise_raises_none() -> None:
    """A 50-point 2x burst, then back: the onset, then a recovery near the end of the
    burst whose level is the fast one; 2,000 noisy steady points raise nothing."""
    rng = np.random.default_rng(4)
    oc = OnsetColumns()
    oc.ensure(2)
    s = np.array([0, 1])
    step = 0
    for level, n in ((1.0, 300), (2.0, 50), (1.0, 15)):
        for _ in range(n):
            v = np.array([level, 1.0]) * rng.lognormal(0, 0.05, 2)
            oc.update(s, v, v, np.ones(2), np.zeros(2, int), np.full(2, step))
            step += 1
    assert oc.alarms.tolist() == [1, 0] and oc.recoveries.tolist() == [1, 0]
    assert abs(int(oc.onset_step[0]) - 350) <= 2
    assert oc.level_s(s)[0] == pytest.approx(1.0, rel=0.1)
    assert not oc.straggler(s)[0]  # the alarm's hold ended with the recovery
    for _ in range(2000):
        v = rng.lognormal(0, 0.05, 2)
        oc.update(s, v, v, np.ones(2), np.zeros(2, int), np.full(2, step))
        step += 1
    assert oc.recoveries.tolist() == [1, 0] and oc.alarms.tolist() == [1, 0]


@pytest.fixture(scope="module")
def booster():
    rng = np.random.default_rng(0)
    X = rng.uniform(0.5, 1.5, size=(500, len(FEATURE_NAMES)))
    return train_booster(X, X[:, 0] * 1.1, rounds=10)


@pytest.mark.parametrize("with_booster", [False, True])
def test_learner_columns_equal_the_forecasters(with_booster: bool, booster) -> None:
    rng = np.random.default_rng(3)
    ranks, n = 3, 200
    xgb = XGBoostForecaster(booster if with_booster else None, "1")
    ref = [{name: make_forecaster(name, xgb) for name in ("auto", *CANDIDATES)}
           for _ in range(ranks)]
    lc = LearnerColumns("auto")
    lc.ensure(ranks)
    slots = np.arange(ranks)
    for _ in range(n):
        X = rng.uniform(0.7, 1.4, (ranks, len(FEATURE_NAMES)))
        y = X[:, 0] * 1.2 + rng.normal(0, 0.02, ranks)
        out = (np.asarray(booster.inplace_predict(X.astype(np.float32)), dtype=float)
               if with_booster else None)
        P = lc.predict(slots, X, out)
        for w in range(ranks):
            x = dict(zip(FEATURE_NAMES, X[w].tolist(), strict=True))
            want = [ref[w][c].predict_one(x) for c in CANDIDATES]
            assert P[w] == pytest.approx(want, rel=1e-6)
            assert lc.served(slots, P)[w] == pytest.approx(ref[w]["auto"].predict_one(x),
                                                           rel=1e-6)
            for m in ref[w].values():
                m.learn_one(x, float(y[w]))
        lc.learn(slots, X, y, P)
    for w in range(ranks):
        weights = ref[w]["river"].model.weights
        assert lc.river_w[w] == pytest.approx([weights.get(f, 0.0) for f in FEATURE_NAMES],
                                              rel=1e-6, abs=1e-12)
        assert CANDIDATES[lc.best[w]] == ref[w]["auto"].chosen


def _reference_ticks(steps: list[int], values: list[float], k: int) -> list[tuple[int, float]]:
    """Blocks of k steps (one epoch), each (block, mean value), completed in order."""
    out: dict[int, list[float]] = {}
    for s, v in zip(steps, values, strict=True):
        out.setdefault(s // k, []).append(v)
    return [(b, sum(vs) / len(vs)) for b, vs in sorted(out.items())]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 9), cuts=st.lists(st.integers(1, 60), max_size=8))
def test_ticks_do_not_depend_on_how_reports_split_the_steps(n: int, k: int,
                                                             cuts: list[int]) -> None:
    rng = np.random.default_rng(n * 31 + k)
    value = rng.uniform(1, 2, n)
    tc = TickColumns(k)
    tc.ensure(1)
    got = []
    bounds = sorted({0, n, *[c for c in cuts if c < n]})
    for a, b in itertools.pairwise(bounds):
        idx = np.arange(a, b)
        t = tc.fold(np.zeros(b - a, int), np.zeros(b - a, int), idx, np.ones(b - a),
                    np.zeros(b - a), value[a:b], idx.astype(float))
        got += list(zip((t.key).tolist(), t.value.tolist(), strict=True))
    want = _reference_ticks(list(range(n)), value.tolist(), k)
    complete = want if (n % k == 0) else want[:-1]
    assert [g[0] for g in got] == [w[0] for w in complete]
    assert [g[1] for g in got] == pytest.approx([w[1] for w in complete])
    # a replay of everything folds nothing in twice
    idx = np.arange(n)
    again = tc.fold(np.zeros(n, int), np.zeros(n, int), idx, np.ones(n), np.zeros(n), value,
                    idx.astype(float))
    assert len(again) == 0
    assert (tc.carry_key[0] == -1) if n % k == 0 else (tc.carry_batches[0] == n % k)


def test_an_epoch_change_completes_the_short_last_block() -> None:
    tc = TickColumns(4)
    tc.ensure(1)
    z = np.zeros(3, int)
    t = tc.fold(z, np.array([0, 0, 1]), np.array([8, 9, 0]), np.ones(3), np.zeros(3),
                np.array([1.0, 3.0, 5.0]), np.zeros(3))
    assert t.epoch.tolist() == [0] and t.value.tolist() == [2.0] and t.batches.tolist() == [2]


def test_rounds_keep_each_slots_order_and_visit_it_once_per_round() -> None:
    rng = np.random.default_rng(4)
    slots = rng.integers(0, 7, 200)
    seen: dict[int, list[int]] = {}
    for idx in rounds(slots):
        assert len(set(slots[idx].tolist())) == len(idx)
        for i in idx.tolist():
            seen.setdefault(int(slots[i]), []).append(i)
    assert all(v == sorted(v) for v in seen.values())
    assert sum(len(v) for v in seen.values()) == 200


def test_grouped_median_equals_the_median_per_group() -> None:
    rng = np.random.default_rng(5)
    g = rng.integers(0, 9, 500)
    v = rng.lognormal(0, 1, 500)
    v[::17] = math.nan
    got = grouped_median(g, v, 10)
    for j in range(9):
        vals = v[(g == j) & np.isfinite(v)]
        assert got[j] == pytest.approx(float(np.median(vals)))
    assert math.isnan(got[9])


def test_slots_of_silent_ranks_are_reused_so_memory_follows_the_live_ranks() -> None:
    table = SlotTable(ttl_s=10)
    for wave in range(20):  # 20 waves of 500 ranks, each silent after its wave
        now = wave * 20.0
        table.expire(now)
        table.lookup([(f"job{wave}", r) for r in range(500)], now)
    assert len(table) == 500 and table.capacity <= 1024
    assert len(table.job_ids) == 1 and len(table.job_names) <= 2
