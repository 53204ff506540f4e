"""ShardSenseRuntime in one process: exactly-once, map agreement, restarts, timing."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from producers.engine import LoaderOptions, ShardSenseRuntime
from producers.memory import InMemoryMapSource, InMemoryTimingSink
from shardsense.events import ShardMap

pytestmark = pytest.mark.unit

AS_LISTS = LoaderOptions(collate_fn=list)  # batches as plain lists of indices


def make(n=103, shards=10, world=3, batch=12, maps=None, **kw) -> ShardSenseRuntime:
    return ShardSenseRuntime(list(range(n)), num_shards=shards, num_workers=world,
                             global_batch_size=batch, maps=maps or InMemoryMapSource(),
                             loader=kw.pop("loader", AS_LISTS), sync_every=kw.pop("sync_every", 2),
                             **kw)


def run_epoch(rt: ShardSenseRuntime, on_step=None) -> list[list[list[int]]]:
    """Lockstep over all ranks; returns steps[step][rank] -> indices."""
    loaders = [rt.get_dataloader(r) for r in range(rt.world.size)]
    steps = []
    for step, batches in enumerate(zip(*loaders, strict=True)):
        steps.append([list(b) for b in batches])
        if on_step:
            on_step(step)
    return steps


def flat(steps) -> list[int]:
    return [i for per_rank in steps for idx in per_rank for i in idx]


def test_drop_in_loop_visits_each_kept_sample_once_and_publishes_v1():
    maps = InMemoryMapSource()
    rt = make(maps=maps)
    first = maps.latest()
    assert first is not None and first.map_version == 1 and first.batch_sizes == [4, 4, 4]
    for epoch in range(3):
        seen = flat(run_epoch(rt))
        assert len(seen) == len(set(seen)) == rt.steps_per_epoch * 12 == 96
        rt.epoch_end(epoch)
    assert rt.epoch == 3


def test_mid_epoch_map_applies_at_an_agreed_step_and_batches_follow_it():
    maps = InMemoryMapSource()
    rt = make(maps=maps)
    new = ShardMap.build("default", 2, [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]], [6, 4, 2],
                         num_samples=103)
    steps = run_epoch(rt, on_step=lambda s: maps.publish(new) if s == 1 else None)
    sizes = [[len(b) for b in per_rank] for per_rank in steps]
    # published after step 1; seen at the sync point of step 2, before any rank drew step 2:
    # it applies at step 2 itself
    assert sizes[:2] == [[4, 4, 4]] * 2 and sizes[2:] == [[6, 4, 2]] * (len(steps) - 2)
    assert len(set(flat(steps))) == len(flat(steps)) == 96
    assert [r.map_version for r in rt.sinks[0].records][1:3] == [1, 2]


SHARDS_3 = [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def at(version, sizes, epoch=0, step=0, shards=SHARDS_3):
    """A small map (owners kept) asking to apply from ``(epoch, step)``."""
    return ShardMap.build("default", version, shards, sizes, apply_epoch=epoch, apply_step=step)


def publisher(maps, when):
    """on_step hook: publish ``when[step]`` after that step's batches (rank 0 has it next step)."""
    return lambda step: maps.publish(when[step]) if step in when else None


def sizes_of(steps):
    return [tuple(len(b) for b in per_rank) for per_rank in steps]


def test_a_map_published_ahead_applies_exactly_at_its_step():
    maps = InMemoryMapSource()
    rt = make(n=400, maps=maps, sync_every=4)  # 33 steps
    # v2 asks for step 5 and is seen at the sync point of step 4; v3 asks for 13, seen at 8
    when = {2: at(2, [6, 4, 2], step=5), 6: at(3, [2, 4, 6], step=13)}
    sizes = sizes_of(run_epoch(rt, publisher(maps, when)))
    assert sizes == [(4, 4, 4)] * 5 + [(6, 4, 2)] * 8 + [(2, 4, 6)] * 20
    assert [s for s, _ in rt._plan] == [0, 5, 13]


