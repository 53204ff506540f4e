"""Stage latencies, whole-run ratios and the tables of ``shardsense planner-sim``."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from benchmarks.planner_sim.model import (
    SCENARIOS,
    PlannerFactory,
    Run,
    Scenario,
    SimConfig,
    planner_factory,
    simulate,
)
from planner_service.algorithms import step_time
from planner_service.policy import Outcome, PolicyConfig
from shardsense.events import ShardMap

__all__ = ["main", "planners_to_compare", "print_tables", "run_all", "stages", "summary"]


def stages(scenario: Scenario, cfg: SimConfig, run: Run) -> list[dict[str, Any]]:
    """Per change of the scenario's pattern: the step of each stage after it."""
    steps = scenario.steps or cfg.steps
    if scenario.rank < 0:
        return [_change_stages(scenario, cfg, run, 0, steps)]
    at = [t for t in range(1, steps)
          if scenario.pattern(scenario.rank, t) != scenario.pattern(scenario.rank, t - 1)]
    return [_change_stages(scenario, cfg, run, c, u)
            for c, u in zip(at, [*at[1:], steps], strict=True)]


def _change_stages(s: Scenario, cfg: SimConfig, run: Run, c: int, until: int
                   ) -> dict[str, Any]:
    """Steps after change ``c`` (arrival at the planner for predictions) of each stage."""
    rank = max(s.rank, 0)
    true = run.true[c, rank]
    slow = true > cfg.s_per_sample * 1.01
    mine = [(t, p) for t, p in run.arrivals if p.worker_id == rank and c <= t < until]
    alarm = next((t for t, p in mine if p.straggler == slow), None) if s.rank >= 0 else None
    level = next((t for t, p in mine if abs(p.time_per_sample_s / true - 1) < 0.1), None)
    # the maps for this change: applying from it (scheduled ahead) or decided after it
    published = [(t, d) for t, d in run.decisions if d.outcome is Outcome.PUBLISHED
                 and c <= max(t, _applies_at(d.shard_map, cfg)) < until]
    applied = [st for st, _ in run.plan if c <= st < until]
    speeds = 1.0 / run.true[c]
    ideal = cfg.global_batch * speeds / speeds.sum()
    ok = np.abs(run.batches[c:until, rank] - ideal[rank]) <= 0.15 * ideal[rank]
    share = next((c + i for i in range(len(ok) - 2) if ok[i:i + 3].all()), None)
    first_vs_last = None
    if published:
        firsts = [np.array(d.batch_sizes) for _, d in published]
        first_vs_last = step_time(firsts[0], speeds) / step_time(firsts[-1], speeds)
    return {"change": c, "alarm": _rel(alarm, c), "at_level": _rel(level, c),
            "decision": _rel(published[0][0] if published else None, c),
            "in_force": _rel(applied[0] if applied else None, c), "share": _rel(share, c),
            "maps": len(published), "first_vs_last": first_vs_last}


def _applies_at(m: ShardMap | None, cfg: SimConfig) -> int:
    return -1 if m is None else m.apply_epoch * cfg.steps_per_epoch + m.apply_step


def _rel(step: int | None, c: int) -> int | None:
    return None if step is None else step - c


def summary(cfg: SimConfig, run: Run) -> dict[str, float]:
    """Maps published, and noise-free total step time over the static split and the oracle."""
    world, batch = cfg.world, cfg.global_batch
    static = np.full_like(run.batches, batch // world)
    speeds = 1.0 / run.true
    oracle = float((batch / speeds.sum(axis=1) + cfg.overhead_s).sum())
    total = run.step_s(run.batches, cfg.overhead_s)
    maps = sum(d.outcome is Outcome.PUBLISHED for _, d in run.decisions)
    return {"maps": maps, "x_static": total / run.step_s(static, cfg.overhead_s),
            "x_oracle": total / oracle}


def run_all(cfg: SimConfig, planners: dict[str, PlannerFactory], scenarios: Sequence[str],
            seeds: int) -> list[dict[str, Any]]:
    """Every scenario x planner x seed, side by side."""
    rows = []
    for name in scenarios:
        for label, factory in planners.items():
            per_seed = []
            for seed in range(seeds):
                c = replace(cfg, seed=seed)
                run = simulate(SCENARIOS[name], c, factory)
                per_seed.append((stages(SCENARIOS[name], c, run), summary(c, run)))
            rows.append({"scenario": name, "planner": label, "runs": per_seed})
    return rows


def _median(values: list[Any]) -> Any:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def print_tables(rows: list[dict[str, Any]], changes: int = 4) -> None:
    """Stages of the first ``changes`` changes, then each run's summary (medians over seeds)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)
    table = Table(title="planner reaction: steps after each change (median over seeds; "
                  "predictions: when they reach the planner)")
    for col in ("scenario", "planner", "change", "alarm", "at level", "decision", "in force",
                "share", "maps", "first/last"):
        table.add_column(col)
    for row in rows:
        for i in range(min(changes, len(row["runs"][0][0]))):
            got = [stage[i] for stage, _ in row["runs"]]
            med = {k: _median([g[k] for g in got]) for k in got[0]}
            table.add_row(row["scenario"], row["planner"], str(got[0]["change"]),
                          *(_fmt(med[k]) for k in ("alarm", "at_level", "decision", "in_force",
                                                   "share", "maps", "first_vs_last")))
    console.print(table)
    runs = Table(title="whole runs (noise-free step time; median over seeds)")
    for col in ("scenario", "planner", "maps", "x static", "x oracle", "max maps"):
        runs.add_column(col)
    for row in rows:
        sums = [sm for _, sm in row["runs"]]
        runs.add_row(row["scenario"], row["planner"], _fmt(_median([x["maps"] for x in sums])),
                     _fmt(_median([x["x_static"] for x in sums])),
                     _fmt(_median([x["x_oracle"] for x in sums])),
                     str(max(x["maps"] for x in sums)))
    console.print(runs)


def planners_to_compare() -> dict[str, PlannerFactory]:
    """Defaults (event-driven), the reactive ablation, and the old 2 s timer cadence."""
    from shardsense.settings import Settings

    s = Settings.from_env({})
    cfg = PolicyConfig.from_settings(s)
    debounce, interval = s.planner_debounce_ms / 1000, s.planner_interval_ms / 1000
    return {
        "defaults": planner_factory(cfg, debounce, interval),
        "no schedule ahead": planner_factory(replace(cfg, schedule_ahead=False), debounce,
                                             interval),
        "2 s timer": planner_factory(cfg, 1e9, 2.0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shardsense planner-sim",
        description="The planner's reaction, stage by stage, in a simulated closed loop "
                    "counted in steps (see benchmarks/planner_sim).")
    parser.add_argument("--seeds", type=int, default=5, help="runs per scenario (default 5)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma list of {', '.join(SCENARIOS)}")
    parser.add_argument("--ramp", action="store_true",
                        help="processor model without re-levelling (today's EWMA ramp)")
    args = parser.parse_args(argv)
    names = args.scenarios.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}")
    rows = run_all(SimConfig(relevel=not args.ramp), planners_to_compare(), names, args.seeds)
    print_tables(rows)
    return 0
