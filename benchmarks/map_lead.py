"""How soon a shard map is in force, counted in steps, and what a sync point costs.

Run: ``shardsense map-lead [--sync-every 4 8 16] [--workers 0 2] [--gloo] [--world 4]
[--json PATH]``. A report (rich tables) for people, not a timed test.

* In steps (the runtime's own clock; no wall time in any delay): one process
  plays every rank with the in-memory seams, iterating the loaders in lockstep.
  Rank 0 *has* a map from the step before which it is published; the delay is
  the steps from then until the map is in force on every rank, over every phase
  of the sync interval. For a map with an apply step ahead, the error is the
  step applied minus the step asked.
* ``--gloo``: the same on ``--world`` real gloo ranks (rank 0 alone sees the
  maps; every step sleeps ``--step-ms`` and all-reduces, as a DDP step does). It
  also times every sync point and back-to-back broadcasts of an empty decision
  and of a 1024-shard map: a sync point costs its time once per ``sync_every``
  steps, which is what a smaller ``sync_every`` buys its lower delay with.

The tool uses the public runtime API only, so the same command measures an
older checkout (``PYTHONPATH=<old checkout>`` puts its ``producers`` first).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Event", "events", "main", "summarise"]

JOB = "map-lead"
GLOBAL_BATCH = 64
NUM_SHARDS = 64
#: A map's shares alternate between these so each map differs from the last (owners kept).
SHARES = ((20, 16, 16, 12), (12, 16, 16, 20))


@dataclass(frozen=True)
class Event:
    """Rank 0 has map ``version`` from step ``publish`` on; it asks for ``publish + ahead``."""

    version: int
    publish: int
    ahead: int | None  # None: apply at once (apply point (0, 0))


def events(sync_every: int, depth: int, phases: Sequence[int],
           aheads: Sequence[int | None]) -> tuple[list[Event], int]:
    """Maps one at a time over every phase and ``ahead``, and the steps the epoch needs.

    Events are spaced so that each map is in force before the next is published
    (even with the old lead of two sync intervals plus the prefetch depth).

    >>> evs, steps = events(4, 0, [0, 3], [None, 4])
    >>> [(e.version, e.publish, e.ahead) for e in evs], steps
    ([(2, 8, None), (3, 35, None), (4, 56, 4), (5, 83, 4)], 128)
    """
    longest = max((a or 0) for a in aheads)
    gap = sync_every * (-(-(4 * sync_every + depth + longest) // sync_every) + 1)
    out: list[Event] = []
    base = 2 * sync_every
    for ahead in aheads:
        for phase in phases:
            out.append(Event(len(out) + 2, base + phase, ahead))
            base += gap
    return out, base + gap


def _map(event: Event, owners: list[list[int]], world: int) -> Any:
    from shardsense.events import ShardMap

    shares = list(SHARES[event.version % 2][:world]) if world == 4 else _even(world, event)
    step = 0 if event.ahead is None else event.publish + event.ahead
    return ShardMap.build(JOB, event.version, owners, shares, num_shards=NUM_SHARDS,
                          apply_epoch=0, apply_step=step, reason="map-lead")


def _even(world: int, event: Event) -> list[int]:
    base = [GLOBAL_BATCH // world] * world
    shift = 2 if event.version % 2 else -2
    base[0] += shift
    base[-1] -= shift
    return base


def _runtime(world: int, sync_every: int, workers: int, steps: int, maps: Any) -> Any:
    from producers.engine import LoaderOptions, ShardSenseRuntime

    return ShardSenseRuntime(
        list(range(steps * GLOBAL_BATCH)), num_shards=NUM_SHARDS, num_workers=world,
        global_batch_size=GLOBAL_BATCH, job_id=JOB, sync_every=sync_every,
        maps=maps, loader=LoaderOptions(loader_workers=workers, collate_fn=len),
    )


def run_sim(world: int, sync_every: int, workers: int, evs: list[Event], steps: int
            ) -> list[int]:
    """One process, every rank in lockstep: the map version in force at each step."""
    from producers.memory import InMemoryMapSource

    maps = InMemoryMapSource()
    rt = _runtime(world, sync_every, workers, steps, maps)
    owners = maps.latest().shards  # type: ignore[union-attr]
    by_step = {e.publish: e for e in evs}
    loaders = [iter(rt.get_dataloader(r)) for r in range(world)]
    versions = []
    for step in range(rt.steps_per_epoch):
        if step in by_step:  # before this step's batches: rank 0 has it at this step
            maps.publish(_map(by_step[step], owners, world))
        for it in loaders:
            next(it)
        versions.append(rt.map_version)
    rt.close()
    return versions


def summarise(evs: list[Event], versions: list[int]) -> list[dict[str, Any]]:
    """Per ``ahead``: delay (steps from publish to in force) and error (applied - asked).

    >>> summarise([Event(2, 3, None), Event(3, 9, 2)], [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3])
    [{'ahead': None, 'maps': 1, 'delay_mean': 1.0, 'delay_max': 1, 'error_mean': None, \
'error_max': None, 'missing': 0}, {'ahead': 2, 'maps': 1, 'delay_mean': 2.0, 'delay_max': 2, \
'error_mean': 0.0, 'error_max': 0, 'missing': 0}]
    """
    first: dict[int, int] = {}
    for step, v in enumerate(versions):
        first.setdefault(v, step)
    rows = []
    for ahead in dict.fromkeys(e.ahead for e in evs):
        group = [e for e in evs if e.ahead == ahead]
        delays = [first[e.version] - e.publish for e in group if e.version in first]
        errors = ([] if ahead is None else
                  [first[e.version] - e.publish - ahead for e in group if e.version in first])
        rows.append({
            "ahead": ahead, "maps": len(group),
            "delay_mean": statistics.fmean(delays) if delays else None,
            "delay_max": max(delays, default=None),
            "error_mean": statistics.fmean(errors) if errors else None,
            "error_max": max(errors, default=None),
            "missing": len(group) - len(delays),
        })
    return rows


# ---------------------------------------------------------------- gloo ranks


@dataclass(frozen=True)
class GlooConfig:
    """What every spawned rank needs (picklable)."""

    world: int
    sync_values: tuple[int, ...]
    step_s: float
    repeats: int
    outdir: str
    port: int


def _timed(fn: Callable[[int], None], out: list[float]) -> Callable[[int], None]:
    def run(step: int) -> None:
        t0 = time.perf_counter()
        fn(step)
        out.append(time.perf_counter() - t0)

    return run


def _gloo_run(cfg: GlooConfig, sync_every: int) -> dict[str, Any]:
    """One rank's epoch: versions per step and the time of each sync point."""
    import torch
    import torch.distributed as dist

    from producers.memory import InMemoryMapSource

    rank = dist.get_rank()
    evs, steps = _gloo_events(sync_every)
    maps = InMemoryMapSource()
    rt = _runtime(cfg.world, sync_every, 0, steps, maps)
    sync_s: list[float] = []
    rt.sync_point = _timed(rt.sync_point, sync_s)  # the loader calls it through the instance
    owners = rt.state_dict()["plan"][0]["map"]["shards"]
    by_step = {e.publish: e for e in evs}
    grad = torch.zeros(1024)
    versions = []
    for step, _batch in enumerate(rt.get_dataloader(rank)):
        time.sleep(cfg.step_s)
        dist.all_reduce(grad)  # the step's gradient all-reduce keeps ranks in step, as DDP
        versions.append(rt.map_version)
        if rank == 0 and step + 1 in by_step:  # after this step: rank 0 has it at step + 1
            maps.publish(_map(by_step[step + 1], owners, cfg.world))
    rt.close()
    return {"versions": versions, "sync_s": sync_s, "events": [asdict(e) for e in evs]}


