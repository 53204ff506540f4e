"""Planner decisions: gain vs cost, evidence in batches, noise, membership, move cost."""

from __future__ import annotations

import random

import pytest

from planner_service.decision import MoveCost
from planner_service.policy import PlanPolicy, PolicyConfig
from shardsense.events import Prediction, ShardMap

pytestmark = pytest.mark.unit

JOB = "job-p"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def base_map(world: int = 4, shards_per_rank: int = 16, batch: int = 32) -> ShardMap:
    shards = [list(range(r * shards_per_rank, (r + 1) * shards_per_rank)) for r in range(world)]
    return ShardMap.build(JOB, 1, shards, [batch] * world, num_samples=100_000)


def prediction(rank: int, tps: float, step: int = 10, job: str = JOB, **kw: object) -> Prediction:
    return Prediction(job, rank, f"e{rank}-{step}-{tps}", 0.0, time_per_sample_s=tps,
                      based_on_step=step, **kw)  # type: ignore[arg-type]


def make(clock: Clock, **kw: object) -> PlanPolicy:
    config = PolicyConfig(**{"evidence_steps": 0, "smoothing": 1.0, **kw})  # type: ignore[arg-type]
    policy = PlanPolicy(config, JOB, clock=clock)
    policy.observe_map(base_map())
    return policy


def feed(policy: PlanPolicy, tps: list[float], step: int = 10, **kw: object) -> None:
    for r, t in enumerate(tps):
        policy.observe_prediction(prediction(r, t, step, **kw))


def test_a_slow_rank_gets_a_new_map_with_its_share_halved() -> None:
    clock = Clock()
    policy = make(clock)
    feed(policy, [0.01, 0.01, 0.01, 0.02], step=50)
    d = policy.evaluate()
    assert d is not None and d.outcome == "published", d
    m = d.shard_map
    assert m is not None and m.map_version == 2 and m.worker_id == -1
    assert m.batch_sizes == [37, 37, 36, 18]
    assert (m.apply_epoch, m.apply_step) == (0, 50) and m.num_samples == 100_000
    assert d.moved_shards > 0 and d.move_cost_s == 0.0  # virtual shards: moving is free
    retry = policy.evaluate()  # not on the topic yet (publish failed?): offered again
    assert retry is not None and retry.shard_map is not None
    assert retry.shard_map.map_version == 2
    assert policy.observe_map(retry.shard_map)
    assert policy.evaluate() is None  # our own map coming back is no news
    feed(policy, [0.01, 0.01, 0.01, 0.02], step=51)
    again = policy.evaluate()
    assert again is not None and again.outcome == "skipped" and again.moved_shards == 0


def test_evidence_counts_batches_from_the_onset_the_processor_reports() -> None:
    clock = Clock()
    policy = make(clock, evidence_steps=3)
    feed(policy, [0.01] * 4, step=38)
    assert policy.evaluate().outcome == "skipped"  # type: ignore[union-attr]
    # The alarm's first re-levelled prediction covers batches 40..41: 2 of 3.
    feed(policy, [0.01, 0.025, 0.01, 0.01], step=41, onset_step=40)
    d = policy.evaluate()
    assert d is not None and d.outcome == "pending" and "evidence 2/3" in d.reason, d
    feed(policy, [0.01, 0.025, 0.01, 0.01], step=42, onset_step=40)
    d = policy.evaluate()
    assert d is not None and d.outcome == "published", d
    assert "3 batches of evidence since step 40" in d.reason


def test_without_an_onset_the_plan_must_keep_winning_for_the_evidence() -> None:
    clock = Clock()
    policy = make(clock, evidence_steps=4, noise_z=0.0)
    outcomes = []
    for step, slow in ((10, 0.02), (11, 0.01), (12, 0.02), (13, 0.02), (14, 0.02), (15, 0.02)):
        feed(policy, [0.01, 0.01, 0.01, slow], step=step)
        d = policy.evaluate()
        assert d is not None
        outcomes.append(d.outcome.value)
    # a blip, back to normal (the streak restarts), then four batches of winning
    assert outcomes == ["pending", "skipped", "pending", "pending", "pending", "published"]


