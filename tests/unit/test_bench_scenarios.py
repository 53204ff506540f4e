"""Bench scenarios and oracle math: the pure parts of ``shardsense bench``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.bench.analysis import analyse, delays, goals
from benchmarks.bench.oracle import (
    adaptation_steps,
    clairvoyant,
    critical_path,
    estimate_overhead,
    ideal_shares,
    persistent,
    window_ratio,
)
from benchmarks.bench.scenarios import SCENARIO_NAMES, catalogue

pytestmark = pytest.mark.unit

BASE = 0.001


def test_catalogue_has_the_four_scenarios_of_issue_7():
    cat = catalogue(4, 300, BASE)
    assert tuple(cat) == SCENARIO_NAMES
    assert all(s.world == 4 for s in cat.values())
    with pytest.raises(ValueError, match="at least 2 ranks"):
        catalogue(1, 300, BASE)


def test_slow_rank_is_2x_from_step_0_and_others_untouched():
    s = catalogue(4, 300, BASE)["slow-2x"]
    assert [s.delay(r, 0) for r in range(4)] == [BASE, BASE, BASE, 2 * BASE]
    assert s.delay(3, 299) == 2 * BASE and s.straggler == 3 and s.onset == 0


def test_onset_is_a_third_of_the_run_and_3x_after_it():
    s = catalogue(4, 300, BASE)["onset-3x"]
    assert s.onset == 100
    assert s.delay(3, 99) == BASE and s.delay(3, 100) == pytest.approx(3 * BASE)
    assert s.persistent_delay(3, 150) == s.delay(3, 150)  # a level, no jitter


def test_periodic_pair_is_a_square_wave_in_turn_so_one_rank_is_always_slowed():
    s = catalogue(4, 300, BASE)["periodic"]
    assert s.periodic_ranks == (1, 2) and s.straggler is None
    for t in range(40):
        slowed = [r for r in range(4) if s.delay(r, t) > BASE]
        assert len(slowed) == 1 and slowed[0] in (1, 2)
    on = [s.interference(1, t) for t in range(10)]
    assert on == [2.0] * 5 + [1.0] * 5
    # persistent speed is the mean speed (1 + 1/2) / 2 = 0.75 of base
    assert s.persistent_delay(1, 3) == pytest.approx(BASE / 0.75)


def test_two_rank_catalogue_keeps_every_rank_in_range():
    cat = catalogue(2, 60, BASE)
    assert cat["slow-2x"].slow_rank == 1 and cat["periodic"].periodic_ranks == (0, 1)


def test_clairvoyant_is_work_over_total_speed_and_static_is_175x_for_one_2x_in_4():
    d = delays(catalogue(4, 10, BASE)["slow-2x"], 10)
    clair = clairvoyant(d, 64)
    assert clair == pytest.approx(np.full(10, 64 / 3.5 * BASE))
    static = critical_path(np.full((10, 4), 16), d)
    assert static / clair == pytest.approx(np.full(10, 1.75))
    assert ideal_shares(d, 64)[0] == pytest.approx([64 / 3.5] * 3 + [32 / 3.5])
    assert clairvoyant(d, 64, overhead=0.5)[0] == pytest.approx(clair[0] + 0.5)


def test_persistent_equals_clairvoyant_without_jitter_and_loses_to_it_with_jitter():
    cat = catalogue(4, 40, BASE)
    for name in ("slow-2x", "onset-3x", "none"):
        d = delays(cat[name], 40)
        pd = delays(cat[name], 40, persistent_only=True)
        assert persistent(d, pd, 64) == pytest.approx(clairvoyant(d, 64))
    d = delays(cat["periodic"], 40)
    pd = delays(cat["periodic"], 40, persistent_only=True)
    pers, clair = persistent(d, pd, 64), clairvoyant(d, 64)
    assert (pers >= clair - 1e-12).all() and pers.mean() > 1.3 * clair.mean()
    # shares from mean speeds [1, .75, .75, 1]; the slowed rank of the step sets the pace
    assert pers[0] == pytest.approx(64 * 0.75 / 3.5 * 2 * BASE)


def test_overhead_is_the_median_excess_after_warmup():
    assert estimate_overhead([1.0, 0.3, 0.35, 0.25], [0.2] * 4, skip=1) == pytest.approx(0.1)
    assert estimate_overhead([0.1, 0.1], [0.2, 0.2], skip=0) == 0.0
    assert estimate_overhead([1.0], [0.5], skip=5) == 0.0


def test_adaptation_counts_from_onset_and_needs_the_share_to_hold():
    d = np.array([[1.0, 1.0]] * 3 + [[1.0, 3.0]] * 10)  # ideal share of rank 1 after: 8 of 32
    b = np.array([[16, 16]] * 6 + [[23, 9]] * 2 + [[24, 8]] * 5)
    assert adaptation_steps(b, d, rank=1, onset=3, global_batch=32) == 5
    flicker = np.array([[16, 16]] * 6 + [[24, 8], [16, 16]] + [[16, 16]] * 5)
    assert adaptation_steps(flicker, d, rank=1, onset=3, global_batch=32) is None


def test_window_ratio_is_a_ratio_of_sums():
    assert window_ratio([2.0, 4.0], [1.0, 1.0]) == 3.0
    assert math.isnan(window_ratio([1.0], [1.0], start=1))


def _run(scenario, method, step_s, sizes, acc=0.95):
    n = len(step_s)
    return {"scenario": scenario, "method": method, "global_batch": 64, "step_s": step_s,
            "batch_sizes": sizes, "epoch_of_step": [t // 22 for t in range(n)],
            "accuracy": acc}


def test_analyse_and_goals_on_synthetic_runs_of_known_outcome():
    steps = 60
    cat = catalogue(4, steps, BASE)
    s = cat["onset-3x"]
    d = delays(s, steps)
    over = 0.002
    static_sizes = [[16] * 4] * steps
    static = critical_path(static_sizes, d) + over
    adapted = [[16] * 4] * 30 + [[19, 19, 20, 6]] * 30  # onset 20, maps at 30: 10 steps
    ss = critical_path(adapted, d) + over
    out = analyse(s, {"static": _run("onset-3x", "static", static.tolist(), static_sizes),
                      "shardsense": _run("onset-3x", "shardsense", ss.tolist(), adapted,
                                         acc=0.947)})
    rows = {r["method"]: r for r in out["rows"]}
    assert out["overhead_ms"] == pytest.approx(2.0)
    assert rows["shardsense"]["adaptation_steps"] == 10
    assert rows["shardsense"]["adapted_median_vs_clairvoyant"] < 1.05
    assert rows["static"]["vs_clairvoyant"] > rows["shardsense"]["vs_clairvoyant"] > 1.0
    assert rows["oracle (clairvoyant)"]["vs_clairvoyant"] == pytest.approx(1.0)
    got = {g["goal"].split(":")[0] + g["goal"][-12:]: g["met"] for g in goals([out])}
    assert sum(v is True for v in got.values()) == 3  # onset ratio, adaptation, accuracy
    assert sum(v is None for v in got.values()) == 2  # slow-2x and none were not run
