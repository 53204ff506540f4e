"""``shardsense bench``: static vs ShardSense vs oracles under injected stragglers.

Spawns ``--ranks`` gloo processes on this machine and runs every scenario with
each method of ``benchmarks.loop.methods``: DistributedSampler (static), the
product path (real Kafka timing sink, embedded broker, Faust processor, planner
service and map source, hosted by this process: ``benchmarks.loop.host``) on
default settings and on a few settings overlays, and the old in-process loop
as an ablation. It writes results.json, results.md, bench.png and stages.png
to ``--out-dir`` and prints the tables, including the latency of every stage
of the loop after each change of a rank's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import queue as queue_mod
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.bench.scenarios import SCENARIO_NAMES, BenchConfig, catalogue
from benchmarks.loop.methods import DEFAULT_METHODS, METHODS

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
    p.add_argument("--sync-every", type=int, default=8,
                   help="the runtime's sync interval, also the in-process loop's timing "
                        "window (default 8, the runtime's default)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma list of " + ", ".join(f"{m.name} ({m.doc})"
                                                     for m in METHODS.values())
                        + "; static is always run (the baseline)")
    p.add_argument("--replot", default="", metavar="RESULTS_JSON",
                   help="run nothing: rebuild the tables and plots of a saved results.json "
                        "into --out-dir")
    p.add_argument("--epoch-steps", type=int, default=200,
                   help="steps per epoch: the data set is repeated to this length (default "
                        "200; the planner weighs a move's gain over one epoch)")
    p.add_argument("--readme", default="README.md",
                   help="replace the block between <!-- bench:start --> and <!-- bench:end --> "
                        "in this file, if it has them; '' to skip (never with --quick)")
    return p


def run_bench(cfg: BenchConfig, on_event: Any = None, driver: Any = None
              ) -> list[dict[str, Any]]:
    """Spawn the ranks, collect rank 0's run results (in order); raise if a rank fails.

    ``driver`` (a ``benchmarks.loop.driver.Driver``) answers rank 0's ``prepare``
    before each run and completes each result with what the product path did.
    """
    import torch.multiprocessing as mp

    from benchmarks.bench.worker import rank_main
    from shardsense.net import free_port

    ctx = mp.get_context("spawn")
    q, replies = ctx.Queue(), ctx.Queue()
    procs = mp.spawn(rank_main, args=(cfg, free_port(), q, replies), nprocs=cfg.world,
                     join=False)
    results: list[dict[str, Any]] = []
    errors: list[str] = []

    def drain(timeout: float) -> None:
        try:
            msg = q.get(timeout=timeout)
        except queue_mod.Empty:
            return
        if msg[0] == "prepare":
            if driver is None:
                replies.put(None)
            else:
                driver.on_prepare(*msg[1:], replies)
        elif msg[0] == "result":
            if driver is not None:
                driver.on_result(msg[1])
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


def _config(args: argparse.Namespace) -> BenchConfig | str:
    """The run's configuration from the flags, or why the flags are wrong."""
    names = tuple(x for x in args.scenarios.split(",") if x)
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if unknown or not names:
        return f"unknown scenarios {unknown}; choose from {', '.join(SCENARIO_NAMES)}"
    methods = ("static", *(m for m in args.methods.split(",") if m and m != "static"))
    if any(m not in METHODS for m in methods):
        return f"unknown methods in {args.methods!r}; choose from {', '.join(METHODS)}"
    steps = args.steps or (QUICK["steps"] if args.quick else 300)
    if steps < 20 or args.ranks < 2 or args.epoch_steps < 1:
        return "needs --steps >= 20, --ranks >= 2 and --epoch-steps >= 1"
    return replace(BenchConfig(), scenarios=names, steps=steps, world=args.ranks,
                   base_delay_s=args.base_delay_ms / 1000.0, timing=args.timing,
                   sync_every=args.sync_every, methods=methods, epoch_steps=args.epoch_steps)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from benchmarks.bench import report

    if args.replot:
        return _replot(Path(args.replot), args, report)
    cfg = _config(args)
    if isinstance(cfg, str):
        print(f"shardsense bench: {cfg}", file=sys.stderr)
        return 2
    scenarios = catalogue(cfg.world, cfg.steps, cfg.base_delay_s)
    started = time.time()
    results = _run_with_host(cfg, scenarios, report)
    out = report.build(cfg, scenarios, results, argv=["shardsense", "bench",
                       *(sys.argv[1:] if argv is None else argv)], seconds=time.time() - started)
    _write(out, results, cfg, args, report)
    return 0