def _gloo_events(sync_every: int) -> tuple[list[Event], int]:
    phases = sorted({0, 1, sync_every // 2, sync_every - 1})
    return events(sync_every, 0, phases, [None, sync_every])


def _broadcast_costs(cfg: GlooConfig, big: Any) -> dict[str, list[float]]:
    """Seconds per rank-0 broadcast of each kind, alternating kinds in blocks of 25.

    ``World.broadcast`` is what a sync point runs; torch's ``broadcast_object_list``
    (what it ran before) is timed alongside, in the same run.
    """
    import torch
    import torch.distributed as dist

    from producers.world import World

    world = World.detect()

    def object_list(obj: Any) -> None:
        dist.broadcast_object_list([obj if world.is_coordinator else None], src=0)

    kinds: dict[str, Callable[[], Any]] = {
        "world_none": lambda: world.broadcast(None),
        "world_map": lambda: world.broadcast(big if world.is_coordinator else None),
        "object_list_none": lambda: object_list(None),
        "object_list_map": lambda: object_list(big),
    }
    flag = torch.zeros(1)
    out: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(-(-cfg.repeats // 25)):
        for name, call in kinds.items():
            for _ in range(25):
                dist.all_reduce(flag)  # line the ranks up, as a step's all-reduce does
                t0 = time.perf_counter()
                call()
                out[name].append(time.perf_counter() - t0)
    return out


def rank_main(rank: int, cfg: GlooConfig) -> None:
    """Entry point of one spawned rank: every sync_every, then the broadcast costs."""
    import torch
    import torch.distributed as dist

    from shardsense.events import ShardMap

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{cfg.port}", rank=rank,
                            world_size=cfg.world)
    out: dict[str, Any] = {"runs": {k: _gloo_run(cfg, k) for k in cfg.sync_values}}
    big = ShardMap.build(JOB, 2, [list(range(r, 1024, cfg.world))
                                           for r in range(cfg.world)],
                         [GLOBAL_BATCH // cfg.world] * cfg.world, num_shards=1024)
    out["broadcast_s"] = _broadcast_costs(cfg, big)
    Path(cfg.outdir, f"rank-{rank}.json").write_text(json.dumps(out))
    dist.barrier()
    dist.destroy_process_group()


def run_gloo(world: int, sync_values: Sequence[int], step_ms: float, repeats: int
             ) -> dict[str, Any]:
    """Spawn ``world`` gloo ranks; check they agreed; delays and costs from their records."""
    import torch.multiprocessing as mp

    from shardsense.net import free_port

    with tempfile.TemporaryDirectory(prefix="map-lead-") as tmp:
        cfg = GlooConfig(world, tuple(sync_values), step_ms / 1000.0, repeats, tmp, free_port())
        mp.spawn(rank_main, args=(cfg,), nprocs=world, join=True)
        ranks = [json.loads(Path(tmp, f"rank-{r}.json").read_text()) for r in range(world)]
    out: dict[str, Any] = {"runs": {}}
    for k in sync_values:
        runs = [r["runs"][str(k)] for r in ranks]
        agree = all(run["versions"] == runs[0]["versions"] for run in runs)
        evs = [Event(**e) for e in runs[0]["events"]]
        sync_s = [s for run in runs for s in run["sync_s"]]
        out["runs"][k] = {"ranks_agree": agree, "rows": summarise(evs, runs[0]["versions"]),
                          "sync_point_p50_us": statistics.median(sync_s) * 1e6,
                          "sync_points": len(sync_s) // world}
    out["broadcast_p50_us"] = {
        name: statistics.median(x for r in ranks for x in r["broadcast_s"][name]) * 1e6
        for name in ranks[0]["broadcast_s"]}
    return out


# ---------------------------------------------------------------- report


def _sim_all(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for workers in args.workers:
        depth = 2 * workers  # prefetch_factor 2
        for k in args.sync_every:
            phases = range(k)
            aheads = [None, 1, max(1, k // 2), k, 2 * k]
            evs, steps = events(k, depth, list(phases), aheads)
            versions = run_sim(args.world, k, workers, evs, steps)
            out[f"{k}/{workers}"] = summarise(evs, versions)
    return out


def _table(title: str, rows: dict[str, list[dict[str, Any]]]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col in ("sync_every / loader workers", "asked", "maps", "delay mean", "delay max",
                "error mean", "error max", "missing"):
        table.add_column(col, justify="right")

    def fmt(x: Any) -> str:
        return "—" if x is None else (f"{x:.2f}" if isinstance(x, float) else str(x))

    for key, group in rows.items():
        for row in group:
            asked = "at once" if row["ahead"] is None else f"+{row['ahead']} steps"
            table.add_row(key, asked, str(row["maps"]), fmt(row["delay_mean"]),
                          fmt(row["delay_max"]), fmt(row["error_mean"]), fmt(row["error_max"]),
                          str(row["missing"]))
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shardsense map-lead", description=__doc__.split("\n")[0])
    parser.add_argument("--sync-every", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                        help="DataLoader workers per rank in the step count (prefetch_factor 2)")
    parser.add_argument("--world", type=int, default=4, help="ranks (default 4)")
    parser.add_argument("--gloo", action="store_true", help="also run real gloo ranks")
    parser.add_argument("--step-ms", type=float, default=5.0, help="gloo step sleep (ms)")
    parser.add_argument("--repeats", type=int, default=500, help="broadcasts timed per kind")
    parser.add_argument("--json", default="", help="write the figures to this file")
    args = parser.parse_args(argv)
    if min(args.sync_every) < 1 or min(args.workers) < 0 or args.world < 1:
        parser.error("--sync-every >= 1, --workers >= 0, --world >= 1")

    from rich.console import Console

    console = Console()
    result: dict[str, Any] = {"sim": _sim_all(args)}
    console.print(_table("in steps, one process plays every rank", result["sim"]))
    if args.gloo:
        with console.status(f"{args.world} gloo ranks..."):
            result["gloo"] = run_gloo(args.world, args.sync_every, args.step_ms, args.repeats)
        gloo = result["gloo"]
        console.print(_table(f"in steps, {args.world} gloo ranks (sync_every / 0)",
                             {f"{k}/0": v["rows"] for k, v in gloo["runs"].items()}))
        for k, v in gloo["runs"].items():
            console.print(f"sync_every {k}: ranks agree {v['ranks_agree']}; sync point p50 "
                          f"{v['sync_point_p50_us']:.0f} µs = "
                          f"{v['sync_point_p50_us'] / k:.0f} µs per step")
        console.print("broadcast p50 (µs, every rank, same run): " + ", ".join(
            f"{name} {us:.0f}" for name, us in gloo["broadcast_p50_us"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
