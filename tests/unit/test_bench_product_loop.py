"""The product-path bench's pure parts: methods, speed changes, stages, feasibility, targets."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench.analysis import delays
from benchmarks.bench.oracle import clairvoyant
from benchmarks.bench.scenarios import SCENARIO_NAMES, catalogue
from benchmarks.loop.feasibility import bounds, lagged
from benchmarks.loop.methods import METHODS, PENDING_SETTINGS, resolve_overlay
from benchmarks.loop.stages import changes, run_stages
from benchmarks.loop.targets import budget, gap_closed
from shardsense.settings import Settings

pytestmark = pytest.mark.unit

BASE = 0.001


def test_every_method_overlay_is_a_valid_settings_change_or_a_declared_hook():
    for m in METHODS.values():
        changes_, pending = resolve_overlay(m.overlay, shard_bytes=27_472)
        Settings().replace(**changes_)  # validates types and choices
        assert set(pending) <= PENDING_SETTINGS
    assert METHODS["shardsense"].overlay == {} and METHODS["shardsense"].path == "product"
    assert METHODS["inprocess"].path == "inprocess" and METHODS["static"].path == "baseline"
    with pytest.raises(ValueError, match="planner_intervall_ms"):
        resolve_overlay({"planner_intervall_ms": 1}, shard_bytes=1)


def test_recurring_scenarios_follow_issue_14():
    cat = catalogue(4, 300, BASE)
    assert tuple(cat) == SCENARIO_NAMES
    burst = cat["burst"]
    on = [t for t in range(450) if burst.delay(3, t) > BASE]
    assert len(on) == 150 and on[:2] == [50, 51] and on[49] == 99 and on[50] == 200
    assert burst.steps == 900 and burst.persistent_delay(3, 0) == pytest.approx(BASE / (5 / 6))
    turns = cat["turns"]
    for t in (0, 99, 100, 199, 200):
        slowed = [r for r in range(4) if turns.delay(r, t) > BASE]
        assert slowed == ([1] if t % 200 < 100 else [2])
    thermal = cat["thermal"]
    ramp = [thermal.delay(3, t) / BASE for t in (0, 100, 199, 200)]
    assert ramp == pytest.approx([1.0, 1 + 1.5 * 100 / 199, 2.5, 1.0])
    assert thermal.steps == 1200 and thermal.cycle(3) == 200 and thermal.cycle(0) == 1


def test_changes_find_onsets_recoveries_and_a_straggler_from_the_start():
    cat = catalogue(4, 300, BASE)
    assert [(c.step, c.rank, c.kind, c.until) for c in changes(cat["slow-2x"], 300)] == [
        (0, 3, "onset", 300)]
    assert [(c.step, c.kind, c.after) for c in changes(cat["onset-3x"], 300)] == [
        (100, "onset", 3.0)]
    assert changes(cat["none"], 300) == []
    thermal = changes(cat["thermal"], 600)  # a slow ramp is no onset; its reset recovers
    assert [(c.step, c.kind) for c in thermal] == [(200, "recovery"), (400, "recovery")]
    turns = changes(cat["turns"], 600)
    assert [(c.step, c.rank, c.kind) for c in turns[:4]] == [
        (0, 1, "onset"), (100, 1, "recovery"), (100, 2, "onset"), (200, 1, "onset")]
    assert turns[0].until == 100
    with pytest.raises(ValueError, match="jump"):
        changes(cat["none"], 10, jump=1.0)


def _synthetic_run() -> dict:
    """onset-3x on 4 ranks, 0.1 s steps from wall 1000; the map v2 is in force at 136."""
    s = catalogue(4, 300, BASE)["onset-3x"]
    steps, start = 300, 1000.0
    wall = [start + 0.1 * t for t in range(steps)]
    sizes = [[16] * 4 if t < 136 else [19, 19, 20, 6] for t in range(steps)]
    versions = [1 if t < 136 else 2 for t in range(steps)]
    d = delays(s, steps)
    rows: dict[str, list] = {k: [] for k in ("worker_id", "epoch", "step", "samples",
                                             "data_wait_s", "compute_s", "map_version",
                                             "ingest_ts", "end_ts")}
    for r in range(4):
        for t in range(steps):
            for k, v in zip(rows, (r, t // 200, t % 200, sizes[t][r], 0.0,
                                   d[t, r] * sizes[t][r], versions[t], wall[t] + 0.55,
                                   wall[t] + 0.1), strict=True):
                rows[k].append(v)
    preds = [{"arrived": 1010.33, "worker_id": 3, "time_per_sample_s": 0.0015,
              "straggler": True, "based_on_step": 102},
             {"arrived": 1010.83, "worker_id": 3, "time_per_sample_s": 0.00291,
              "straggler": True, "based_on_step": 107},
             {"arrived": 1009.0, "worker_id": 3, "time_per_sample_s": 0.003,  # before onset
              "straggler": True, "based_on_step": 88}]
    return {
        "step_s": [0.1] * steps, "global_batch": 64, "steps_per_epoch": 200,
        "batch_sizes": sizes,
        "ranks": [{"start_wall": wall, "versions": versions} for _ in range(4)],
        "map_watch": {"seen": {"2": [121, 1012.15]}, "agreed": {"2": [128, 1012.85, 136]}},
        "product": {
            "timings": rows, "predictions": preds,
            "decisions": [{"ts": 1011.03, "decision": "skipped", "map_version": 1},
                          {"ts": 1012.03, "decision": "published", "map_version": 2}],
            "maps": [{"arrived": 999.0, "map_version": 1, "batch_sizes": [16] * 4},
                     {"arrived": 1012.07, "map_version": 2, "batch_sizes": [19, 19, 20, 6]}],
        },
    }


def test_run_stages_times_every_stage_from_the_outside():
    scenario = catalogue(4, 300, BASE)["onset-3x"]
    [c] = run_stages(scenario, _synthetic_run())
    assert (c["step"], c["rank"], c["kind"]) == (100, 3, "onset")
    assert c["true_level_s"] == pytest.approx(0.003)
    got = {k: (round(c[k]["wall_s"], 2), c[k]["steps"]) for k in (
        "first_row", "alarm", "at_level", "decision", "published", "seen", "agreed",
        "in_force", "share")}
    assert got == {"first_row": (0.55, 5), "alarm": (0.33, 3), "at_level": (0.83, 8),
                   "decision": (2.03, 20), "published": (2.07, 20), "seen": (2.15, 21),
                   "agreed": (2.85, 28), "in_force": (3.6, 36), "share": (3.6, 36)}
    assert c["version"] == 2 and c["maps_in_window"] == 1 and c["first_map_batch"] == 6
    assert c["evaluations"] == {"skipped": 1, "pending": 0, "published": 1}
    assert c["settled_batch"] == 6 and c["ideal_batch"] == pytest.approx(6.4)


def test_feasibility_says_a_third_of_the_time_burst_cannot_give_25_percent():
    cat = catalogue(4, 300, BASE)
    burst = bounds(cat["burst"], 450, 64, overhead=0.0, lags=(8,), hold=8)
    assert burst["static_vs_clairvoyant_work"] == pytest.approx(1.2727, abs=1e-3)
    assert not burst["beat_static_25_feasible"] and burst["best_gain_vs_static"] < 0.25
    turns = bounds(cat["turns"], 600, 64, overhead=0.005, lags=(8, 72), hold=8)
    assert turns["beat_static_25_feasible"]
    assert turns["lagged"]["8"]["gap_closed"] > turns["lagged"]["72"]["gap_closed"]
    d = delays(cat["onset-3x"], 300)
    assert lagged(d, 64, lag=0) == pytest.approx(clairvoyant(d, 64))
    with pytest.raises(ValueError, match="lag"):
        lagged(d, 64, lag=-1)


def test_gap_closed_and_budget():
    summary = {"rows": [{"method": "static", "step_ms": 100.0},
                        {"method": "shardsense", "step_ms": 70.0},
                        {"method": "oracle (clairvoyant)", "step_ms": 60.0}]}
    vs, closed = gap_closed(summary, "shardsense")
    assert vs == pytest.approx(0.7) and closed == pytest.approx(0.75)
    assert gap_closed(summary, "reactive") == (None, None)
    runs = [{"scenario": "onset-3x", "method": "shardsense",
             "stages": run_stages(catalogue(4, 300, BASE)["onset-3x"], _synthetic_run())}]
    b = {x["stage"]: x for x in budget(runs, "shardsense")}
    assert b["in_force"]["steps"] == 36 and b["in_force"]["reached"] == 1
    assert np.isclose(b["decision"]["wall_s"], 2.03)