def _replot(saved_path: Path, args: argparse.Namespace, report: Any) -> int:
    """Tables and plots again from a results.json (same run: its machine and command)."""
    saved = json.loads(saved_path.read_text())
    conf = saved["config"]
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in conf.items()}
    cfg = BenchConfig(**fields)
    scenarios = catalogue(cfg.world, cfg.steps, cfg.base_delay_s)
    results = saved["runs"]
    out = report.build(cfg, scenarios, results, argv=shlex.split(saved["command"]),
                       seconds=saved["bench_seconds"])
    out.update(machine=saved["machine"], command=saved["command"])
    _write(out, results, cfg, args, report)
    return 0


#: Per-run data results.json leaves out: every rank's clocks and work (the stages and the
#: traces are made from them), and the copy of the stages that ``out`` renders.
_NOT_SAVED = ("ranks", "rank_work_s")


def _results_json(out: dict[str, Any], cfg: BenchConfig, results: list[dict[str, Any]]) -> str:
    """One line per top-level key and per run, compact (they hold long series)."""
    top = {**{k: v for k, v in out.items() if k != "runs_stages"}, "config": asdict(cfg)}

    def dump(v: Any) -> str:
        return json.dumps(_compact(v), separators=(",", ":"))

    head = ",\n".join(f" {json.dumps(k)}: {dump(v)}" for k, v in top.items())
    runs = ",\n".join(dump(_saved_run(r)) for r in results)
    return f'{{\n{head},\n "runs": [\n{runs}\n ]\n}}\n'


def _saved_run(run: dict[str, Any]) -> dict[str, Any]:
    """A run as results.json keeps it: without ``_NOT_SAVED``, predictions as columns."""
    out = {k: v for k, v in run.items() if k not in _NOT_SAVED}
    preds = out.get("product", {}).get("predictions")
    if preds and isinstance(preds, list):
        out["product"] = {**out["product"],
                          "predictions": {k: [p[k] for p in preds] for k in preds[0]}}
    return out


def _compact(value: Any) -> Any:
    """Floats to 6 significant digits (wall-clock stamps to 0.1 ms), recursively."""
    if isinstance(value, float):
        return round(value, 4) if abs(value) >= 1e5 else float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_compact(v) for v in value]
    return value


def _write(out: dict[str, Any], results: list[dict[str, Any]], cfg: BenchConfig,
           args: argparse.Namespace, report: Any) -> None:
    """results.json, bench.png, stages.png, results.md, the terminal tables, README, traces."""
    from benchmarks.loop.timeline import plot_timeline

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(_results_json(out, cfg, results))
    report.plot(out, results, out_dir / "bench.png")
    if plot_timeline(out, out_dir / "stages.png"):
        print(f"wrote {out_dir}/stages.png")
    (out_dir / "results.md").write_text(report.markdown(out, image="bench.png"))
    report.print_table(out)
    if args.readme and not args.quick:
        readme = Path(args.readme)
        rel = os.path.relpath(out_dir, readme.parent.resolve())
        print(report.update_readme(readme, report.markdown(out, image=f"{rel}/bench.png")))
    if args.traces:
        for path in report.write_traces(results, Path(args.traces)):
            print(f"wrote trace {path}")
    print(f"wrote {out_dir}/results.json, results.md, bench.png")


def _run_with_host(cfg: BenchConfig, scenarios: dict[str, Any], report: Any
                   ) -> list[dict[str, Any]]:
    """The ranks' runs, with the product path's services hosted here if a method needs them."""
    from benchmarks.loop.driver import Driver
    from benchmarks.loop.host import BenchHost

    host = None
    if any(METHODS[m].path == "product" for m in cfg.methods):
        host = BenchHost().start()
    try:
        with report.progress(cfg) as on_event:
            return run_bench(cfg, on_event, Driver(scenarios, host))
    finally:
        if host is not None:
            host.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
