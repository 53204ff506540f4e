"""From raw runs to the bench's table: oracles, ratios, adaptation, goals (pure).

A run is the dict a rank-0 worker sends (``step_s``, ``batch_sizes``,
``epoch_of_step``, ``accuracy`` ...). Per scenario the static run gives the
fixed per-step overhead, both oracles add it, and every method is compared
with them over the same steps. "Once adapted" means from the step the
straggler's share got within 10% of its ideal share (``oracle.adaptation_steps``);
without a straggler, from step ``WARMUP`` on (the 20-step budget of issue 7).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from benchmarks.bench.oracle import (
    adaptation_steps,
    clairvoyant,
    critical_path,
    estimate_overhead,
    persistent,
    window_ratio,
)
from benchmarks.bench.scenarios import Scenario
from benchmarks.loop.methods import METHODS

__all__ = ["WARMUP", "analyse", "delays", "goals", "static_overhead"]

WARMUP = 20


def delays(scenario: Scenario, steps: int, *, persistent_only: bool = False) -> np.ndarray:
    """``(steps, world)`` per-sample delays (true, or at the persistent speed)."""
    fn = scenario.persistent_delay if persistent_only else scenario.delay
    return np.array([[fn(r, t) for r in range(scenario.world)] for t in range(steps)])


def _epoch_s(step_s: np.ndarray, epoch_of_step: list[int]) -> float:
    """Mean wall time of the run's full epochs (the last, cut-off one excluded)."""
    counts = Counter(epoch_of_step)
    full = max(counts.values())
    sums: dict[int, float] = {}
    for t, e in zip(step_s, epoch_of_step, strict=True):
        sums[e] = sums.get(e, 0.0) + float(t)
    whole = [s for e, s in sums.items() if counts[e] == full]
    return float(np.mean(whole))


def static_overhead(scenario: Scenario, static: dict[str, Any]) -> float:
    """Seconds per step beyond the injected path in a static run (median, see ``oracle``)."""
    d = delays(scenario, len(static["step_s"]))
    return estimate_overhead(static["step_s"], critical_path(static["batch_sizes"], d))


def _median_ratio(measured: np.ndarray, reference: np.ndarray, start: int) -> float:
    if start >= len(measured):
        return float("nan")
    return float(np.median(measured[start:] / reference[start:]))


def analyse(scenario: Scenario, runs: dict[str, dict[str, Any]],
            overhead: float | None = None) -> dict[str, Any]:
    """Rows for one scenario: each measured method and both oracles.

    ``overhead``: the fixed per-step cost the oracles add, best measured in the
    no-straggler static run (balanced ranks contend for the cores like the
    oracle's would); default: from this scenario's static run.
    """
    static = runs["static"]
    steps = len(static["step_s"])
    batch = int(static["global_batch"])
    d = delays(scenario, steps)
    pd = delays(scenario, steps, persistent_only=True)
    if overhead is None:
        overhead = static_overhead(scenario, static)
    oracles = {"clairvoyant": clairvoyant(d, batch, overhead),
               "persistent": persistent(d, pd, batch, overhead)}
    per_epoch = Counter(static["epoch_of_step"]).most_common(1)[0][1]
    rows: list[dict[str, Any]] = []
    for method, run in runs.items():
        step_s = np.asarray(run["step_s"])[:steps]
        row: dict[str, Any] = {
            "method": method, "path": run.get("path") or METHODS[method].path,
            "step_ms": 1e3 * float(step_s.mean()),
            "median_step_ms": 1e3 * float(np.median(step_s)),
            "epoch_s": _epoch_s(step_s, run["epoch_of_step"][:steps]),
            "vs_clairvoyant": window_ratio(step_s, oracles["clairvoyant"]),
            "vs_persistent": window_ratio(step_s, oracles["persistent"]),
            "accuracy": float(run["accuracy"]),
        }
        start = WARMUP
        if scenario.straggler is not None:
            adapt = adaptation_steps(run["batch_sizes"][:steps], d, scenario.straggler,
                                     scenario.onset, batch)
            row["adaptation_steps"] = adapt
            start = scenario.onset + adapt if adapt is not None else steps
        row["adapted_from"] = start
        row["adapted_vs_clairvoyant"] = window_ratio(step_s, oracles["clairvoyant"], start)
        row["adapted_vs_persistent"] = window_ratio(step_s, oracles["persistent"], start)
        row["adapted_median_vs_clairvoyant"] = _median_ratio(step_s, oracles["clairvoyant"],
                                                             start)
        rows.append(row)
    for name, series in oracles.items():
        rows.append({"method": f"oracle ({name})", "path": "oracle",
                     "step_ms": 1e3 * float(series.mean()),
                     "median_step_ms": 1e3 * float(np.median(series)),
                     "epoch_s": float(series.mean()) * per_epoch,
                     "vs_clairvoyant": window_ratio(series, oracles["clairvoyant"]),
                     "vs_persistent": window_ratio(series, oracles["persistent"])})
    injected = window_ratio(critical_path(static["batch_sizes"], d), clairvoyant(d, batch))
    return {
        "scenario": scenario.name, "title": scenario.title, "steps": steps,
        "static_injected_vs_clairvoyant": injected,
        "onset": scenario.onset if scenario.straggler is not None else None,
        "overhead_ms": 1e3 * overhead, "steps_per_epoch": per_epoch, "rows": rows,
        "series": {"clairvoyant": oracles["clairvoyant"].tolist(),
                   "persistent": oracles["persistent"].tolist()},
    }


