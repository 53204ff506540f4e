"""``shardsense eval``'s closed loop, recurrence scoring and retrain cadences, on traces whose
truth is known; and the command end to end on a small run."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.evaluate import main, make_fleet, progressive
from benchmarks.evaluate.outcomes import (
    LoopConfig,
    closed_loop,
    recurrence_forecasts,
    score_recurrence,
)
from benchmarks.evaluate.progressive import PolicyCadence
from benchmarks.evaluate.run import LOOP_MODELS
from shardsense.settings import Settings
from stream_processors.retrain import RetrainPolicy

pytestmark = pytest.mark.unit

LOOP = LoopConfig(sync_every=8, latency_steps=8, start=200)


def replay(family: str, ticks: int = 1200, workers: int = 4, seed: int = 0):
    level, noise = make_fleet(family, seed, ticks, workers)
    tps = level * noise
    scores = progressive(tps, models=LOOP_MODELS, warmup=200, keep=True, clean=level)
    forecasts, cost_s = recurrence_forecasts(tps, scores.fleet, LOOP)
    preds = {m: scores.preds[m] for m in LOOP_MODELS}
    outcome = closed_loop(tps, preds, scores.fleet, forecasts, 32 * workers, LOOP)
    return level, scores, forecasts, outcome, cost_s


@pytest.fixture(scope="module")
def burst():
    return replay("burst")


def test_nothing_beats_the_clairvoyant_and_static_is_beaten_on_a_straggler(burst) -> None:
    outcome = burst[3]
    assert min(outcome.ratio(m) for m in outcome.total_s) == 1.0
    assert outcome.ratio("static") > outcome.ratio("auto") >= outcome.ratio("oracle/sync")


def test_scheduling_ahead_of_a_recurring_burst_closes_most_of_the_gap(burst) -> None:
    outcome = burst[3]
    assert outcome.total_s["auto+rec"] < 0.95 * outcome.total_s["auto"]
    assert outcome.gap_closed("auto+rec") >= 0.7 > outcome.gap_closed("auto")


def test_recurrence_scores_change_points_within_two_steps(burst) -> None:
    level, scores, forecasts = burst[0], burst[1], burst[2]
    rec = score_recurrence(level, scores.preds["auto"], scores.fleet, forecasts, LOOP)
    assert rec.confident > 0 and rec.change_errors
    assert np.percentile(rec.change_errors, 90) <= 2
    assert np.mean(rec.level_err_rec) < 0.5 * np.mean(rec.level_err_flat)


def test_a_wave_shorter_than_a_sync_interval_gets_no_schedule_but_its_mean() -> None:
    """No schedule; planning on the wave's mean beats planning on its next step."""
    level, scores, forecasts, outcome, _ = replay("wave10", ticks=600)
    rec = score_recurrence(level, scores.preds["auto"], scores.fleet, forecasts, LOOP)
    assert rec.confident == 0 and rec.too_short > 0.9 * rec.pairs
    assert outcome.total_s["auto+rec"] < 0.95 * outcome.total_s["auto"]
    assert outcome.ratio("auto+rec") < 1.05 * outcome.ratio("oracle/sync")


def test_without_a_straggler_every_plan_is_the_equal_split() -> None:
    tps = np.full((400, 4), 1e-3)
    preds = {"auto": tps.copy()}
    forecasts, _ = recurrence_forecasts(tps, np.full(400, 1e-3), LOOP)
    outcome = closed_loop(tps, preds, np.full(400, 1e-3), forecasts, 64, LOOP)
    assert {round(outcome.ratio(m), 9) for m in outcome.total_s} == {1.0}


def test_new_cadence_trains_at_the_row_threshold_and_the_old_one_on_its_timer() -> None:
    level, noise = make_fleet("turns", 0, 800, 4)
    policy = RetrainPolicy.from_settings(Settings(processor_retrain_min_rows=400,
                                                  processor_retrain_min_interval_s=10))
    new = PolicyCadence(policy, 0.25)
    progressive(level * noise, models=("hybrid",), cadence=new)
    assert new.starts[0] == 101  # 400 rows: 4 workers a tick from the second tick on
    assert new.reasons[0] == "first" and "growth" in new.reasons
    old = PolicyCadence.fixed_timer(60.0, 0.25)
    progressive(level * noise, models=("hybrid",), cadence=old)
    assert old.starts == [240, 480, 720]


def test_eval_prints_every_table(capsys) -> None:
    code = main(["--families", "burst", "--seeds", "1", "--ticks", "600", "--workers", "4",
                 "--trials", "2", "--cost-ranks", "64",
                 "--traces", "docs/bench/traces/periodic-static.csv.gz"])
    out = capsys.readouterr().out
    assert code == 0
    for title in ("Progressive validation", "Closed loop", "Recurrence forecast",
                  "XGBoost cadence", "onset detection", "rec:periodic-static",
                  "recurrence cost at 64 ranks"):
        assert title in out
