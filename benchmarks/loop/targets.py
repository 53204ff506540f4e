"""Issues 11 and 14's targets against one bench run, met or not (pure).

Every target is judged on the product path's default method (``shardsense``);
the stage budget is the median over every onset of a method's runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from benchmarks.loop.feasibility import BEAT_STATIC, CLOSE_GAP
from benchmarks.loop.stages import STAGES

__all__ = ["RECURRING", "budget", "gap_closed", "targets"]

RECURRING = ("burst", "turns", "thermal")
#: Scenarios whose straggler lasts once it began (item 4's "one map per change" is about these).
LASTING = ("slow-2x", "onset-3x")
#: Scenarios whose onsets enter the budget (the 10-step wave flips before any stage).
BUDGET_SCENARIOS = ("slow-2x", "onset-3x", "burst", "turns")


def _row(summary: dict[str, Any], method: str) -> dict[str, Any] | None:
    return next((r for r in summary["rows"] if r["method"] == method), None)


def gap_closed(summary: dict[str, Any], method: str) -> tuple[float | None, float | None]:
    """``(time vs static, share of the static-clairvoyant gap closed)`` of ``method``."""
    st, m = _row(summary, "static"), _row(summary, method)
    clair = _row(summary, "oracle (clairvoyant)")
    if st is None or m is None or clair is None:
        return None, None
    gap = st["step_ms"] - clair["step_ms"]
    closed = (st["step_ms"] - m["step_ms"]) / gap if gap > 1e-9 else None
    return m["step_ms"] / st["step_ms"], closed


def _first_map_error(runs: Iterable[dict[str, Any]], method: str,
                     scenarios: Iterable[str]) -> float | None:
    """The worst relative gap between the slow rank's first and settled batch after an onset."""
    names = set(scenarios)
    firsts = [(c["first_map_batch"], c["settled_batch"]) for run in runs
              if run["method"] == method and run["scenario"] in names
              for c in run.get("stages", [])
              if c["kind"] == "onset" and c["first_map_batch"] is not None]
    return max((abs(a - b) / max(b, 1) for a, b in firsts), default=None)


def _add(out: list[dict[str, Any]], issue: int, goal: str, ok: bool | None, shown: str) -> None:
    out.append({"issue": issue, "goal": goal, "met": ok, "shown": shown})


def _reaction(runs: Iterable[dict[str, Any]], method: str, sync_every: int
              ) -> tuple[bool | None, str]:
    """Issue 11 item 3 on onset-3x: share within 15% in force <= 1 s + one sync interval."""
    for run in runs:
        if run["scenario"] != "onset-3x" or run["method"] != method:
            continue
        onset = next((c for c in run.get("stages", []) if c["kind"] == "onset"), None)
        if onset is None:
            return None, "no onset"
        step_s = statistics.median(run["step_s"][onset["step"]:])
        bound = 1.0 + sync_every * step_s
        share = onset["share"]
        if share is None:
            return False, f"never (bound {bound:.2f} s)"
        return share["wall_s"] <= bound, (f"{share['wall_s']:.2f} s / {share['steps']} steps "
                                          f"(bound {bound:.2f} s)")
    return None, "not run"


def targets(summaries: list[dict[str, Any]], runs: list[dict[str, Any]], sync_every: int,
            method: str = "shardsense") -> list[dict[str, Any]]:
    """Each target of issues 11 (item 3, 4, 6) and 14 (item 2) with what was measured."""
    by = {s["scenario"]: s for s in summaries}
    out: list[dict[str, Any]] = []
    for name in ("slow-2x", "onset-3x"):
        r = _row(by[name], method) if name in by else None
        v = None if r is None else r["vs_clairvoyant"]
        _add(out, 11, f"{name}: <= 1.05x the clairvoyant oracle (whole run)",
             None if v is None else v <= 1.05, "not run" if v is None else f"{v:.3f}x")
    ratio = gap_closed(by["none"], method)[0] if "none" in by else None
    _add(out, 11, "none: <= 1.01x static", None if ratio is None else ratio <= 1.01,
         "not run" if ratio is None else f"{ratio:.3f}x")
    ok, shown = _reaction(runs, method, sync_every)
    _add(out, 11, "onset-3x: share within 15% in force <= 1 s + one sync interval", ok, shown)
    for label, names in (("lasting onsets: slow-2x, onset-3x", LASTING), ("recurring", RECURRING)):
        worst = _first_map_error(runs, method, names)
        _add(out, 11, f"first map after an onset within 5% of the settled one ({label}; worst)",
             None if worst is None else worst <= 0.05,
             "no map after any onset" if worst is None else f"{100 * worst:.0f}% off")
    losses = [100 * (_row(s, "static")["accuracy"] - r["accuracy"])  # type: ignore[index]
              for s in summaries if (r := _row(s, method)) and _row(s, "static")]
    worst_loss = max(losses, default=None)
    _add(out, 11, "accuracy within 1 pp of static (worst scenario)",
         None if worst_loss is None else worst_loss <= 1.0,
         "not run" if worst_loss is None else f"{worst_loss:+.2f} pp")
    held = [run["exactly_once"]["held"] for run in runs
            if run["method"] == method and "exactly_once" in run]
    _add(out, 11, "exactly-once held (every run)", all(held) if held else None,
         f"{sum(held)}/{len(held)} runs")
    for name in RECURRING:
        vs, closed = gap_closed(by[name], method) if name in by else (None, None)
        ok = None if vs is None or closed is None else (
            vs <= 1 - BEAT_STATIC and closed >= CLOSE_GAP)
        _add(out, 14, f"{name}: beat static by >= 25% and close >= 70% of the gap", ok,
             "not run" if vs is None else
             f"{vs:.3f}x static, {100 * (closed or 0):.0f}% of the gap closed")
    return out


def budget(runs: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """Per stage: median wall seconds and steps after the onset, and how many reached it."""
    onsets = [c for run in runs if run["method"] == method
              and run["scenario"] in BUDGET_SCENARIOS
              for c in run.get("stages", []) if c["kind"] == "onset"]
    out = []
    for stage in STAGES:
        hits = [c[stage] for c in onsets if c.get(stage)]
        out.append({
            "stage": stage, "reached": len(hits), "onsets": len(onsets),
            "wall_s": statistics.median(h["wall_s"] for h in hits) if hits else None,
            "steps": statistics.median(h["steps"] for h in hits) if hits else None,
        })
    return out
