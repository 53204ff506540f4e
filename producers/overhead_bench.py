"""What ShardSense's loader costs a training loop: side by side with a plain DataLoader.

Run: ``python -m producers.overhead_bench [--step-ms 10] [--steps 200] [--rounds 5]
[--bootstrap HOST:PORT]``. Not a timed test: a report (rich table) for people.

Both loops read the same in-memory dataset at the same batch size and "train"
for ``--step-ms`` per batch (sleep, then a short spin for precision, so the box
stays mostly idle). Rounds alternate plain / ShardSense so that drift on a
shared machine hits both alike; the figures are medians over rounds. The
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
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["main"]


def _train_step(seconds: float) -> None:
    """Sleep most of the step, spin the last 0.3 ms: precise without hogging a core."""
    end = time.perf_counter() + seconds
    if seconds > 0.0005:
        time.sleep(seconds - 0.0003)
    while time.perf_counter() < end:
        pass


def _run(loader: Iterable[Any], steps: int, step_s: float) -> tuple[float, float]:
    """Seconds per step and mean seconds inside ``next()`` over ``steps`` batches."""
    it = iter(loader)
    wait = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        next(it)
        wait += time.perf_counter() - t0
        _train_step(step_s)
    return (time.perf_counter() - start) / steps, wait / steps


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from producers.engine import ShardSenseRuntime
    from producers.memory import InMemoryTimingSink

    torch.manual_seed(0)
    n = args.steps * args.batch_size * 2
    data = TensorDataset(torch.randn(n, 64), torch.randint(0, 10, (n,)))
    sink: Any = InMemoryTimingSink()
    if args.bootstrap:
        from producers.telemetry import KafkaTimingSink
        from shardsense.settings import Settings

        sink = KafkaTimingSink(Settings(kafka_bootstrap=args.bootstrap, job_id="bench"), 0)
    runtime = ShardSenseRuntime(data, num_shards=1024, num_workers=1,
                                global_batch_size=args.batch_size, sink=sink)
    shard_loader = runtime.get_dataloader(0)
    plain = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True)
    step_s = args.step_ms / 1000.0
    rows: dict[str, list[tuple[float, float]]] = {"plain": [], "shardsense": [], "idle": []}
    for _ in range(args.rounds):
        rows["plain"].append(_run(plain, args.steps, step_s))
        rows["shardsense"].append(_run(shard_loader, args.steps, step_s))
        runtime.epoch_end(runtime.epoch)  # a fresh epoch (and order) for every pass
        # instrumentation alone: the same loaders with a zero-length step
        rows["idle"].append(_run(shard_loader, args.steps, 0.0))
        runtime.epoch_end(runtime.epoch)
        rows["idle"].append(_run(plain, args.steps, 0.0))
    dropped = getattr(sink, "dropped", 0)
    runtime.close()
    med = {k: statistics.median(x[0] for x in v) for k, v in rows.items()}
    idle_ss = statistics.median(x[0] for x in rows["idle"][0::2])
    idle_plain = statistics.median(x[0] for x in rows["idle"][1::2])
    return {
        "plain_step_s": med["plain"],
        "shardsense_step_s": med["shardsense"],
        "plain_wait_s": statistics.median(x[1] for x in rows["plain"]),
        "shardsense_wait_s": statistics.median(x[1] for x in rows["shardsense"]),
        "overhead_ratio": med["shardsense"] / med["plain"] - 1.0,
        "instrumentation_s": idle_ss - idle_plain,
        "idle_plain_s": idle_plain,
        "idle_shardsense_s": idle_ss,
        "dropped": dropped,
        "sink": type(sink).__name__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producers.overhead_bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--step-ms", type=float, default=10.0, help="simulated step (ms)")
    parser.add_argument("--steps", type=int, default=200, help="steps per loop and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--batch-size", type=int, default=32)
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
    table = Table(title=f"loader overhead at {args.step_ms:g} ms steps "
                        f"({args.rounds} rounds x {args.steps} steps, medians)")
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
