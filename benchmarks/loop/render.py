"""The product path's tables: stage latencies, budget, feasibility, targets (text only).

Each table is built once as rows of strings; :func:`markdown` and
:func:`print_tables` lay the same rows out for results.md and the terminal.
"""

from __future__ import annotations

from typing import Any

from benchmarks.loop.stages import STAGES

__all__ = ["MAX_CHANGES", "markdown", "print_tables", "tables"]

#: Changes per run shown in the stage table (results.json has all of them).
MAX_CHANGES = 3
#: Column titles of the stages (names as in results.json: ``benchmarks.loop.stages``).
STAGE_LABELS = {"first_row": "row stored", "alarm": "alarm", "at_level": "at level",
                "decision": "decided", "published": "published", "seen": "rank 0 has it",
                "agreed": "agreed", "in_force": "in force", "share": "share ±15%"}
STAGE_HEAD = ["scenario", "method", "change", *(STAGE_LABELS[s] for s in STAGES), "maps",
              "evaluations before"]


def _cell(stage: dict[str, float] | None) -> str:
    if stage is None:
        return "—"
    return f"{max(stage['wall_s'], 0.0):.2f}s/{stage['steps']}"  # no "-0.00"


def _change(c: dict[str, Any]) -> str:
    return f"r{c['rank']} {c['before']:g}→{c['after']:g}x @{c['step']}"


def stage_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for run in runs:
        for c in run.get("stages", [])[:MAX_CHANGES]:
            ev = c["evaluations"]
            rows.append([run["scenario"], run["method"], _change(c),
                         *(_cell(c.get(s)) for s in STAGES), str(c["maps_in_window"]),
                         f"{ev['skipped']} skipped, {ev['pending']} pending"])
    return rows


def budget_rows(budgets: dict[str, list[dict[str, Any]]]) -> list[list[str]]:
    rows = []
    for method, stages in budgets.items():
        prev = 0.0
        for b in stages:
            if b["wall_s"] is None:
                rows.append([method, STAGE_LABELS[b["stage"]], "—", "—", "—",
                             f"0/{b['onsets']}"])
                continue
            rows.append([method, STAGE_LABELS[b["stage"]], f"{b['wall_s']:.2f}",
                         f"{b['wall_s'] - prev:+.2f}",
                         f"{b['steps']:g}", f"{b['reached']}/{b['onsets']}"])
            prev = b["wall_s"]
    return rows


def feasibility_rows(bounds: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for f in bounds:
        lagged = [f"{v['vs_clairvoyant']:.2f}x / "
                  + ("—" if v["gap_closed"] is None else f"{100 * v['gap_closed']:.0f}%")
                  for v in f["lagged"].values()]
        rows.append([f["scenario"], f"{f['static_vs_clairvoyant_work']:.2f}",
                     f"{f['static_vs_clairvoyant']:.2f}", f"{f['static_vs_persistent']:.2f}",
                     f"{100 * f['best_gain_vs_static']:.0f}%",
                     "yes" if f["beat_static_25_feasible"] else "**no**", *lagged])
    return rows


def tables(out: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, head, rows)`` of every product-path table in ``out``."""
    lags = list(out["feasibility"][0]["lagged"]) if out.get("feasibility") else []
    hold = out["feasibility"][0]["hold"] if out.get("feasibility") else 1
    return [
        ("Latency by stage after each change (wall seconds/steps after it; first "
         f"{MAX_CHANGES} changes per run; — = not within the change's window)", STAGE_HEAD,
         stage_rows(out["runs_stages"])),
        ("Stage budget: median over onsets (slow-2x, onset-3x, burst, turns)",
         ["method", "stage", "s after onset", "Δ s", "steps", "reached"],
         budget_rows(out["budget"])),
        (f"Feasibility: static over the oracles; a lagged oracle (true speeds applied "
         f"LAG steps late, shares held {hold} steps) as x clairvoyant / gap closed",
         ["scenario", "static/clairv. (work)", "static/clairv.", "static/persist.",
          "best gain vs static", ">=25% feasible", *(f"lag {lag}" for lag in lags)],
         feasibility_rows(out["feasibility"])),
        ("Targets (issues 11 and 14), product path on default settings",
         ["issue", "target", "measured", "met"],
         [[str(t["issue"]), t["goal"], t["shown"],
           {True: "yes", False: "**no**", None: "not run"}[t["met"]]]
          for t in out["targets"]]),
    ]


def markdown(out: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for title, head, rows in tables(out):
        lines += ["", f"#### {title}", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def print_tables(out: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    for title, head, rows in tables(out):
        table = Table(title=title, title_justify="left", padding=(0, 1, 0, 0))
        for h in head:
            table.add_column(h, overflow="fold", no_wrap=h in ("method", "scenario"))
        for r in rows:
            table.add_row(*(c.replace("**", "") for c in r))
        console.print(table)
