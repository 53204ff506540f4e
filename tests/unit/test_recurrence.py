"""The recurrence forecaster: contract checks (in the spirit of river.checks) and behaviour.

Every check runs the real :class:`RecurrenceBank` on synthetic step series whose
truth is known; the forecasts it emits must pass the real ``Prediction`` decoder.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardsense.events import Prediction
from stream_processors.recurrence import Forecast, RecurrenceBank, RecurrenceConfig, Verdict
from stream_processors.recurrence.fit import autocorrelation, pick_period, segment
from stream_processors.recurrence.positions import SlotPositions

pytestmark = pytest.mark.unit

EPOCH = 200  # steps per epoch of every series here (the counter restarts, interference not)


def burst(t: np.ndarray) -> np.ndarray:
    """Co-tenant: 2x for 50 of every 150 steps, first at step 50 (the bench's ``burst``)."""
    return np.where((t + 100) % 150 < 50, 2.0, 1.0)


def turns(t: np.ndarray) -> np.ndarray:
    return np.where(t % 200 < 100, 2.0, 1.0)


def thermal(t: np.ndarray) -> np.ndarray:
    return 1.0 + 1.5 * (t % 200) / 199


def wave10(t: np.ndarray) -> np.ndarray:
    return np.where(t % 10 < 5, 2.0, 1.0)


SIGNALS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "burst": burst, "turns": turns, "thermal": thermal, "wave10": wave10,
    "flat": lambda t: np.ones(len(t)), "step": lambda t: np.where(t >= 700, 2.0, 1.0),
}


