"""stages.png: each product-path run's first onset as a timeline of the loop's stages.

One row per (scenario, method); x is wall seconds after the onset, every
marker a stage (labelled with its step count after the onset), so the budget
to shrink reads left to right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.loop.stages import STAGES

__all__ = ["plot_timeline"]

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h")


def _first_onsets(out: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for run in out.get("runs_stages", []):
        onset = next((c for c in run.get("stages", []) if c["kind"] == "onset"), None)
        if onset is not None and run["scenario"] != "periodic":
            rows.append((f"{run['scenario']} / {run['method']}", onset))
    return rows


def plot_timeline(out: dict[str, Any], path: Path) -> bool:
    """Write the plot; False (nothing written) when no product-path run had an onset."""
    rows = _first_onsets(out)
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(12, 0.7 * len(rows) + 2.4))
    ends = [0.0]
    for y, (_, c) in enumerate(rows):
        points = [(s, c[s]) for s in STAGES if c.get(s)]
        if points:
            ends.append(max(p["wall_s"] for _, p in points))
            ax.hlines(y, 0, ends[-1], color="0.8", lw=1)
        for i, stage in enumerate(STAGES):
            p = c.get(stage)
            if not p:
                continue
            ax.plot(p["wall_s"], y, MARKERS[i % len(MARKERS)], color=colors(i), ms=8 - i % 3,
                    alpha=0.85, label=stage)
            ax.annotate(str(p["steps"]), (p["wall_s"], y), textcoords="offset points",
                        xytext=(0, 7 + 8 * (i % 3)), ha="center", fontsize=7, color=colors(i))
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-0.2, max(ends) * 1.05 + 0.5)
    ax.set_xlabel("wall seconds after the onset (labels: steps after it)")
    ax.axvline(0, color="k", lw=0.8)
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    ax.legend(seen.values(), seen.keys(), fontsize=7, loc="upper center", ncol=len(seen),
              bbox_to_anchor=(0.5, -0.12 - 0.6 / (len(rows) + 2)))
    m = out["machine"]
    ax.set_title("shardsense bench: latency by stage after the first onset of each "
                 f"product-path run\n{m['date_utc']}, {m['cpu_count']} CPUs (shared machine)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
