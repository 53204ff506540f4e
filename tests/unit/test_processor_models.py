"""Contract checks run against every forecaster (in the spirit of river.checks)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import pytest

from stream_processors.features import FEATURE_NAMES
from stream_processors.models import (
    FORECASTERS,
    AutoSelect,
    Forecaster,
    XGBoostForecaster,
    make_forecaster,
)
from stream_processors.retrain import train_booster

pytestmark = pytest.mark.unit

LEARNERS = {"river", "hybrid", "auto"}


@pytest.fixture(scope="module")
def booster():
    rng = np.random.default_rng(0)
    X = rng.uniform(0.5, 1.5, size=(500, len(FEATURE_NAMES)))
    return train_booster(X, X[:, 0], rounds=10)


def _factories(booster) -> dict[str, Callable[[], Forecaster]]:
    out = {}
    for name in FORECASTERS:
        out[name] = lambda n=name: make_forecaster(n)
        out[f"{name}+booster"] = lambda n=name: make_forecaster(
            n, XGBoostForecaster(booster, "1"))
    return out


def _x(rng: np.random.Generator) -> dict[str, float]:
    return {f: float(rng.uniform(0.7, 1.4)) for f in FEATURE_NAMES} | {"trend": 0.01}


def _check_predict_before_learn(make: Callable[[], Forecaster]) -> None:
    m = make()
    assert math.isfinite(m.predict_one(_x(np.random.default_rng(1))))
    assert math.isfinite(m.predict_one({}))


def _check_deterministic(make: Callable[[], Forecaster]) -> None:
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(2)
        m = make()
        preds = []
        for _ in range(100):
            x = _x(rng)
            preds.append(m.predict_one(x))
            m.learn_one(x, x["lag1"] * 1.1)
        runs.append(preds)
    assert runs[0] == runs[1]


def _check_finite_on_extremes(make: Callable[[], Forecaster]) -> None:
    m = make()
    rng = np.random.default_rng(3)
    for i in range(300):
        x = _x(rng)
        if i % 50 == 0:
            x = dict.fromkeys(FEATURE_NAMES, 1e6 if i % 100 else 0.0)
        y = 1e6 if i % 77 == 0 else x["lag1"]
        p = m.predict_one(x)
        assert math.isfinite(p) and 0 < p <= 10.0
        m.learn_one(x, y)
        m.learn_one(x, math.nan)  # ignored, never poisons the model


def _check_does_not_mutate_input(make: Callable[[], Forecaster]) -> None:
    m = make()
    x = _x(np.random.default_rng(4))
    before = copy.deepcopy(x)
    for _ in range(30):
        m.predict_one(x)
        m.learn_one(x, 1.2)
    assert x == before


def _check_learns_a_shift(make: Callable[[], Forecaster], name: str) -> None:
    if name.split("+")[0] not in LEARNERS:
        pytest.skip("not an online learner")
    m = make()
    rng = np.random.default_rng(5)
    for _ in range(2500):  # the hybrid's residual learns at lr 0.005 (models.py says why)
        x = _x(rng)
        m.learn_one(x, 1.3)
    errors = [abs(m.predict_one(_x(rng)) - 1.3) for _ in range(20)]
    assert np.mean(errors) < 0.1


CHECKS = [
    _check_predict_before_learn, _check_deterministic, _check_finite_on_extremes,
    _check_does_not_mutate_input,
]


@pytest.mark.parametrize("name", sorted(f"{n}{s}" for n in FORECASTERS for s in ("", "+booster")))
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("_check_"))
def test_contract(name: str, check, booster) -> None:
    check(_factories(booster)[name])


@pytest.mark.parametrize("name", sorted(f"{n}{s}" for n in LEARNERS for s in ("", "+booster")))
def test_learners_follow_a_level_shift(name: str, booster) -> None:
    _check_learns_a_shift(_factories(booster)[name], name)


def test_prime_is_one_call_and_consistent(booster) -> None:
    xgb = XGBoostForecaster(booster, "1")
    rng = np.random.default_rng(6)
    xs = [_x(rng) for _ in range(20)]
    singles = [XGBoostForecaster(booster, "1").predict_one(x) for x in xs]
    xgb.prime(xs)
    assert [xgb.predict_one(x) for x in xs] == pytest.approx(singles, rel=1e-6)
    xs[0]["lag1"] = 5.0  # mutated after priming: recomputed, not served stale
    assert xgb.predict_one(xs[0]) == pytest.approx(
        XGBoostForecaster(booster, "1").predict_one(xs[0]))


def test_auto_select_picks_the_better_candidate() -> None:
    auto = make_forecaster("auto")
    assert isinstance(auto, AutoSelect)
    rng = np.random.default_rng(7)
    for i in range(600):  # a perfectly periodic relative series: river learns it, ewma cannot
        v = 2.0 if i % 2 else 1.0
        x = {"lag1": 3.0 - v, "ewma": 1.5, "season": v, "lag2": v, "trend": 0.0}
        auto.learn_one(x, v + float(rng.normal(0, 0.01)))
    assert auto.chosen in ("river", "hybrid")


def test_unknown_forecaster_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown forecaster"):
        make_forecaster("oracle")
