"""Real gloo ranks of a training script, started in the background and steered by a file.

The faults tier breaks services while these train: :class:`GlooRanks` starts
``world`` processes of a script (``SCRIPT OUTDIR CONTROL``), rewrites the
JSON control file (per-rank slowdown, stop) atomically, and collects what each
rank wrote at its end (``OUTDIR/rank-<r>.json``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from shardsense.net import free_port

__all__ = ["GlooRanks", "exactly_once_problems"]

ROOT = Path(__file__).resolve().parents[2]


class GlooRanks:
    """``world`` ranks of ``script`` with ``env`` (plus the torch.distributed variables)."""

    def __init__(self, script: Path, world: int, outdir: Path, env: dict[str, str]) -> None:
        self.script, self.world, self.outdir = script, world, outdir
        self.control_path = outdir / "control.json"
        self.orders: dict[str, Any] = {"slowdown": {}, "stop": False}
        self.env = {**os.environ, **env, "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world),
                    "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.procs: list[subprocess.Popen[str]] = []

    def start(self) -> GlooRanks:
        self.outdir.mkdir(parents=True, exist_ok=True)
        self._write()
        for r in range(self.world):
            log = (self.outdir / f"rank-{r}.log").open("w")
            self.procs.append(subprocess.Popen(
                [sys.executable, str(self.script), str(self.outdir), str(self.control_path)],
                env={**self.env, "RANK": str(r)}, stdout=log, stderr=subprocess.STDOUT,
                text=True))
        return self

    def slow(self, rank: int, factor: float) -> None:
        self.orders["slowdown"][str(rank)] = factor
        self._write()

    def status(self) -> dict[str, Any]:
        """Rank 0's latest step (``status-0.json``), or {} before its first."""
        try:
            return dict(json.loads((self.outdir / "status-0.json").read_text()))
        except (OSError, ValueError):
            return {}

    def finish(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Ask every rank to stop after its epoch; wait; what each wrote (fails naming why)."""
        self.orders["stop"] = True
        self._write()
        try:
            codes = [p.wait(timeout) for p in self.procs]
        finally:
            self.kill()
        logs = "\n".join((self.outdir / f"rank-{r}.log").read_text()[-3000:]
                         for r in range(self.world))
        assert codes == [0] * self.world, f"ranks exited {codes}:\n{logs}"
        return [json.loads((self.outdir / f"rank-{r}.json").read_text())
                for r in range(self.world)]

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)

    def _write(self) -> None:
        tmp = self.control_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.orders))
        tmp.replace(self.control_path)


def exactly_once_problems(ranks: list[dict[str, Any]], global_batch: int) -> list[str]:
    """What breaks exactly-once visitation in the ranks' step records (empty: it held).

    Every epoch: all ranks took the same steps, no sample twice, ``steps x global_batch``
    samples in all.
    """
    problems: list[str] = []
    epochs = sorted({row[0] for r in ranks for row in r["steps"]})
    for e in epochs:
        per_rank = [[row for row in r["steps"] if row[0] == e] for r in ranks]
        counts = {len(rows) for rows in per_rank}
        seen = [i for rows in per_rank for row in rows for i in row[3]]
        if len(counts) != 1:
            problems.append(f"epoch {e}: ranks took {sorted(counts)} steps")
        if len(seen) != len(set(seen)):
            problems.append(f"epoch {e}: {len(seen) - len(set(seen))} samples twice")
        if len(seen) != max(counts) * global_batch:
            problems.append(f"epoch {e}: {len(seen)} samples, not {max(counts)} x {global_batch}")
    return problems
