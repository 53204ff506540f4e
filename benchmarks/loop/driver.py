"""The bench parent's side of each run: services before it, measurements after it.

Rank 0 asks ``("prepare", scenario, method, shard_bytes)`` before every run and
waits for the reply; the parent first finishes the previous run (so no
teardown overlaps a measured run), then starts the product path's services
if the method needs them. When a run's result arrives it gets what the host
observed, the latency of every stage, and the exactly-once check; the raw
rows and sample indices are then dropped (results.json stays small).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from benchmarks.bench.scenarios import Scenario
from benchmarks.loop.checks import exactly_once
from benchmarks.loop.host import BenchHost
from benchmarks.loop.methods import METHODS
from benchmarks.loop.stages import run_stages

__all__ = ["Driver"]

log = logging.getLogger(__name__)


class Driver:
    """Answers rank 0's ``prepare`` messages and completes each result dict in place."""

    def __init__(self, scenarios: dict[str, Scenario], host: BenchHost | None) -> None:
        self.scenarios = scenarios
        self.host = host

    def on_prepare(self, scenario: str, method: str, shard_bytes: int, replies: Any) -> None:
        if self.host is None or METHODS[method].path != "product":
            replies.put(None)
            return
        try:
            settings = self.host.prepare(scenario, method, shard_bytes)
        except Exception as exc:
            log.exception("bench: preparing %s/%s failed", scenario, method)
            replies.put(("error", f"{exc}\n{traceback.format_exc()}"))
            return
        replies.put(("ok", settings))

    def on_result(self, run: dict[str, Any]) -> None:
        product = self.host.finish() if self.host is not None else None
        run["path"] = METHODS[run["method"]].path
        ranks = run.get("ranks") or []
        spe = run.get("steps_per_epoch") or max(run["epoch_of_step"].count(0), 1)
        if ranks and "indices" in ranks[0]:
            run["exactly_once"] = exactly_once(ranks, run["epoch_of_step"], run["global_batch"],
                                               spe)
        if ranks and "samples" in ranks[0]:  # product path: what every rank really ran
            run["batch_sizes"] = [list(b) for b in zip(*(r.pop("samples") for r in ranks),
                                                       strict=True)]
        if product is not None:
            run["product"] = product
            run["stages"] = run_stages(self.scenarios[run["scenario"]], run)
            product.pop("timings", None)
        for rank in ranks:
            rank.pop("indices", None)
            rank.pop("work_s", None)  # kept once, as rank_work_s