def test_noise_around_equal_speeds_never_publishes() -> None:
    clock = Clock()
    policy = PlanPolicy(PolicyConfig(), JOB, clock=clock)
    policy.observe_map(base_map())
    rng = random.Random(7)
    decisions = []
    for i in range(1000):
        clock.t += 0.5
        feed(policy, [0.01 * rng.uniform(0.8, 1.2) for _ in range(4)], step=i)
        d = policy.evaluate()
        assert d is not None
        decisions.append(d.outcome)
    assert "published" not in decisions
    assert decisions.count("skipped") >= 990


def test_gain_below_cost_is_skipped_with_both_numbers() -> None:
    clock = Clock()
    policy = make(clock, shard_bytes=8 << 20, bandwidth_bps=1e3, horizon_steps=10)
    feed(policy, [0.01, 0.01, 0.01, 0.02])
    d = policy.evaluate()
    assert d is not None and d.outcome == "skipped"
    assert "not worth moving" in d.reason and d.move_cost_s > d.predicted_gain_s > 0


def test_silent_rank_forces_a_replan_and_its_return_another() -> None:
    clock = Clock()
    policy = make(clock, rank_timeout_s=30)
    feed(policy, [0.01] * 4)
    assert policy.evaluate().outcome == "skipped"  # type: ignore[union-attr]
    clock.t += 31
    feed(policy, [0.01] * 3, step=11)  # rank 3 stays silent
    d = policy.evaluate()
    assert d is not None and d.outcome == "published" and "rank 3 silent" in d.reason
    assert d.shard_map is not None and d.shard_map.batch_sizes[3] == 0
    assert d.shard_map.shards[3] == []
    policy.observe_map(d.shard_map)
    feed(policy, [0.01] * 4, step=12)
    back = policy.evaluate()
    assert back is not None and back.outcome == "published" and "rank 3 joined" in back.reason
    assert back.shard_map is not None and back.shard_map.map_version == 3
    assert back.shard_map.batch_sizes[3] > 0


def test_new_rank_beyond_the_map_grows_the_world() -> None:
    clock = Clock()
    policy = make(clock)
    feed(policy, [0.01] * 5)
    d = policy.evaluate()
    assert d is not None and d.shard_map is not None and d.shard_map.world_size == 5
    assert d.shard_map.batch_sizes == [26, 26, 26, 25, 25]


def test_waits_for_every_rank_at_start_up_and_ignores_other_jobs() -> None:
    clock = Clock()
    policy = make(clock, rank_timeout_s=30)
    feed(policy, [0.01] * 3)
    policy.observe_prediction(prediction(3, 0.5, job="other"))
    assert policy.evaluate() is None  # rank 3 may still be starting
    clock.t += 31
    feed(policy, [0.01] * 3)
    d = policy.evaluate()
    assert d is not None and d.outcome == "published" and "rank 3" in d.reason


def test_older_maps_are_ignored_and_cap_is_honoured() -> None:
    clock = Clock()
    policy = PlanPolicy(PolicyConfig(evidence_steps=0, smoothing=1.0, noise_z=0.0), JOB,
                        clock=clock)
    newer = ShardMap.build(JOB, 5, [[0, 1], [2, 3]], [20, 20], max_batch_size=24)
    assert policy.observe_map(newer)
    assert not policy.observe_map(base_map())  # version 1 < 5
    policy.observe_prediction(prediction(0, 0.001))
    policy.observe_prediction(prediction(1, 0.01))
    d = policy.evaluate()
    assert d is not None and d.shard_map is not None
    assert d.shard_map.batch_sizes == [24, 16] and d.shard_map.map_version == 6


def test_move_cost_starts_at_its_prior_and_learns_from_data_wait() -> None:
    cost = MoveCost(shard_bytes=8 << 20, bandwidth_bps=100e6, warmup_s=0.5, weight=0.5)
    assert cost.cost(10) == pytest.approx(10 * 0.0838861 + 0.5, rel=1e-5)
    assert cost.cost(0) == 0.0  # nothing moves: no warm-up either
    cost.observe(shards=4, extra_wait_s=0.0)  # the move caused no wait: cheaper
    assert cost.shard_s == pytest.approx(0.0838861 / 2, rel=1e-5)
    cost.observe(shards=0, extra_wait_s=5.0)  # nothing received: no information
    assert cost.samples == 1
    free = MoveCost(shard_bytes=0, bandwidth_bps=1.0)
    free.observe(shards=2, extra_wait_s=1e9)  # clamped
    assert free.shard_s == pytest.approx(30.0)
    with pytest.raises(ValueError, match="bandwidth_bps"):
        MoveCost(shard_bytes=1, bandwidth_bps=0)


