"""What ShardSense's loader costs a training loop: side by side with a plain DataLoader.

Run: ``python -m benchmarks.overhead [--step-ms 10] [--steps 200] [--rounds 5]
[--bootstrap HOST:PORT]``. Not a timed test: a report (rich table) for people.

Both loops read the same in-memory dataset at the same batch size and "train"
for ``--step-ms`` per batch (sleep, then a short spin for precision, so the box
stays mostly idle). The two loops alternate every 10 steps so that load changes
on a shared machine hit both alike; figures are 5%-trimmed means per step. The
overhead ratio is ``(ShardSense step time - plain step time) / plain step time``;
the goal is under 1% at 10 ms steps. ``instrumentation`` isolates what the
runtime adds per step (sampler + schedule + timing + sink) from the step time.
With ``--bootstrap`` the sink is the real ``KafkaTimingSink`` (a dead address
works too: it shows the cost of dropping).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _train_step(seconds: float, spin: bool = False) -> None:
    """Sleep most of the step and spin the last 0.3 ms, or (``spin``) spin it all.

    Sleeping keeps a shared box usable and is what a host thread waiting on a GPU
    does; spinning is CPU compute (steadier figures, one core busy meanwhile).
    """
    end = time.perf_counter() + seconds
    if not spin and seconds > 0.0005:
        time.sleep(seconds - 0.0003)
    while time.perf_counter() < end:
        pass


def _interleaved(
    loaders: dict[str, Any], steps: int, step_s: float, block: int, spin: bool = False
) -> dict[str, list[tuple[float, float]]]:
    """Per-step (step seconds, seconds in ``next()``), alternating loops every ``block`` steps.

    Alternating in small blocks makes load changes on a shared machine hit both
    loops alike; whole-loop A-then-B runs swing by several percent here.
    """
    its = {name: iter(loader) for name, loader in loaders.items()}
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in loaders}
    clock = time.perf_counter
    for first in range(0, steps, block):
        for name, it in its.items():
            for _ in range(min(block, steps - first)):
                t0 = clock()
                next(it)
                t1 = clock()
                _train_step(step_s, spin)
                out[name].append((clock() - t0, t1 - t0))
    return out


def _trimmed_mean(xs: list[float], cut: float = 0.05) -> float:
    """Mean without the top and bottom ``cut`` (scheduler hiccups of a shared box)."""
    xs = sorted(xs)
    k = int(len(xs) * cut)
    return statistics.fmean(xs[k : len(xs) - k] if len(xs) > 2 * k else xs)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from producers.engine import ShardSenseRuntime
    from producers.memory import InMemoryTimingSink

    torch.manual_seed(0)
    n = args.steps * args.batch_size + args.batch_size
    data = TensorDataset(torch.randn(n, 64), torch.randint(0, 10, (n,)))
    sink: Any = InMemoryTimingSink()
    if args.bootstrap:
        from producers.telemetry import KafkaTimingSink
        from shardsense.settings import Settings

        sink = KafkaTimingSink(Settings(kafka_bootstrap=args.bootstrap, job_id="bench"), 0)
    runtime = ShardSenseRuntime(data, num_shards=1024, num_workers=1,
                                global_batch_size=args.batch_size, sink=sink)
    loaders = {
        "plain": DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True),
        "shardsense": runtime.get_dataloader(0),
    }
    timed: dict[str, list[tuple[float, float]]] = {"plain": [], "shardsense": []}
    idle: dict[str, list[tuple[float, float]]] = {"plain": [], "shardsense": []}
    for _ in range(args.rounds):
        step_s = args.step_ms / 1000
        for name, rows in _interleaved(loaders, args.steps, step_s, 10, args.spin).items():
            timed[name].extend(rows)
        runtime.epoch_end(runtime.epoch)
        for name, rows in _interleaved(loaders, args.steps, 0.0, 10).items():
            idle[name].extend(rows)  # what the loops cost without any training step
        runtime.epoch_end(runtime.epoch)
    dropped = getattr(sink, "dropped", 0)
    runtime.close()

    def stat(rows: list[tuple[float, float]], col: int) -> float:
        return _trimmed_mean([r[col] for r in rows])

    plain, ours = stat(timed["plain"], 0), stat(timed["shardsense"], 0)
    return {
        "plain_step_s": plain,
        "shardsense_step_s": ours,
        "plain_wait_s": stat(timed["plain"], 1),
        "shardsense_wait_s": stat(timed["shardsense"], 1),
        "overhead_ratio": ours / plain - 1.0,
        "instrumentation_s": stat(idle["shardsense"], 0) - stat(idle["plain"], 0),
        "idle_plain_s": stat(idle["plain"], 0),
        "idle_shardsense_s": stat(idle["shardsense"], 0),
        "dropped": dropped,
        "sink": type(sink).__name__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--step-ms", type=float, default=10.0, help="simulated step (ms)")
    parser.add_argument("--steps", type=int, default=200, help="steps per loop and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--spin", action="store_true",
                        help="busy-wait the whole step (CPU compute) instead of sleeping")
    parser.add_argument("--bootstrap", default="", help="Kafka HOST:PORT for KafkaTimingSink")
    args = parser.parse_args(argv)
    for name in ("steps", "rounds", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.step_ms < 0:
        parser.error("--step-ms must be >= 0")
    res = measure(args)

    from rich.console import Console
    from rich.table import Table

    us = 1e6
    kind = "spinning" if args.spin else "sleeping"
    table = Table(title=f"loader overhead at {args.step_ms:g} ms {kind} steps "
                        f"({args.rounds} rounds x {args.steps} steps per loop, trimmed means)")
    for col in ("loop", "step (ms)", "in next() (µs)", "vs plain"):
        table.add_column(col, justify="right" if col != "loop" else "left")
    table.add_row("plain DataLoader", f"{res['plain_step_s'] * 1e3:.3f}",
                  f"{res['plain_wait_s'] * us:.1f}", "1.000")
    table.add_row(f"ShardSense ({res['sink']})", f"{res['shardsense_step_s'] * 1e3:.3f}",
                  f"{res['shardsense_wait_s'] * us:.1f}", f"{1 + res['overhead_ratio']:.4f}")
    console = Console()
    console.print(table)
    share = res["instrumentation_s"] / (args.step_ms / 1000.0) if args.step_ms else float("nan")
    console.print(
        f"overhead ratio: {res['overhead_ratio'] * 100:+.2f}% of step time "
        f"(goal < 1%: {'met' if res['overhead_ratio'] < 0.01 else 'NOT met'}); "
        f"instrumentation alone: {res['instrumentation_s'] * us:.1f} µs/step "
        f"({share * 100:.2f}% of a {args.step_ms:g} ms step; idle loops "
        f"{res['idle_shardsense_s'] * us:.1f} vs {res['idle_plain_s'] * us:.1f} µs); "
        f"timings dropped by the sink: {res['dropped']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
