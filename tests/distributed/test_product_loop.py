"""The product path end to end: 2 real gloo ranks -> Kafka -> Faust -> planner -> map in force.

``shardsense bench`` runs in a subprocess (it hosts its own broker and chDB path;
this pytest process holds the session's, and chDB allows one path per
process). Rank 1 is 2x slower from the start; the map the planner publishes
must be in force on both ranks within ``BOUND_STEPS`` steps, and every stage
of the loop must happen in order. No wall-clock assertions: steps and orders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed
pytest.importorskip("torch")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[2]
STEPS = 160
#: Measured 2026-12-01 on this shared 2-core box, default settings: the map was in
#: force 24 steps after the start (4 ranks; the first timing row ~10 steps in, from a
#: cold processor), vs 96 before issue 11's planner and runtime work. The bound leaves
#: room for a loaded CI machine, where the stack slows and the sleeping ranks do not.
BOUND_STEPS = 60
ORDER = ("first_row", "at_level", "decision", "published", "seen", "agreed", "in_force")


@pytest.mark.timeout(300)
def test_planner_map_is_in_force_on_every_rank_within_the_bound(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    code = "import sys; from benchmarks.bench import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env = {k: v for k, v in env.items() if not k.startswith("SHARDSENSE_")}  # defaults
    proc = subprocess.run(
        [sys.executable, "-c", code, "--ranks", "2", "--scenarios", "slow-2x", "--methods",
         "shardsense", "--steps", str(STEPS), "--out-dir", str(out), "--readme", ""],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    run = next(r for r in res["runs"] if r["method"] == "shardsense")
    assert run["path"] == "product" and run["exactly_once"]["held"], run["exactly_once"]
    product = run["product"]
    assert set(product["predictions"]["worker_id"]) == {0, 1}  # saved as columns
    assert len(product["maps"]) >= 2  # rank 0's first map, then the planner's
    change = run["stages"][0]
    assert (change["step"], change["rank"], change["kind"]) == (0, 1, "onset")
    reached = [change[s] for s in ORDER]
    assert all(reached), {s: change[s] for s in ORDER}
    walls = [s["wall_s"] for s in reached]
    assert walls == sorted(walls), dict(zip(ORDER, walls, strict=True))
    assert change["in_force"]["steps"] <= BOUND_STEPS, change["in_force"]
    # the planner's map gives the slow rank less than half of the global batch
    assert change["first_map_batch"] < run["global_batch"] / 2
    sizes = run["batch_sizes"][-1]
    assert sum(sizes) == run["global_batch"] and sizes[1] < sizes[0]
    assert (out / "stages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
