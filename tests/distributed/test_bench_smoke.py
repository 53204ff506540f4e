"""``shardsense bench --quick`` end to end: 2 real gloo ranks, 1 scenario (no timing asserts).

The in-process ablation only (no services); the product path has its own test
(``test_product_loop.py``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed
pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(150)
def test_quick_bench_writes_finite_results_table_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    code = ("import sys; from benchmarks.bench import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code, "--quick", "--ranks", "2", "--scenarios", "slow-2x",
         "--methods", "inprocess", "--out-dir", str(out), "--readme", "",
         "--traces", str(tmp_path / "traces")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=140,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("results.json", "results.md", "bench.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((out / "results.json").read_text())
    assert [(r["scenario"], r["method"]) for r in res["runs"]] == [
        ("slow-2x", "static"), ("slow-2x", "inprocess")]
    for run in res["runs"]:
        assert len(run["step_s"]) == 60 and all(math.isfinite(t) and t > 0
                                                 for t in run["step_s"])
        assert 0.8 <= run["accuracy"] <= 1.0  # 60 steps of load_digits: ~90%
        assert all(sum(b) == 32 for b in run["batch_sizes"])
        assert run["exactly_once"]["held"] and run["exactly_once"]["duplicates"] == 0
    # the recorded per-rank timings feed shardsense eval: rank 1 is the 2x straggler
    from benchmarks.evaluate import load_recorded

    for method in ("static", "inprocess"):
        trace = load_recorded(str(tmp_path / "traces" / f"slow-2x-{method}.csv"))
        assert trace.shape == (60, 2) and (trace > 0).all()
    static = load_recorded(str(tmp_path / "traces" / "slow-2x-static.csv"))
    assert static[10:, 1].mean() > 1.5 * static[10:, 0].mean()
    rows = res["summaries"][0]["rows"]
    assert {r["method"] for r in rows} == {"static", "inprocess", "oracle (clairvoyant)",
                                           "oracle (persistent)"}
    assert {r["method"]: r["path"] for r in rows}["inprocess"] == "inprocess"
    for r in rows:
        assert math.isfinite(r["step_ms"]) and r["step_ms"] > 0
        assert math.isfinite(r["vs_clairvoyant"]) and r["vs_clairvoyant"] > 0.5
    md = (out / "results.md").read_text()
    assert "| slow-2x | inprocess | inprocess |" in md and "bench.png" in md and "CPUs" in md
    assert "ABLATION" in md and "Feasibility" in md
    # --replot rebuilds the same tables from the saved results.json, running nothing
    again = tmp_path / "again"
    proc = subprocess.run(
        [sys.executable, "-c", code, "--replot", str(out / "results.json"), "--out-dir",
         str(again), "--readme", ""],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    def table(text: str) -> list[str]:  # scenario and method of every table row
        return [" | ".join(ln.split(" | ")[:2]) for ln in text.splitlines() if ln.startswith("| ")]

    assert table((again / "results.md").read_text()) == table(md)
    saved = json.loads((again / "results.json").read_text())
    assert saved["command"] == res["command"] and saved["machine"] == res["machine"]
    for a, b in zip(saved["summaries"][0]["rows"], rows, strict=True):
        assert a["step_ms"] == pytest.approx(b["step_ms"], rel=1e-4)  # floats saved to 6 digits