@pytest.mark.parametrize(("v6_step", "expected"), [
    (10, [(4, 4, 4)] * 10 + [(2, 4, 6)] * 23),  # v6 before v5: v6 from 10, v5 never
    (18, [(4, 4, 4)] * 18 + [(2, 4, 6)] * 15),  # v6 after v5: it replaces v5 all the same
])
def test_a_newer_map_replaces_a_scheduled_one_and_applies_where_it_asks(v6_step, expected):
    maps = InMemoryMapSource()
    rt = make(n=400, maps=maps, sync_every=4)
    # v5 is scheduled at step 14 at the sync point of step 4; v6 arrives before 14 (sync 8)
    when = {1: at(5, [6, 4, 2], step=14), 5: at(6, [2, 4, 6], step=v6_step)}
    assert sizes_of(run_epoch(rt, publisher(maps, when))) == expected
    assert 5 not in {r.map_version for r in rt.sinks[0].records}


def test_a_map_whose_point_passed_applies_at_the_next_sync_step():
    maps = InMemoryMapSource()
    rt = make(n=400, maps=maps, sync_every=4)
    rt.epoch_end(0)  # epoch 1 now: a map for epoch 0 step 20 is late
    sizes = sizes_of(run_epoch(rt, publisher(maps, {9: at(2, [6, 4, 2], epoch=0, step=20)})))
    assert sizes == [(4, 4, 4)] * 12 + [(6, 4, 2)] * 21


def test_a_map_for_a_later_epoch_waits_and_a_restart_replays_it():
    def trace(restart_at: int | None) -> list[list[list[int]]]:
        maps = InMemoryMapSource()
        rt = make(n=200, maps=maps, sync_every=4)  # 16 steps
        box = {}

        def hook(step):
            if step == 1:  # decided at the sync point of step 4, held for epoch 2
                maps.publish(at(2, [6, 4, 2], epoch=2, step=6))
            if step == restart_at:
                box["state"] = rt.state_dict()

        out = run_epoch(rt, hook)
        if restart_at is not None:
            decided = box["state"]["ahead"] is not None
            assert decided == (restart_at >= 4)
            # once decided, a fresh source will do: replay needs only the state
            rt = make(n=200, maps=InMemoryMapSource() if decided else maps, sync_every=4)
            rt.load_state_dict(box["state"])
            out = out[: restart_at + 1] + run_epoch(rt)
        for epoch in (0, 1):
            rt.epoch_end(epoch)
            if epoch == 0:
                out += run_epoch(rt)
        return out + run_epoch(rt)

    full = trace(None)
    assert sizes_of(full) == [(4, 4, 4)] * (32 + 6) + [(6, 4, 2)] * 10
    assert full == trace(9) == trace(2)
    assert len(set(flat(full[32:]))) == len(flat(full[32:])) == 16 * 12