def _row(summary: dict[str, Any], method: str) -> dict[str, Any] | None:
    return next((r for r in summary["rows"] if r["method"] == method), None)


def goals(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 7's goals, each with the measured value and met / not met / not run."""
    by = {s["scenario"]: s for s in summaries}
    out: list[dict[str, Any]] = []

    def add(goal: str, value: float | None, ok: bool | None, shown: str) -> None:
        out.append({"goal": goal, "value": value, "met": ok, "shown": shown})

    for name in ("slow-2x", "onset-3x"):
        ss = _row(by[name], "shardsense") if name in by else None
        v = ss["adapted_median_vs_clairvoyant"] if ss else None
        ok = None if v is None else bool(math.isfinite(v) and v <= 1.10)
        shown = "not run" if ss is None else (
            "never adapted" if v is None or not math.isfinite(v) else
            f"{v:.3f}x median, {ss['adapted_vs_clairvoyant']:.3f}x total")
        add(f"{name}: ShardSense within 10% of the clairvoyant oracle once adapted "
            "(median step)", v, ok, shown)
    ss = _row(by["onset-3x"], "shardsense") if "onset-3x" in by else None
    a = ss.get("adaptation_steps") if ss else None
    add("onset-3x: rebalanced within 20 steps of onset", a,
        None if ss is None else a is not None and a <= 20,
        "not run" if ss is None else ("never" if a is None else f"{a} steps"))
    worst: float | None = None
    for s in summaries:
        st, ss = _row(s, "static"), _row(s, "shardsense")
        if st and ss:
            loss = 100.0 * (st["accuracy"] - ss["accuracy"])
            worst = loss if worst is None else max(worst, loss)
    add("no accuracy loss beyond 1 percentage point (worst scenario)", worst,
        None if worst is None else worst <= 1.0,
        "not run" if worst is None else f"{worst:+.2f} pp")
    st = _row(by["none"], "static") if "none" in by else None
    ss = _row(by["none"], "shardsense") if "none" in by else None
    slow = ss["median_step_ms"] / st["median_step_ms"] if st and ss else None
    add("none: no slowdown beyond 2% without a straggler (median step)", slow,
        None if slow is None else slow <= 1.02,
        "not run" if st is None or ss is None else
        f"{slow:.3f}x static median, {ss['step_ms'] / st['step_ms']:.3f}x total")
    return out
