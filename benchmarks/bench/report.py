"""The bench's outputs: progress, terminal table, results.md, bench.png, README block.

Everything here formats what :mod:`benchmarks.bench.analysis` computed; the
machine description is part of every output because on a shared 2-core box
the absolute numbers mean little without it (the ratios, measured side by side
in one run, are what to read).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.bench.analysis import WARMUP, analyse, goals, static_overhead
from benchmarks.bench.scenarios import RECURRING_CYCLES, BenchConfig, Scenario, catalogue
from benchmarks.loop import render
from benchmarks.loop.feasibility import bounds
from benchmarks.loop.methods import METHODS, PATHS
from benchmarks.loop.targets import budget, targets

__all__ = ["build", "machine", "markdown", "plot", "print_table", "progress", "update_readme"]

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
#: Reaction lags (steps) of the lagged oracle besides one sync interval: the product
#: path's 72 steps before issue 11 (../shared/ARCHITECTURE.md).
ORACLE_LAGS = (24, 72)


def machine() -> dict[str, Any]:
    """Where the numbers come from (load averages show how shared the cores were)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


@contextmanager
def progress(cfg: BenchConfig) -> Iterator[Callable[[tuple[Any, ...]], None]]:
    """A rich progress bar over all runs' steps; yields the worker-event callback."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    cat = catalogue(cfg.world, cfg.steps, cfg.base_delay_s)
    total = sum(cat[n].steps for n in cfg.scenarios) * len(cfg.methods)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}"
                  f"/{total} steps"), TimeElapsedColumn()) as bar:
        task = bar.add_task(f"starting {cfg.world} gloo ranks", total=total)
        done = [0]

        def on_event(msg: tuple[Any, ...]) -> None:
            if msg[0] == "step":
                _, name, method, step = msg
                bar.update(task, completed=done[0] + step, description=f"{name} / {method}")
            elif msg[0] == "result":
                done[0] += msg[1]["steps"]
                bar.update(task, completed=done[0])

        yield on_event


def _method_note(name: str) -> str:
    m = METHODS[name]
    overlay = ", ".join(f"{k}={v}" for k, v in m.overlay.items())
    return f"`{name}` ({m.path}{'; ' + overlay if overlay else ''}): {m.doc}"


def _product(cfg: BenchConfig, scenarios: dict[str, Scenario], summaries: list[dict[str, Any]],
             results: list[dict[str, Any]]) -> dict[str, Any]:
    """Feasibility, stage budget, targets and the per-change stages of the product path."""
    overhead = summaries[0]["overhead_ms"] / 1e3 if summaries else 0.0
    lags = (cfg.sync_every, *ORACLE_LAGS)
    product = [m for m in cfg.methods if METHODS[m].path == "product"]
    return {
        "feasibility": [bounds(scenarios[n], scenarios[n].steps, cfg.global_batch,
                               overhead=overhead, lags=lags, hold=cfg.sync_every)
                        for n in cfg.scenarios],
        "budget": {m: budget(results, m) for m in product},
        "targets": targets(summaries, results, cfg.sync_every),
        "runs_stages": [{"scenario": r["scenario"], "method": r["method"],
                         "stages": r["stages"]} for r in results if r.get("stages")],
    }


def build(cfg: BenchConfig, scenarios: dict[str, Scenario], results: list[dict[str, Any]],
          *, argv: list[str], seconds: float) -> dict[str, Any]:
    """Summaries, goals, machine and command: the content of every output."""
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        runs.setdefault(r["scenario"], {})[r["method"]] = r
    overhead = None
    if "static" in runs.get("none", {}):
        overhead = static_overhead(scenarios["none"], runs["none"]["static"])
    summaries = [analyse(scenarios[n], runs[n], overhead) for n in cfg.scenarios if n in runs]
    return {
        "command": shlex.join(["shardsense", "bench", *argv[2:]] if argv[:2] == [
            "shardsense", "bench"] else argv),
        "machine": machine(), "bench_seconds": round(seconds, 1),
        "paths": {p: PATHS[p] for p in dict.fromkeys(METHODS[m].path for m in cfg.methods)},
        "methods": {m: _method_note(m) for m in cfg.methods},
        "timing": cfg.timing, "sync_every": cfg.sync_every,
        "overhead_from": "the no-straggler static run" if overhead is not None else
                         "each scenario's static run",
        "setup": (f"{cfg.world} ranks (gloo, CPU, 1 thread each), MLP 64-64-10 on load_digits "
                  f"(80/20 split, repeated to {cfg.epoch_steps}-step epochs), global batch "
                  f"{cfg.global_batch}, {cfg.steps} steps per run (recurring scenarios: "
                  f"{RECURRING_CYCLES} periods), {cfg.num_shards} shards, sync every "
                  f"{cfg.sync_every} steps; "
                  f"injected work {1e3 * cfg.base_delay_s:g} ms per sample times the "
                  "scenario's slowdown (time.sleep before the forward pass)"),
        "scenarios": {n: scenarios[n].title for n in cfg.scenarios},
        "summaries": summaries, "goals": goals(summaries),
        **_product(cfg, scenarios, summaries, results),
    }


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return format(v, spec)


HEAD = ["scenario", "method", "path", "step ms", "median ms", "epoch s", "× clairv.", "× persist.",
        "adapted × clairv.", "adapt steps", "acc. %"]


def _table_rows(out: dict[str, Any]) -> list[list[str]]:
    rows = []
    for s in out["summaries"]:
        for r in s["rows"]:
            oracle = r["method"].startswith("oracle")
            rows.append([
                s["scenario"], r["method"], r.get("path", ""), _fmt(r["step_ms"], ".1f"),
                _fmt(r["median_step_ms"], ".1f"), _fmt(r["epoch_s"], ".2f"),
                _fmt(r["vs_clairvoyant"], ".2f"), _fmt(r["vs_persistent"], ".2f"),
                "" if oracle else (f"{_fmt(r.get('adapted_vs_clairvoyant'), '.2f')} / "
                                   f"{_fmt(r.get('adapted_median_vs_clairvoyant'), '.2f')}"),
                "" if oracle or "adaptation_steps" not in r else
                _fmt(r["adaptation_steps"], "d"),
                "" if oracle else _fmt(100 * r["accuracy"], ".1f"),
            ])
    return rows


def markdown(out: dict[str, Any], image: str) -> str:
    """results.md (and the README block): machine, command, table, goals, plot, method."""
    m = out["machine"]
    lines = [
        "### ShardSense bench: static vs ShardSense vs oracles", "",
        f"Measured {m['date_utc']} on {m['platform']}, {m['cpu']} ({m['cpu_count']} CPUs, "
        f"load average {'/'.join(map(str, m['load_avg']))} at the end), Python {m['python']}, "
        f"torch {m['torch']}; the bench took {out['bench_seconds']:.0f} s.", "",
        f"Command: `{out['command']}`", "",
        f"Setup: {out['setup']}.", "",
        "Methods (the *path* column says where each figure comes from; the machine is "
        "shared with other work, so read ratios measured side by side in this run):", "",
        *(f"- {note}" for note in out["methods"].values()),
        *(f"- path `{p}`: {doc}." for p, doc in out["paths"].items()), "",
        f"Runtime `compute_timing={out['timing']}`, sync every {out['sync_every']} steps.",
        "", "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in _table_rows(out)]
    inj = ", ".join(f"{s['scenario']} {s['static_injected_vs_clairvoyant']:.2f}x"
                    for s in out["summaries"])
    lines += ["", f"Static vs the clairvoyant oracle on the injected work alone: {inj} "
              "(issue 7 expects 1.75x for slow-2x); measured ratios are lower because every "
              f"step also pays a fixed {out['summaries'][0]['overhead_ms']:.1f} ms (all-reduce, "
              "Python, optimiser; the oracles include it)."]
    lines += ["", "| goal (issue 7) | measured | met |", "|---|---|---|"]
    for g in out["goals"]:
        met = {True: "yes", False: "**no**", None: "not run"}[g["met"]]
        lines.append(f"| {g['goal']} | {g['shown']} | {met} |")
    lines += render.markdown(out)
    lines += ["", f"![step time per scenario]({image})", "",
              f"![latency by stage]({image.replace('bench.png', 'stages.png')})"
              if out.get("runs_stages") else "", "",
              "Scenarios: " + "; ".join(f"`{k}`: {v}" for k, v in out["scenarios"].items())
              + ".", "",
              "Reading the table: *× clairv.* divides the run's total step time by the "
              "oracle that knows every rank's true speed at every step (B / Σ speeds, plus the "
              f"fixed per-step overhead measured in {out['overhead_from']}); *× persist.* by the "
              "oracle that knows each rank's lasting speed (including a straggler's onset) but "
              "not the periodic interference. *adapted × clairv.* is total / median of the "
              "per-step ratio, counted from the step the straggler's batch share got within 10% "
              f"of its ideal share (*adapt steps* after onset), or from step {WARMUP} without a "
              "straggler. The goals on step time are judged on the median step: other tenants "
              "of this shared 2-core machine stall either method for a few steps at random, "
              "which moves totals by more than the effects measured. Both are shown.", ""]
    return "\n".join(lines)


def print_table(out: dict[str, Any]) -> None:
    """The same table in the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"shardsense bench — {out['machine']['date_utc']}, "
                        f"{out['machine']['cpu_count']} CPUs, torch {out['machine']['torch']}")
    for h in HEAD:
        table.add_column(h, justify="left" if h in ("scenario", "method") else "right")
    for row in _table_rows(out):
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console = Console(width=190)  # a log file or pipe: do not squeeze the table to 80
    console.print(table)
    for g in out["goals"]:
        met = {True: "[green]met[/]", False: "[red]NOT met[/]", None: "not run"}[g["met"]]
        console.print(f"  {met}  {g['goal']}: {g['shown']}")
    for note in out["methods"].values():
        console.print(f"  {note}")
    render.print_tables(out, console)