def feed(bank: RecurrenceBank, signal: Callable[[np.ndarray], np.ndarray], steps: int,
         slot: int = 0, sigma: float = 0.03, seed: int = 0, per_report: int = 5,
         start: int = 0) -> None:
    """``steps`` steps of one slot in reports of ``per_report`` timings, epochs of EPOCH."""
    rng = np.random.default_rng(seed)
    t = np.arange(start, start + steps)
    y = signal(t) * np.exp(rng.normal(0.0, sigma, steps))
    for i in range(0, steps, per_report):
        sl = slice(i, i + per_report)
        n = len(t[sl])
        bank.update(np.full(n, slot), t[sl] // EPOCH, t[sl] % EPOCH, y[sl])


def change_steps(signal: Callable[[np.ndarray], np.ndarray], after: int, horizon: int,
                 min_change: float = 0.15) -> list[int]:
    """Offsets after step ``after`` where the noiseless signal jumps by >= min_change."""
    t = np.arange(after, after + horizon + 1)
    y = signal(t)
    return [int(i) for i in np.flatnonzero(np.abs(np.diff(np.log(y))) >= np.log1p(min_change))
            + 1]


# ---------------------------------------------------------------- contract checks


def check_decodes(f: Forecast) -> None:
    """A forecast goes into a Prediction that the one validator accepts unchanged."""
    p = Prediction.from_dict({
        "job_id": "j", "worker_id": 0, "event_id": "e", "ts": 1.0, "time_per_sample_s": 0.01,
        "uncertainty_s": 0.0, "slowdown": 1.0, "straggler": False, "based_on_step": 5,
        "forecast_offsets": f.offsets, "forecast_time_per_sample_s": f.in_seconds(0.01),
        "forecast_confidence": f.confidence})
    assert p.forecast_offsets == f.offsets
    assert 0.0 <= f.confidence <= 1.0
    if f.verdict is not Verdict.RECURRING:
        assert f.offsets == [] and f.confidence == 0.0


def check_replay_changes_nothing(bank: RecurrenceBank, steps: int) -> None:
    """An at-least-once replay of already seen timings leaves every forecast as it was."""
    before = bank.forecast(0)
    t = np.arange(steps - 50, steps)
    bank.update(np.zeros(50, np.int64), t // EPOCH, t % EPOCH, np.full(50, 9.0))
    assert bank.forecast(0) == before


def check_pickles(bank: RecurrenceBank, steps: int) -> None:
    copy = pickle.loads(pickle.dumps(bank))
    assert copy.forecast(0) == bank.forecast(0)
    feed(copy, burst, 40, start=steps)
    feed(bank, burst, 40, start=steps)
    assert copy.forecast(0) == bank.forecast(0)


def check_slots_are_independent(bank: RecurrenceBank, steps: int) -> None:
    """Another slot's timings do not move this slot's forecast."""
    before = bank.forecast(0)
    feed(bank, turns, steps, slot=3, seed=7)
    assert bank.forecast(0) == before


CHECKS = (check_replay_changes_nothing, check_pickles, check_slots_are_independent)


def yield_checks() -> Iterator[tuple[str, int, Callable[[RecurrenceBank, int], None]]]:
    for name in SIGNALS:
        for steps in (120, 900):
            for check in CHECKS:
                yield name, steps, check


@pytest.mark.parametrize(("name", "steps", "check"), list(yield_checks()),
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_contract(name: str, steps: int, check: Callable[[RecurrenceBank, int], None]) -> None:
    bank = RecurrenceBank()
    feed(bank, SIGNALS[name], steps)
    check_decodes(bank.forecast(0))
    check(bank, steps)
    check_decodes(bank.forecast(0))


# ---------------------------------------------------------------- what it finds


def levels_ahead(f: Forecast, horizon: int) -> np.ndarray:
    """The forecast as a level per step 1..horizon ahead (piecewise constant)."""
    idx = np.searchsorted(f.offsets, np.arange(1, horizon + 1), side="right") - 1
    return np.where(idx < 0, f.level_now, np.asarray([*f.levels, 1.0])[np.maximum(idx, 0)])


@pytest.mark.parametrize(("name", "period"), [("burst", 150), ("turns", 200), ("thermal", 200)])
def test_recurring_families_are_scheduled_to_within_two_steps(name: str, period: int) -> None:
    signal = SIGNALS[name]
    bank = RecurrenceBank()
    feed(bank, signal, 1000)
    f = bank.forecast(0)
    assert (f.verdict, f.period, f.confidence) == (Verdict.RECURRING, period, 1.0)
    if name != "thermal":  # a ramp's levels are 15% cuts of it, not jumps in it
        truth = change_steps(signal, 999, 300)
        assert len(f.offsets) == len(truth)
        assert max(abs(a - b) for a, b in zip(f.offsets, truth, strict=True)) <= 2
    error = levels_ahead(f, 300) / signal(np.arange(1000, 1300)) - 1
    assert np.median(np.abs(error)) < 0.08


def test_the_ten_step_wave_is_named_too_short_and_not_forecast() -> None:
    bank = RecurrenceBank()
    feed(bank, wave10, 400)
    f = bank.forecast(0)
    assert (f.verdict, f.period, f.offsets, f.confidence) == (Verdict.TOO_SHORT, 10, [], 0.0)
    assert f.level_now == pytest.approx(1.5, rel=0.05)  # the mean a held plan meets


@pytest.mark.parametrize("name", ["flat", "step"])
def test_no_recurrence_is_invented(name: str) -> None:
    bank = RecurrenceBank()
    for seed in range(3):
        feed(bank, SIGNALS[name], 1200, slot=seed, sigma=0.1, seed=seed)
        assert bank.forecast(seed).verdict in (Verdict.NONE, Verdict.FLAT)


def test_confidence_is_zero_until_two_periods_and_grows_with_each() -> None:
    bank = RecurrenceBank()
    seen = []
    for k in range(1, 6):
        feed(bank, turns, 200, start=(k - 1) * 200)
        seen.append(bank.forecast(0).confidence)
    assert seen[0] == 0.0
    assert 0 < seen[2] <= 2 / 3 + 1e-9 < seen[4] == 1.0
    assert seen == sorted(seen)


def test_confidence_drops_within_a_period_when_the_pattern_stops() -> None:
    bank = RecurrenceBank()
    feed(bank, burst, 900)
    assert bank.forecast(0).confidence == 1.0
    feed(bank, lambda t: np.ones(len(t)), 100, start=900)  # the burst due at 950 never comes
    assert bank.forecast(0).confidence < 0.5


def test_epoch_restarts_and_dropped_timings_keep_the_phase() -> None:
    """A counter that restarts per epoch and 10% of timings lost: the same schedule."""
    rng = np.random.default_rng(3)
    t = np.arange(1000)
    keep = rng.random(1000) > 0.1
    keep[-1] = True
    y = burst(t)
    bank = RecurrenceBank()
    for i in range(0, 1000, 10):
        m = keep[i : i + 10]
        tt = t[i : i + 10][m]
        bank.update(np.zeros(len(tt)), tt // EPOCH, tt % EPOCH, y[i : i + 10][m])
    f = bank.forecast(0)
    assert f.verdict is Verdict.RECURRING and f.period == 150
    assert f.offsets[:2] == change_steps(burst, 999, 300)[:2]


def test_forget_clears_a_slot_for_reuse() -> None:
    bank = RecurrenceBank()
    feed(bank, burst, 900)
    bank.forget([0])
    assert bank.forecast(0) == Forecast()
    feed(bank, turns, 1000)
    assert bank.forecast(0).period == 200


def test_memory_is_fixed_per_slot() -> None:
    bank = RecurrenceBank(4)
    per_slot = bank.memory_bytes / 4
    feed(bank, burst, 3000, slot=3)
    assert bank.memory_bytes == 4 * per_slot
    feed(bank, burst, 10, slot=9)
    assert bank.memory_bytes == bank.capacity * per_slot


def test_fits_per_update_are_capped() -> None:
    cfg = RecurrenceConfig(max_fits_per_update=8)
    bank = RecurrenceBank(64, cfg)
    t = np.arange(200)
    slots = np.repeat(np.arange(64), 200)
    bank.update(slots, np.tile(t // EPOCH, 64), np.tile(t % EPOCH, 64), np.ones(64 * 200))
    assert bank.fits == 8


@settings(max_examples=25, deadline=None)
@given(period=st.integers(40, 300), duty=st.floats(0.2, 0.8), amp=st.floats(1.5, 3.0),
       phase=st.integers(0, 299))
def test_any_square_wave_is_scheduled(period: int, duty: float, amp: float, phase: int) -> None:
    on = max(16, min(period - 16, round(duty * period)))

    def wave(t: np.ndarray) -> np.ndarray:
        return np.where((t + phase) % period < on, amp, 1.0)

    steps = min(3000, 5 * period + 50)
    cfg = RecurrenceConfig(history_steps=1024 if period <= 340 else 2048,
                           max_period=max(340, period + 10))
    bank = RecurrenceBank(config=cfg)
    feed(bank, wave, steps, sigma=0.02)
    f = bank.forecast(0)
    assert f.verdict is Verdict.RECURRING
    assert abs(f.period - period) <= 1
    truth = change_steps(wave, steps - 1, cfg.horizon_steps)
    assert abs(f.offsets[0] - truth[0]) <= 2


# ---------------------------------------------------------------- the pure steps


def test_positions_count_steps_over_epoch_ends_however_timings_are_batched() -> None:
    """Exact once each epoch's last step was seen; the same in one batch or in many."""
    rng = np.random.default_rng(0)
    rows = []  # (index within slot, slot, global step)
    for slot in range(5):  # increasing global steps with gaps, each epoch's last step present
        g = np.unique(np.concatenate([np.cumsum(rng.integers(1, 4, 80)), np.arange(49, 240, 50)]))
        rows += [(i, slot, int(v)) for i, v in enumerate(g[g < 240])]
    rows.sort()  # interleaved across slots, each slot in its own order
    s = np.array([r[1] for r in rows])
    g = np.array([r[2] for r in rows])
    first = {slot: min(r[2] for r in rows if r[1] == slot) for slot in range(5)}
    want = [r[2] - first[r[1]] for r in rows]
    whole = SlotPositions.empty(5)
    keep, pos = whole.advance(s, g // 50, g % 50)
    assert keep.all() and pos.tolist() == want
    parts = SlotPositions.empty(5)
    got = [parts.advance(s[i : i + 37], g[i : i + 37] // 50, g[i : i + 37] % 50)[1]
           for i in range(0, len(s), 37)]
    assert np.concatenate(got).tolist() == want


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match="max_period"):
        RecurrenceConfig(max_period=600, history_steps=1024)
    with pytest.raises(ValueError, match="hit_share"):
        RecurrenceConfig(hit_share=0.0)
    with pytest.raises(ValueError, match="same length"):
        RecurrenceBank().update([0, 1], [0], [0], [1.0])
    with pytest.raises(ValueError, match="steps"):
        RecurrenceBank().update([0], [0], [-1], [1.0])
    with pytest.raises(ValueError, match="max_lag"):
        autocorrelation(np.ones((1, 10)), 10)
    with pytest.raises(ValueError, match="tmpl"):
        segment(np.array([1.0, np.nan]), 0.15, 16)


def test_noise_has_no_period() -> None:
    x = np.random.default_rng(0).normal(1.0, 0.1, (1, 1024))
    assert pick_period(autocorrelation(x, 340)[0], 4, 340, 0.5, 0.5) == 0