def test_a_learnt_move_cost_holds_back_a_small_gain() -> None:
    clock = Clock()
    policy = make(clock, horizon_steps=10)
    policy.observe_transfer(shards=1, extra_wait_s=10.0)  # the last move cost 5 s per shard
    feed(policy, [0.01, 0.01, 0.01, 0.02])
    d = policy.evaluate()
    assert d is not None and d.outcome == "skipped" and "not worth moving" in d.reason


def test_config_from_settings_converts_units() -> None:
    from shardsense.settings import Settings

    c = PolicyConfig.from_settings(Settings.from_env({}, planner_warmup_ms=1500,
                                                     planner_schedule_ahead=0))
    assert c.warmup_s == 1.5 and c.min_improvement == 0.05 and c.gain_margin == 2.0
    assert c.evidence_steps == 2 and not c.schedule_ahead and c.min_confidence == 0.5


def test_replayed_predictions_count_from_their_own_timestamp() -> None:
    clock = Clock()
    policy = make(clock, rank_timeout_s=60)
    for rank in range(3):
        policy.observe_prediction(Prediction(JOB, rank, f"n{rank}", clock.t - 1,
                                             time_per_sample_s=0.01))
    # Rank 3's last prediction (replayed after a restart) is already 70 s old.
    policy.observe_prediction(Prediction(JOB, 3, "old", clock.t - 70, time_per_sample_s=0.01))
    d = policy.evaluate()
    assert d is not None and d.outcome == "published" and "rank 3 silent" in d.reason


def test_ranks_long_gone_are_forgotten() -> None:
    clock = Clock()
    policy = make(clock, rank_timeout_s=10)
    feed(policy, [0.01] * 6)  # ranks 4 and 5 join the 4-rank map
    d = policy.evaluate()
    assert d is not None and d.shard_map is not None
    policy.observe_map(d.shard_map)
    clock.t += 11
    feed(policy, [0.01] * 4, step=11)  # 4 and 5 fall silent: a map without them
    d = policy.evaluate()
    assert d is not None and d.shard_map is not None and d.shard_map.batch_sizes[4:] == [0, 0]
    policy.observe_map(d.shard_map)
    assert policy.ranks == 6
    clock.t += 20
    feed(policy, [0.01] * 4, step=12)
    policy.evaluate()
    assert policy.ranks == 4


@pytest.mark.parametrize("world", [4, 64])
def test_heavy_noise_on_many_ranks_never_flaps_but_a_real_straggler_wins(world: int) -> None:
    """+-20% noise for 100 rounds: no map; then rank 1 turns 1.5x slow: a map within 10.

    A round is one prediction per rank covering 5 batches (one report).
    """
    clock = Clock()
    policy = PlanPolicy(PolicyConfig(), JOB, clock=clock)
    per = 256 // world
    policy.observe_map(ShardMap.build(
        JOB, 1, [list(range(r * per, (r + 1) * per)) for r in range(world)], [32] * world,
        num_samples=32 * world * 1000))
    rng = random.Random(world)
    for i in range(110):
        clock.t += 1
        slow = 1.5 if i >= 100 else 1.0
        for r in range(world):
            f = slow if r == 1 else 1.0
            policy.observe_prediction(prediction(r, 0.01 * f * rng.uniform(0.8, 1.2),
                                                 step=5 * i))
        d = policy.evaluate()
        assert d is not None
        if d.outcome == "published":
            assert i >= 100 and d.shard_map is not None
            assert d.shard_map.batch_sizes[1] < min(d.shard_map.batch_sizes) + 1
            return
    raise AssertionError("the 1.5x straggler never got a new map")
