"""The pure parts of the runtime: virtual shards, the epoch schedule, map checks."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.maps import (
    JobShape,
    elastic_map,
    equal_batch_sizes,
    map_problem,
    rebalance,
)
from producers.schedule import Assignment, EpochSchedule
from producers.shards import EpochOrder, VirtualShards
from shardsense.events import ShardMap, moved_shards

pytestmark = pytest.mark.unit


def test_virtual_shards_cover_the_dataset_without_copying():
    vs = VirtualShards(1797, 1024)
    assert sum(vs.sizes) == 1797 and max(vs.sizes) - min(vs.sizes) <= 1
    order = EpochOrder(vs, seed=3, epoch=0)
    every = order.indices([(s, 0, vs.sizes[s]) for s in range(1024)])
    assert sorted(every) == list(range(1797))


@pytest.mark.parametrize(
    ("samples", "shards", "name"),
    [(0, 1, "num_samples"), (10, 0, "num_shards"), (3, 4, "num_shards")],
)
def test_virtual_shards_reject_bad_sizes_naming_the_argument(samples, shards, name):
    with pytest.raises(ValueError, match=name):
        VirtualShards(samples, shards)


def test_epoch_order_is_seeded_by_seed_and_epoch():
    vs = VirtualShards(100, 5)
    a, b, c = EpochOrder(vs, 1, 0), EpochOrder(vs, 1, 0), EpochOrder(vs, 1, 1)
    assert a.permutation(2) == b.permutation(2)
    assert a.priority == b.priority
    assert a.permutation(2) != c.permutation(2)


def test_rebalance_moves_as_few_shards_as_possible():
    old = [[0, 1, 2, 3], [4, 5, 6, 7]]
    grown = rebalance(old, 4, 8)
    assert grown[:2] == [[0, 1], [4, 5]] and sorted(grown[2] + grown[3]) == [2, 3, 6, 7]
    shrunk = rebalance(grown, 2, 8)
    assert shrunk == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert rebalance([], 3, 7) == [[0, 1, 2], [3, 4], [5, 6]]


def test_equal_batch_sizes_honour_the_cap_and_name_the_argument():
    assert equal_batch_sizes(64, 3) == [22, 21, 21]
    with pytest.raises(ValueError, match="max_batch_size"):
        equal_batch_sizes(64, 2, cap=16)
    with pytest.raises(ValueError, match="global_batch_size"):
        equal_batch_sizes(2, 3)


def test_map_problem_names_each_reason():
    job = JobShape("j", 100, 4, 8, max_batch_size=6)
    good = ShardMap.build("j", 2, [[0, 1], [2, 3]], [4, 4], num_samples=100)
    assert map_problem(good, job, 2) is None
    assert "ranks" in (map_problem(good, job, 3) or "")
    bigger = dataclasses.replace(good, global_batch_size=9)
    assert "global batch" in (map_problem(bigger, job, 2) or "")
    dup = dataclasses.replace(good, shards=[[0, 1], [1, 3]])
    assert "assigned twice" in (map_problem(dup, job, 2) or "")
    capped = ShardMap.build("j", 3, [[0, 1], [2, 3]], [7, 1], num_samples=100)
    assert "max_batch_size" in (map_problem(capped, job, 2) or "")
    other = ShardMap.build("k", 3, [[0, 1], [2, 3]], [4, 4])
    assert "job" in (map_problem(other, job, 2) or "")
    zero = ShardMap.build("j", 3, [[0, 1], [2, 3]], [8, 0])
    assert "at least one" in (map_problem(zero, job, 2) or "")


def test_elastic_map_is_valid_and_versioned():
    job = JobShape("j", 100, 8, 12)
    first = elastic_map(job, 1, 2, None, reason="first")
    assert first.shards == [[0, 1, 2, 3], [4, 5, 6, 7]] and first.batch_sizes == [6, 6]
    second = elastic_map(job, 2, 3, first, reason="grow")
    assert second.map_version == 2 and map_problem(second, job, 3) is None
    assert moved_shards(_assign(first).shards, _assign(second).shards) == 2


def _assign(m: ShardMap) -> Assignment:
    return Assignment(m.map_version, tuple(map(tuple, m.shards)), tuple(m.batch_sizes))


# ---------------------------------------------------------------- property: pure schedule


@st.composite
def assignments(draw, num_shards: int, batch: int, version: int) -> Assignment:
    world = draw(st.integers(1, min(4, batch)))
    owner = draw(st.lists(st.integers(0, world - 1), min_size=num_shards, max_size=num_shards))
    shards = tuple(tuple(s for s in range(num_shards) if owner[s] == r) for r in range(world))
    cuts = sorted(draw(st.lists(st.integers(1, batch - 1), min_size=world - 1,
                                max_size=world - 1, unique=True))) if world > 1 else []
    bounds = [0, *cuts, batch]
    sizes = tuple(bounds[i + 1] - bounds[i] for i in range(world))
    return Assignment(version, shards, sizes)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_schedule_visits_every_kept_sample_once_under_random_plans(data):
    n = data.draw(st.integers(4, 200), label="num_samples")
    num_shards = data.draw(st.integers(1, min(n, 24)), label="num_shards")
    batch = data.draw(st.integers(4, min(n, 20)), label="global_batch")
    vs = VirtualShards(n, num_shards)
    order = EpochOrder(vs, data.draw(st.integers(0, 2**31)), data.draw(st.integers(0, 50)))
    first = data.draw(assignments(num_shards, batch, 1))
    steps = n // batch
    changes = data.draw(st.lists(st.integers(0, steps), max_size=4, unique=True))
    plan = [(s, data.draw(assignments(num_shards, batch, v + 2))) for v, s in enumerate(changes)]

    def run(resume_at: int) -> dict[tuple[int, int], list[int]]:
        sched = EpochSchedule(vs.sizes, order.priority, batch, first)
        for s, a in plan:
            sched.schedule(s, a)
        sched.advance_to(resume_at)
        out = {}
        for step in range(resume_at, sched.steps):
            world = sched.assignment_at(step).world_size
            for r in range(world):
                out[(step, r)] = order.indices(sched.segments(r, step, record=range(world)))
                assert len(out[(step, r)]) == sched.assignment_at(step).batch_sizes[r]
        return out

    full = run(0)
    seen = [i for idx in full.values() for i in idx]
    assert len(seen) == steps * batch == len(set(seen))
    assert set(seen) <= set(range(n))
    resume = data.draw(st.integers(0, steps), label="resume_at")
    replay = run(resume)
    assert replay == {k: v for k, v in full.items() if k[0] >= resume}


def test_schedule_refuses_to_rewrite_simulated_steps():
    a = Assignment(1, ((0,), (1,)), (1, 1))
    sched = EpochSchedule([4, 4], [0, 1], 2, a)
    sched.segments(0, 1)
    with pytest.raises(RuntimeError, match="already simulated"):
        sched.schedule(1, Assignment(2, ((1,), (0,)), (1, 1)))


def test_withdrawing_planned_maps_keeps_simulated_steps_and_step_0():
    a, b, c = (Assignment(v, ((0,), (1,)), (1, 1)) for v in (1, 2, 3))
    sched = EpochSchedule([8, 8], [0, 1], 2, a)
    sched.schedule(3, b)
    sched.schedule(6, c)
    sched.segments(0, 1)  # steps 0 and 1 simulated
    assert sched.withdraw(4) == [6] and sched.planned() == [(0, a), (3, b)]
    assert sched.withdraw(2) == [3] and sched.planned() == [(0, a)]
    sched.schedule(5, c)
    sched.segments(0, 5)
    with pytest.raises(RuntimeError, match="already simulated"):
        sched.withdraw(4)
    with pytest.raises(ValueError, match="from_step"):
        sched.withdraw(0)


def test_dropped_tail_differs_between_epochs():
    vs = VirtualShards(103, 10)
    a = Assignment(1, (tuple(range(5)), tuple(range(5, 10))), (5, 5))
    dropped = []
    for epoch in range(4):
        order = EpochOrder(vs, 0, epoch)
        sched = EpochSchedule(vs.sizes, order.priority, 10, a)
        kept = {i for step in range(sched.steps) for r in (0, 1)
                for i in order.indices(sched.segments(r, step, record=(0, 1)))}
        dropped.append(frozenset(set(range(103)) - kept))
    assert all(len(d) == 3 for d in dropped) and len(set(dropped)) > 1
