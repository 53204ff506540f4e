"""Planning ahead of forecast changes: apply points, one pending map at a time, misses corrected."""

from __future__ import annotations

import pytest

from planner_service.decision import Decision, Outcome
from planner_service.forecast import fleet_segments
from planner_service.policy import PlanPolicy, PolicyConfig
from shardsense.events import Prediction, ShardMap

pytestmark = pytest.mark.unit

JOB = "job-s"
SPE = 200  # steps per epoch: num_samples // global batch


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(**kw: object) -> tuple[PlanPolicy, Clock]:
    """A 4-rank job on default knobs whose ranks have reported steadily for 8 rounds."""
    clock = Clock()
    policy = PlanPolicy(PolicyConfig(**kw), JOB, clock=clock)  # type: ignore[arg-type]
    shards = [list(range(r * 16, (r + 1) * 16)) for r in range(4)]
    policy.observe_map(ShardMap.build(JOB, 1, shards, [32] * 4, num_samples=128 * SPE))
    for step in range(8):
        feed(policy, clock, step, [0.01] * 4)
    return policy, clock


def feed(policy: PlanPolicy, clock: Clock, step: int, levels: list[float], epoch: int = 0,
         **rank3: object) -> Decision | None:
    """One prediction per rank at ``step``; rank 3 gets the extra fields; then evaluate."""
    clock.t += 0.5
    for r, t in enumerate(levels):
        extra = rank3 if r == 3 else {}
        policy.observe_prediction(Prediction(
            JOB, r, f"e{r}-{epoch}-{step}", clock.t, time_per_sample_s=t, based_on_step=step,
            based_on_epoch=epoch, **extra))  # type: ignore[arg-type]
    return policy.evaluate()


def burst(offsets: list[int], levels: list[float], confidence: float = 0.9) -> dict[str, object]:
    return {"forecast_offsets": offsets, "forecast_time_per_sample_s": levels,
            "forecast_confidence": confidence}


def published(d: Decision | None) -> ShardMap:
    assert d is not None and d.outcome is Outcome.PUBLISHED and d.shard_map is not None, d
    return d.shard_map


def test_a_forecast_burst_gets_its_map_ahead_then_the_end_of_it_after_it_is_in_force() -> None:
    policy, clock = make()
    flat = [0.01, 0.01, 0.01]
    ahead = published(feed(policy, clock, 10, [*flat, 0.01], **burst([40, 90], [0.02, 0.01])))
    assert (ahead.apply_epoch, ahead.apply_step) == (0, 50)
    assert ahead.batch_sizes == [37, 37, 36, 18] and "scheduled ahead for step 50" in ahead.reason
    policy.observe_map(ahead)
    # Until the burst map is in force (its apply step) nothing else is published or replaced.
    d = feed(policy, clock, 30, [*flat, 0.01], **burst([20, 70], [0.02, 0.01]))
    assert d is not None and d.outcome is Outcome.SKIPPED, d
    # The burst came (re-levelled at its onset); the map for its end is scheduled now.
    end = published(feed(policy, clock, 60, [*flat, 0.02], straggler=True, onset_step=50,
                         **burst([40], [0.01])))
    assert (end.apply_epoch, end.apply_step) == (0, 100) and end.batch_sizes == [32] * 4


def test_apply_points_cross_epochs() -> None:
    policy, clock = make()
    m = published(feed(policy, clock, 190, [0.01] * 4, **burst([30], [0.02])))
    assert (m.apply_epoch, m.apply_step) == (1, 20)


def test_an_untrusted_forecast_or_scheduling_off_changes_nothing() -> None:
    for kw, confidence in (({}, 0.3), ({"schedule_ahead": False}, 0.9)):
        policy, clock = make(**kw)
        d = feed(policy, clock, 10, [0.01] * 4, **burst([40], [0.02], confidence))
        assert d is not None and d.outcome is Outcome.SKIPPED, (kw, d)


def test_a_wrong_forecast_is_corrected_by_the_reactive_path() -> None:
    policy, clock = make(evidence_steps=2)
    policy.observe_map(published(feed(policy, clock, 10, [0.01] * 4, **burst([40], [0.02]))))
    # The burst never comes: rank 3 stays at 0.01 under the burst map.
    outcomes, maps = [], []
    for step in (52, 53):
        d = feed(policy, clock, step, [0.01] * 4)
        assert d is not None
        outcomes.append(d.outcome)
        maps.append(d.shard_map)
    back = maps[-1]
    assert back is not None and back.batch_sizes == [32] * 4
    assert (back.apply_epoch, back.apply_step) == (0, 53)
    assert outcomes[:2] == [Outcome.PENDING, Outcome.PUBLISHED]


def test_a_change_now_while_a_map_is_scheduled_is_planned_against_the_map_in_force() -> None:
    policy, clock = make(evidence_steps=2)
    policy.observe_map(published(feed(policy, clock, 10, [0.01] * 4, **burst([40], [0.02]))))
    # Rank 1 turns 3x slow at step 18 (its alarm): the map in force is still v1.
    for r, t in enumerate([0.01, 0.03, 0.01, 0.01]):
        clock.t += 0.01
        policy.observe_prediction(Prediction(
            JOB, r, f"x{r}", clock.t, time_per_sample_s=t, based_on_step=20,
            straggler=(r == 1), onset_step=18 if r == 1 else 0,
            **(burst([30], [0.02]) if r == 3 else {})))  # type: ignore[arg-type]
    d = policy.evaluate()
    now = published(d)
    assert (now.apply_epoch, now.apply_step) == (0, 20) and now.map_version == 3
    assert now.batch_sizes[1] < now.batch_sizes[3]  # planned for now: rank 3 is not slow yet
    assert "over 30 steps" in now.reason  # its gain counts until the forecast change


def test_a_schedule_whose_miss_would_cost_more_than_it_gains_is_declined() -> None:
    policy, clock = make()
    # A 3-step blip forecast at 50% confidence: little to gain, a miss costs 18 steps.
    d = feed(policy, clock, 10, [0.01] * 4, **burst([40, 43], [0.02, 0.01], 0.5))
    assert d is not None and d.outcome is Outcome.SKIPPED and "not worth it" in d.reason, d


def test_segments_reject_an_empty_horizon() -> None:
    with pytest.raises(ValueError, match="end"):
        fleet_segments(10, 10, [0.01], {}, {})
