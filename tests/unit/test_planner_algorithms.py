"""Plan algorithms: partition, exact sums, cap, locality, optimality (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner_service.algorithms import (
    ALGORITHMS,
    fractional_lower_bound,
    get_plan,
    lists_from_owner,
    min_moves_for,
    owner_from_lists,
    step_time,
)
from shardsense.events import ShardMap, check_partition

pytestmark = pytest.mark.unit


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, int]:
    """A current owner array, speeds (some 0 = gone), a feasible global batch and cap."""
    world = draw(st.integers(1, 12))
    num_shards = draw(st.integers(1, 80))
    owner = np.array(draw(st.lists(st.integers(0, world - 1), min_size=num_shards,
                                   max_size=num_shards)))
    speeds = np.array(draw(st.lists(
        st.one_of(st.just(0.0), st.floats(0.01, 100.0)), min_size=world, max_size=world)))
    if not speeds.any():
        speeds[draw(st.integers(0, world - 1))] = 1.0
    live = int(np.count_nonzero(speeds))
    batch = draw(st.integers(live, 400))
    cap = draw(st.one_of(st.just(0), st.integers(-(-batch // live), batch)))
    return owner, speeds, batch, cap


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@settings(max_examples=150, deadline=None)
@given(problem=problems())
def test_every_plan_is_a_valid_map(algorithm: str, problem: tuple) -> None:
    owner, speeds, batch, cap = problem
    plan = get_plan(algorithm, owner, speeds, batch, cap)
    shards = lists_from_owner(plan.owner, speeds.size)
    check_partition(shards, owner.size)  # every shard exactly once
    assert plan.batch_sizes.sum() == batch
    assert (plan.batch_sizes[speeds > 0] >= 1).all()
    assert (plan.batch_sizes[speeds == 0] == 0).all()
    assert not np.isin(plan.owner, np.flatnonzero(speeds == 0)).any()
    if cap:
        assert plan.batch_sizes.max() <= cap
    assert plan.moved == int((plan.owner != owner).sum())
    ShardMap.build("j", 2, shards, plan.batch_sizes.tolist(), max_batch_size=cap)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@settings(max_examples=100, deadline=None)
@given(problem=problems())
def test_replanning_on_unchanged_speeds_moves_nothing(algorithm: str, problem: tuple) -> None:
    owner, speeds, batch, cap = problem
    first = get_plan(algorithm, owner, speeds, batch, cap)
    again = get_plan(algorithm, first.owner, speeds, batch, cap)
    assert again.moved == 0
    assert np.array_equal(again.batch_sizes, first.batch_sizes)


@settings(max_examples=150, deadline=None)
@given(problem=problems())
def test_minmax_is_optimal_and_moves_no_more_than_needed(problem: tuple) -> None:
    owner, speeds, batch, cap = problem
    plan = get_plan("minmax", owner, speeds, batch, cap)
    t = step_time(plan.batch_sizes, speeds)
    # Nothing beats the fractional bound, and no single sample can be moved to help.
    assert t >= fractional_lower_bound(speeds, batch) * (1 - 1e-9)
    for name in ("proportional", "static"):
        other = get_plan(name, owner, speeds, batch, cap)
        assert t <= step_time(other.batch_sizes, speeds) * (1 + 1e-9)
    # Fewest moves for near-proportional counts: at most one extra shard per rank.
    assert plan.moved <= np.ceil(min_moves_for(owner, plan.batch_sizes) - 1e-9) + speeds.size


def test_a_rank_twice_as_slow_gets_half_the_share() -> None:
    owner = np.repeat(np.arange(4), 16)
    plan = get_plan("minmax", owner, [1.0, 1.0, 1.0, 0.5], 112)
    assert plan.batch_sizes.tolist() == [32, 32, 32, 16]
    assert np.bincount(plan.owner).tolist() == [18, 18, 18, 10]
    assert plan.moved == 6  # rank 3 gives up only its surplus (ceil of its ideal 9.1)
    assert set(np.flatnonzero(plan.owner == 0)) >= set(range(16))  # keeps its own shards


def test_gone_rank_hands_its_shards_to_the_others() -> None:
    owner = np.repeat(np.arange(3), 4)
    plan = get_plan("proportional", owner, [1.0, 0.0, 1.0], 10)
    assert plan.batch_sizes.tolist() == [5, 0, 5]
    assert plan.moved == 4 and (plan.owner != 1).all()


def test_owner_round_trip_and_bad_arguments() -> None:
    shards = [[2, 0], [1], []]
    assert lists_from_owner(owner_from_lists(shards, 3), 3) == [[0, 2], [1], []]
    with pytest.raises(ValueError, match="algorithm"):
        get_plan("nope", [0], [1.0], 1)
    with pytest.raises(ValueError, match="global_batch"):
        get_plan("minmax", [0, 1], [1.0, 1.0], 1)
    with pytest.raises(ValueError, match="max_batch"):
        get_plan("minmax", [0, 1], [1.0, 1.0], 10, 4)
    with pytest.raises(ValueError, match="owner"):
        get_plan("minmax", [0, 5], [1.0, 1.0], 10)
    with pytest.raises(ValueError, match="speeds"):
        get_plan("minmax", [0, 1], [1.0, float("nan")], 10)
    with pytest.raises(ValueError, match="speeds"):
        get_plan("minmax", [0, 1], [0.0, 0.0], 10)


def test_settings_offer_exactly_the_registered_algorithms() -> None:
    import dataclasses

    from shardsense.settings import Settings

    (f,) = [f for f in dataclasses.fields(Settings) if f.name == "planner_algorithm"]
    assert set(f.metadata["choices"]) == set(ALGORITHMS)


@settings(max_examples=150, deadline=None)
@given(problem=problems())
def test_minmax_matches_an_independent_integer_optimum(problem: tuple) -> None:
    from benchmarks.plan_bench import integer_optimum, min_moves_for_makespan

    owner, speeds, batch, _ = problem
    plan = get_plan("minmax", owner, speeds, batch)
    t = step_time(plan.batch_sizes, speeds)
    assert t == pytest.approx(integer_optimum(speeds, batch), rel=1e-9)
    assert plan.moved >= min_moves_for_makespan(owner, speeds, t, batch)