@pytest.mark.parametrize("sync_every", [4, 8])
def test_a_map_is_in_force_within_one_sync_interval_and_exactly_when_asked(sync_every):
    from benchmarks.map_lead import events, run_sim, summarise

    aheads = [None, sync_every // 2, sync_every]
    evs, steps = events(sync_every, 0, list(range(sync_every)), aheads)
    rows = {r["ahead"]: r for r in summarise(evs, run_sim(4, sync_every, 0, evs, steps))}
    assert all(r["missing"] == 0 for r in rows.values())
    # at once: from the step rank 0 has it to the next sync step, the step itself included
    assert rows[None]["delay_max"] == sync_every - 1
    assert rows[None]["delay_mean"] == (sync_every - 1) / 2
    assert rows[sync_every]["error_max"] == 0  # asked a sync interval ahead: exactly then
    assert 0 < rows[sync_every // 2]["error_max"] < sync_every // 2  # short notice: late


def test_old_duplicate_and_broken_maps_are_ignored_or_rejected_with_a_reason(caplog):
    maps = InMemoryMapSource()
    rt = make(maps=maps)
    good = ShardMap.build("default", 2, [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]], [6, 4, 2])
    broken = dataclasses.replace(good, map_version=3, shards=[[0, 1], [1, 2, 3], [4, 5, 6, 7]])
    maps.publish(good)
    with caplog.at_level(logging.WARNING, logger="producers.agreement"):
        steps = run_epoch(rt, on_step=lambda s: maps.publish(broken) if s == 4 else None)
    assert [len(b) for b in steps[-1]] == [6, 4, 2]  # v2 stays in force
    assert "rejected map v3" in caplog.text and "assigned twice" in caplog.text
    assert caplog.text.count("rejected map v3") == 1
    maps.publish(dataclasses.replace(good, map_version=1, batch_sizes=[10, 1, 1]))
    rt.epoch_end(0)
    assert rt.map_version == 2


def test_large_reshard_waits_for_epoch_end():
    maps = InMemoryMapSource()
    rt = make(maps=maps, mid_epoch_move_limit=0.2)
    moved = ShardMap.build("default", 2, [[7, 8, 9], [0, 1, 2, 3], [4, 5, 6]], [4, 4, 4])
    maps.publish(moved)
    run_epoch(rt)
    assert {r.map_version for r in rt.sinks[0].records} == {1}
    rt.epoch_end(0)
    assert rt.map_version == 2


def test_resume_replays_the_same_order_including_a_decided_map():
    def trace(restart_at: int | None) -> list[list[list[int]]]:
        maps = InMemoryMapSource()
        rt = make(maps=maps)
        new = ShardMap.build("default", 2, [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]], [5, 4, 3])
        out: list[list[list[int]]] = []
        box = {}

        def hook(step):
            if step == 1:
                maps.publish(new)
            if step == restart_at:
                box["state"] = rt.state_dict()
        out = run_epoch(rt, hook)
        if restart_at is None:
            return out
        rt2 = make(maps=InMemoryMapSource())  # a fresh source: replay needs only the state
        rt2.load_state_dict(box["state"])
        return out[: restart_at + 1] + run_epoch(rt2)

    assert trace(None) == trace(2) == trace(5)


def test_tail_is_dropped_and_differs_between_epochs():
    rt = make()
    dropped = []
    for epoch in range(3):
        dropped.append(frozenset(set(range(103)) - set(flat(run_epoch(rt)))))
        rt.epoch_end(epoch)
    assert all(len(d) == 103 % 12 for d in dropped) and len(set(dropped)) > 1


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="global_batch_size"):
        make(batch=2)
    with pytest.raises(ValueError, match="max_batch_size"):
        make(batch=12, max_batch_size=3)
    with pytest.raises(ValueError, match="sync_every"):
        make(sync_every=0)
    with pytest.raises(ValueError, match="worker_id"):
        make().get_dataloader(3)
    with pytest.raises(ValueError, match="epoch"):
        make().epoch_end(2)


def test_a_raising_sink_never_reaches_the_training_loop():
    class Broken:
        dropped = 0

        def offer(self, *args):
            raise RuntimeError("boom")

        def close(self):
            raise RuntimeError("boom")

    rt = make(world=1, batch=8, sink=Broken())
    assert len(flat(run_epoch(rt))) == 96
    assert rt.get_dataloader(0).telemetry_errors == rt.steps_per_epoch
    rt.close()


def test_timing_records_cover_every_batch():
    sink = InMemoryTimingSink()
    rt = make(world=1, batch=8, sink=sink)
    run_epoch(rt)
    assert [r.step for r in sink.records] == list(range(rt.steps_per_epoch))
    assert all(r.samples == 8 and r.map_version == 1 and r.compute_s >= 0 for r in sink.records)