PLOT_COLORS = {"static": "tab:red", "shardsense": "tab:blue", "true-bytes": "tab:green",
               "reactive": "tab:orange", "inprocess": "tab:purple"}


def plot(out: dict[str, Any], results: list[dict[str, Any]], path: Path) -> None:
    """Step time over steps (top) and batch sizes (bottom) per scenario, 4 scenarios a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sums = out["summaries"]
    cols = min(4, len(sums))
    blocks = -(-len(sums) // cols)
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(4.6 * cols, 6.4 * blocks),
                             squeeze=False)
    runs = {(r["scenario"], r["method"]): r for r in results}
    for i, s in enumerate(sums):
        row, col = 2 * (i // cols), i % cols
        _plot_scenario(axes[row][col], axes[row + 1][col], s, runs)
    for i in range(len(sums), blocks * cols):  # empty cells of the last row
        axes[2 * (i // cols)][i % cols].axis("off")
        axes[2 * (i // cols) + 1][i % cols].axis("off")
    axes[0][0].legend(fontsize=7, loc="lower right")
    axes[1][0].legend(fontsize=7, loc="lower left", ncol=2)
    m = out["machine"]
    fig.suptitle(f"shardsense bench, {m['date_utc']}, {m['cpu_count']} CPUs (shared), "
                 f"torch {m['torch']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_scenario(top: Any, bottom: Any, s: dict[str, Any],
                   runs: dict[tuple[str, str], dict[str, Any]]) -> None:
    """One scenario: every method's step time and the product path's batch sizes."""
    import textwrap

    import numpy as np

    for method, color in PLOT_COLORS.items():
        r = runs.get((s["scenario"], method))
        if r is None:
            continue
        ms = 1e3 * np.asarray(r["step_s"])
        top.plot(ms, color=color, alpha=0.15, lw=0.6)
        top.plot(np.convolve(ms, np.ones(5) / 5, mode="same"), color=color, lw=1.2,
                 label=method)
    top.plot(1e3 * np.asarray(s["series"]["clairvoyant"]), color="k", lw=1.1,
             label="oracle (clairvoyant)")
    top.plot(1e3 * np.asarray(s["series"]["persistent"]), color="k", ls="--", lw=1.0,
             label="oracle (persistent)")
    top.set_title(textwrap.fill(f"{s['scenario']}: {s['title']}", 52), fontsize=8)
    top.set_ylabel("step time (ms)")
    top.set_ylim(bottom=0, top=float(np.percentile(1e3 * np.asarray(
        runs[(s["scenario"], "static")]["step_s"]), 99)) * 1.3)
    shown = next((m for m in PLOT_COLORS if m != "static" and (s["scenario"], m) in runs), None)
    if shown is not None:
        sizes = np.asarray(runs[(s["scenario"], shown)]["batch_sizes"])
        for rank in range(sizes.shape[1]):
            bottom.step(range(len(sizes)), sizes[:, rank], where="post", lw=1.2,
                        label=f"rank {rank}")
    bottom.set_ylabel(f"{shown or 'shardsense'} batch size")
    bottom.set_xlabel("step")
    if s["onset"]:
        for ax in (top, bottom):
            ax.axvline(s["onset"], color="grey", ls=":", lw=1)


def update_readme(readme: Path, block: str) -> str:
    """Replace the marked block of ``readme``; returns what happened (never fails the run)."""
    try:
        text = readme.read_text()
    except OSError as exc:
        return f"README not updated: {exc}"
    if START not in text or END not in text:
        return f"README not updated: {readme} has no {START} ... {END} block"
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    return f"updated the bench block in {readme}"


def write_traces(results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Each run's per-rank batch timings as ``<scenario>-<method>.csv``, the format
    ``shardsense eval --traces`` reads (worker_id, step, samples, data_wait_s,
    compute_s); ``compute_s`` is the rank's own work (injected + forward), before
    backward's all-reduce makes every rank wait for the slowest."""
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for run in results:
        works = run.get("rank_work_s")
        if not works:
            continue
        sizes = run.get("batch_sizes") or []
        path = out_dir / f"{run['scenario']}-{run['method']}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["worker_id", "step", "samples", "data_wait_s", "compute_s"])
            for rank, series in enumerate(works):
                for step, seconds in enumerate(series):
                    samples = sizes[step][rank] if step < len(sizes) else run["global_batch"]
                    w.writerow([rank, step, samples, 0.0, f"{seconds:.6f}"])
        paths.append(path)
    return paths
