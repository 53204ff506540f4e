"""``shardsense bench``: static vs ShardSense vs two oracles under injected stragglers.

Spawns ``--ranks`` gloo processes on this machine, runs every scenario with
DistributedSampler (static) and with ShardSense, then writes results.json,
results.md and bench.png to ``--out-dir`` and prints the table. The
ShardSense path measured is the in-process closed loop of
``benchmarks.bench.loop`` (no Kafka): same runtime, policy and plan algorithm.
"""

from __future__ import annotations

import argparse
import json
import os
import queue as queue_mod
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.bench.scenarios import SCENARIO_NAMES, BenchConfig, catalogue

__all__ = ["build_parser", "main", "run_bench"]

QUICK = {"steps": 60}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shardsense bench", description=__doc__.split("\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIO_NAMES),
                   help=f"comma list of {', '.join(SCENARIO_NAMES)} (default all)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per run (default 300; 60 with --quick)")
    p.add_argument("--ranks", type=int, default=4, help="gloo processes (default 4)")
    p.add_argument("--out-dir", default="docs/bench",
                   help="where results.json, results.md and bench.png go (default docs/bench)")
    p.add_argument("--quick", action="store_true", help="a short run for smoke tests")
    p.add_argument("--traces", default="",
                   help="also write each run's per-rank batch timings as CSV to this folder "
                        "(input of shardsense eval --traces)")
    p.add_argument("--base-delay-ms", type=float, default=3.0,
                   help="injected work per sample of an unslowed rank (default 3 ms)")
    p.add_argument("--timing", choices=("auto", "step"), default="auto",
                   help="the runtime's compute_timing: 'auto' = each rank's busy time up to its "
                        "gradient all-reduce (default); 'step' = next()-to-next(), which "
                        "includes waiting for the slowest rank")
    p.add_argument("--sync-every", type=int, default=4,
                   help="the runtime's sync interval, also the planner's timing window "
                        "(default 4)")
    p.add_argument("--pipeline", choices=("inprocess",), default="inprocess",
                   help="the ShardSense loop measured (only the in-process loop for now)")
    p.add_argument("--readme", default="README.md",
                   help="replace the block between <!-- bench:start --> and <!-- bench:end --> "
                        "in this file, if it has them; '' to skip (never with --quick)")
    return p


def run_bench(cfg: BenchConfig, on_event: Any = None) -> list[dict[str, Any]]:
    """Spawn the ranks, collect rank 0's run results (in order); raise if a rank fails."""
    import torch.multiprocessing as mp

    from benchmarks.bench.worker import rank_main
    from shardsense.net import free_port

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = mp.spawn(rank_main, args=(cfg, free_port(), q), nprocs=cfg.world, join=False)
    results: list[dict[str, Any]] = []
    errors: list[str] = []

    def drain(timeout: float) -> None:
        try:
            msg = q.get(timeout=timeout)
        except queue_mod.Empty:
            return
        if msg[0] == "result":
            results.append(msg[1])
        elif msg[0] == "error":
            errors.append(msg[1])
        if on_event is not None:
            on_event(msg)

    while not procs.join(timeout=0.05):
        drain(0.2)
    while True:  # what was queued just before the ranks exited
        before = len(results) + len(errors)
        drain(0.5)
        if len(results) + len(errors) == before:
            break
    if errors:
        raise RuntimeError("a bench rank failed:\n" + errors[0])
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = tuple(x for x in args.scenarios.split(",") if x)
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if unknown or not names:
        print(f"shardsense bench: unknown scenarios {unknown}; choose from "
              f"{', '.join(SCENARIO_NAMES)}", file=sys.stderr)
        return 2
    steps = args.steps or (QUICK["steps"] if args.quick else 300)
    if steps < 20 or args.ranks < 2:
        print("shardsense bench: needs --steps >= 20 and --ranks >= 2", file=sys.stderr)
        return 2
    cfg = replace(BenchConfig(), scenarios=names, steps=steps, world=args.ranks,
                  base_delay_s=args.base_delay_ms / 1000.0, timing=args.timing,
                  sync_every=args.sync_every)
    from benchmarks.bench import report

    started = time.time()
    with report.progress(cfg) as on_event:
        results = run_bench(cfg, on_event)
    scenarios = catalogue(cfg.world, cfg.steps, cfg.base_delay_s)
    out = report.build(cfg, scenarios, results, argv=["shardsense", "bench",
                       *(sys.argv[1:] if argv is None else argv)], seconds=time.time() - started,
                       pipeline=args.pipeline)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(
        {**out, "config": asdict(cfg), "runs": results}, indent=1) + "\n")
    report.plot(out, results, out_dir / "bench.png")
    md = report.markdown(out, image="bench.png")
    (out_dir / "results.md").write_text(md)
    report.print_table(out)
    if args.readme and not args.quick:
        readme = Path(args.readme)
        rel = os.path.relpath(out_dir / "bench.png", readme.parent.resolve())
        print(report.update_readme(readme, report.markdown(out, image=rel)))
    if args.traces:
        for path in report.write_traces(results, Path(args.traces)):
            print(f"wrote trace {path}")
    print(f"wrote {out_dir}/results.json, results.md, bench.png")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