def test_package_imports_do_not_import_torch():
    code = ("import sys, shardsense, producers, shardsense.events\n"
            "assert 'torch' not in sys.modules\n"
            "from shardsense import ShardSenseRuntime\n"
            "from shardsense.runtime.engine import ShardSenseRuntime as B\n"
            "assert ShardSenseRuntime is B\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- property: runtime


def random_map(data, version, world, batch, shards=10, point=(0, 0)):
    owner = data.draw(st.lists(st.integers(0, world - 1), min_size=shards, max_size=shards))
    cuts = sorted(data.draw(st.lists(st.integers(1, batch - 1), min_size=world - 1,
                                     max_size=world - 1, unique=True)))
    bounds = [0, *cuts, batch]
    return ShardMap.build("default", version,
                          [[s for s in range(shards) if owner[s] == r] for r in range(world)],
                          [bounds[i + 1] - bounds[i] for i in range(world)], num_samples=0,
                          apply_epoch=point[0], apply_step=point[1])


def asked_point(data, epoch, steps):
    """Where a map asks to apply: at once, or anywhere from last epoch to past this one's end."""
    if data.draw(st.integers(0, 2), label="asks at once") == 0:
        return (0, 0)
    return (max(0, epoch + data.draw(st.integers(-1, 1), label="epoch offset")),
            data.draw(st.integers(0, steps + 2), label="apply step"))


def expected_point(asked, visible, sync, steps):
    """The runtime's rule, restated: from the first decision at or after ``visible``."""
    epoch, step = visible
    sync_step = -(-step // sync) * sync  # the loader's next sync point (step 0 has none)
    decision = (epoch, sync_step) if 0 < sync_step < steps else (epoch + 1, 0)
    epoch, step = max(asked, decision)
    return (epoch + 1, 0) if step >= steps else (epoch, step)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_exactly_once_under_random_maps_restarts_and_world_changes(data):
    n = data.draw(st.integers(40, 150), label="num_samples")
    batch = data.draw(st.integers(4, 16), label="global_batch")
    seed = data.draw(st.integers(0, 10_000), label="seed")
    shards = data.draw(st.integers(1, 24), label="num_shards")
    sync = data.draw(st.integers(1, 4), label="sync_every")
    limit = data.draw(st.sampled_from([0.25, 1.0]), label="mid_epoch_move_limit")
    maps = InMemoryMapSource()

    def runtime(world):
        return ShardSenseRuntime(list(range(n)), num_shards=shards, num_workers=world,
                                 global_batch_size=batch, seed=seed, sync_every=sync,
                                 maps=maps, loader=AS_LISTS, mid_epoch_move_limit=limit)

    rt = runtime(data.draw(st.integers(1, 4), label="world"))
    mine: dict[int, tuple[tuple[int, int], tuple[int, int], int]] = {}  # asked, expected, epoch
    bad: set[int] = set()
    in_force: list[tuple[int, int, int]] = []  # (epoch, step, version) of every step run
    for epoch in range(3):
        seen: list[int] = []
        iters = [iter(rt.get_dataloader(r)) for r in range(rt.world.size)]
        while True:
            batches = [next(it, None) for it in iters]
            if all(b is None for b in batches):
                break
            assert all(b is not None for b in batches), "ranks disagree on the step count"
            sizes = rt._schedule.assignment_at(rt.step - 1).batch_sizes
            assert [len(b) for b in batches] == list(sizes)
            in_force.append((epoch, rt.step - 1, rt.map_version))
            seen.extend(i for b in batches for i in b)
            action = data.draw(st.sampled_from(["none", "map", "map", "bad", "old", "restart"]))
            event(action)
            version = (maps.latest() or random_map(data, 1, 1, batch, shards)).map_version
            if action == "map":
                asked = asked_point(data, epoch, rt.steps_per_epoch)
                maps.publish(random_map(data, version + 1, rt.world.size, batch, shards, asked))
                mine[version + 1] = (asked, expected_point(asked, (epoch, rt.step), sync,
                                                           rt.steps_per_epoch), epoch)
            elif action == "bad":
                good = random_map(data, version + 1, rt.world.size, batch, shards)
                twice = [list(own) for own in good.shards]
                twice[0].append(next(s for own in good.shards for s in own))
                maps.publish(dataclasses.replace(good, shards=twice))
                bad.add(version + 1)
            elif action == "old":
                maps.publish(random_map(data, max(1, version - 1), rt.world.size, batch, shards))
            elif action == "restart":
                state = rt.state_dict()
                rt = runtime(data.draw(st.integers(1, 4), label="new world"))
                rt.load_state_dict(state)
                iters = [iter(rt.get_dataloader(r)) for r in range(rt.world.size)]
        event(f"maps applied in epoch {epoch}: {len(rt._plan)}")
        assert len(seen) == len(set(seen)) == (n // batch) * batch
        assert set(seen) <= set(range(n))
        rt.epoch_end(epoch)
    versions = [v for _, _, v in in_force]
    assert versions == sorted(versions), "an older map applied after a newer one"
    assert not bad & set(versions), "a broken map applied"
    first: dict[int, tuple[int, int]] = {}
    for e, s, v in in_force:
        first.setdefault(v, (e, s))
    for v, applied in first.items():
        if v in mine:
            asked, expected, published = mine[v]
            event("a map published here applied" + (" at its own point" if applied == asked
                                                     else ""))
            if applied == asked and applied[0] > published:
                event("a map published ahead applied at its point in a later epoch")
            assert applied >= asked, f"map v{v} asked for {asked}, applied at {applied}"
            if limit == 1.0:  # no reshard waits for an epoch end
                assert applied == expected, f"map v{v} asked {asked}: {applied} != {expected}"


def test_prefetching_worker_processes_never_see_a_map_change_they_already_passed():
    maps = InMemoryMapSource()
    rt = make(n=200, world=2, batch=8, maps=maps, sync_every=8,  # 25 steps
              loader=LoaderOptions(loader_workers=2, prefetch_factor=2, collate_fn=list))
    owners = maps.latest().shards
    when = {0: at(2, [6, 2], shards=owners),  # seen at step 8; 4 batches in flight: step 12
            13: at(3, [2, 6], step=22, shards=owners),  # seen at 16: its own step, 22
            17: at(4, [3, 5], epoch=1, step=2, shards=owners)}  # seen at 24: next epoch
    steps = run_epoch(rt, publisher(maps, when))
    assert sizes_of(steps) == [(4, 4)] * 12 + [(6, 2)] * 10 + [(2, 6)] * 3
    assert len(set(flat(steps))) == len(flat(steps)) == rt.steps_per_epoch * 8
    rt.epoch_end(0)
    again = run_epoch(rt)  # the persistent workers serve the next epoch too
    assert sizes_of(again) == [(2, 6)] * 2 + [(3, 5)] * 23
    assert len(set(flat(again))) == len(flat(again)) == rt.steps_per_epoch * 8
    assert flat(again) != flat(steps)
    rt.close()


def test_attached_hook_turns_compute_time_into_busy_time(monkeypatch):
    import time

    class FakeDDP:  # stands in for DistributedDataParallel: keeps the registered state
        def register_comm_hook(self, state, hook):
            self.state = state

    clock = [100.0]  # the loader's perf_counter, advanced by the "training step" below
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    sink = InMemoryTimingSink()
    rt = make(n=48, world=1, batch=8, sink=sink)
    model = rt.attach(FakeDDP())
    for _batch in rt.get_dataloader(0):
        clock[0] += 0.0025  # this rank's own forward and backward
        model.state.ready_at = clock[0]  # "gradients ready": the hook's stamp
        clock[0] += 0.05  # waiting for peers in the all-reduce
    assert model.state.scale == 1.0
    # busy 2.5 ms, never the 50 ms spent waiting
    assert all(0.002 <= r.compute_s < 0.045 for r in sink.records), sink.records[:3]
    with pytest.raises(ValueError, match="model"):
        rt.attach(object())
    with pytest.raises(ValueError, match="compute_timing"):
        make(compute_timing="wall")
