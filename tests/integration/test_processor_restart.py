"""Issue #4 item 7: the processor survives ``kill -9`` mid-batch (real broker + chDB).

``shardsense processor`` runs as a subprocess with its own chDB path (chDB
allows one path per process, and this pytest process holds the session's).
It is killed twice with SIGKILL right after it stored a batch while a backlog
of hundreds of reports waits (so it dies inside the next batch): once after its
first offset commit, once on the restart before that run ever commits. It is
restarted on the same chDB path and data dir, and finally stopped with SIGTERM
once its group has committed every offset. A third process then reads the chDB
path: every timing, feature row and prediction is in the ``v_*`` views exactly
once, while the insert blocks on disk show the rows the restarts replayed.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.processes import ProcessorProcess
from shardsense.settings import Settings
from stream_processors.predictor import prediction_id
from tests.support.fleet import WORKERS, fleet_reports, produce
from tests.support.progress import Progress

pytestmark = pytest.mark.integration

PER_REPORT = 40
#: reports per wave: at the 1st start, the 1st run's burst, the 2nd start, the 3rd start
#: (the processor stores ~2000 reports/s here, in batches of 500 messages)
WAVES = (1200, 1600, 1600, 800)

#: Runs in a fresh interpreter once the processor has exited (the chDB path is free).
VERIFY = """
import json, sys
from shardsense.clickhouse import connect
c = connect(sys.argv[1]); p = {"j": sys.argv[2]}
def one(sql): return list(c.query(sql, parameters=p).result_rows[0])
w = " WHERE job_id = {j:String}"
print(json.dumps({
    "timings": one("SELECT count(), uniqExact(event_id, seq) FROM v_batch_timings" + w),
    "timings_raw": one("SELECT count() FROM batch_timings" + w)[0],
    "features": one("SELECT count(), uniqExact(event_id) FROM v_worker_features" + w),
    "features_raw": one("SELECT count() FROM worker_features" + w)[0],
    "predictions": one("SELECT count(), uniqExact(event_id) FROM v_predictions" + w),
    "predictions_raw": one("SELECT count() FROM predictions" + w)[0],
    # every insert is one block number; outdated (merged-away) parts stay on disk
    # for minutes, so this sums every row ever inserted, replays included
    "timings_inserted": one("SELECT sum(rows) FROM (SELECT min_block_number, any(rows) rows"
        " FROM system.parts WHERE database = currentDatabase() AND table = 'batch_timings'"
        " AND min_block_number = max_block_number GROUP BY min_block_number)")[0],
    "prediction_ids": one("SELECT groupArray(event_id) FROM v_predictions" + w)[0],
}))
"""


def _until(cond: Callable[[], bool], what: str, proc: ProcessorProcess,
           timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.alive(), f"processor exited while waiting for {what}\n{proc.tail()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{proc.tail()}"
        time.sleep(0.1)


def test_kill_9_mid_batch_loses_and_duplicates_nothing(settings: Settings, tmp_path: Path) -> None:
    started = time.monotonic()
    chdb_url = f"chdb://{tmp_path / 'processor-ch'}"
    reports = fleet_reports(settings.job_id, sum(WAVES) // WORKERS, per_report=PER_REPORT)
    cuts = [sum(WAVES[:i]) for i in range(len(WAVES) + 1)]
    waves = [reports[a:b] for a, b in itertools.pairwise(cuts)]
    proc = ProcessorProcess(settings.replace(processor_retrain_s=0), chdb_url,
                            tmp_path / "processor.log")
    progress = Progress(settings)
    timeline: list[str] = []

    def mark(event: str) -> int:
        committed = progress.committed()
        timeline.append(f"{time.monotonic() - started:5.1f}s {event}: committed={committed}")
        return committed

    def kill_when_busy(event: str) -> int:
        """SIGKILL as soon as it stored a batch with more queued: it is mid-batch."""
        stored = progress.predictions()
        _until(lambda: progress.predictions() != stored, "a stored batch", proc, 45)
        assert proc.signal(signal.SIGKILL) == -signal.SIGKILL
        return mark(event)

    try:
        # 1st run: once it has committed, a burst, then killed while working on it.
        proc.start()
        produce(settings, waves[0])
        _until(lambda: progress.committed() > 0, "the first offset commit", proc, 45)
        produce(settings, waves[1])
        kill1 = kill_when_busy("kill 1")
        assert 0 < kill1 < cuts[2], f"not killed mid-stream\n{timeline}\n{proc.tail()}"

        # 2nd run: a backlog (the uncommitted rest + a burst), killed after its first
        # stored batch, most likely before its first commit (every 2.8 s).
        proc.start()
        produce(settings, waves[2])
        kill2 = kill_when_busy("kill 2")
        assert kill2 < cuts[3], f"not killed mid-stream\n{timeline}\n{proc.tail()}"

        # 3rd run: the rest of the stream, then a clean stop once all is committed.
        proc.start()
        produce(settings, waves[3])
        _until(lambda: progress.committed() == len(reports), "every offset committed", proc, 60)
        mark(f"all {len(reports)} reports in")
        assert proc.signal(signal.SIGTERM) == 0, proc.tail()
    finally:
        if proc.alive():
            proc.signal(signal.SIGKILL)
        progress.close()

    out = subprocess.run(
        [sys.executable, "-c", VERIFY, chdb_url, settings.job_id],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    ids = set(got.pop("prediction_ids"))
    print("", *timeline, json.dumps(got), f"{time.monotonic() - started:.1f}s total", sep="\n")
    context = "\n".join([*timeline, json.dumps(got), proc.tail()])
    n_timings = len(reports) * PER_REPORT
    assert got["timings"] == [n_timings, n_timings], context  # none lost, none twice
    assert got["timings_raw"] >= n_timings, context
    if kill2 == kill1:  # the 2nd run stored a batch and never committed: the 3rd replayed it
        assert got["timings_inserted"] > n_timings, context  # so the dedup did real work
    n_ticks = n_timings // settings.processor_tick_steps  # one feature row per tick
    assert got["features"] == [n_ticks, n_ticks], context
    assert got["features_raw"] >= n_ticks, context
    assert got["predictions"][0] == got["predictions"][1] == len(ids), context
    assert ids <= {prediction_id(r.event_id) for r in reports}, context
    # the last report of every worker was predicted after (at the latest) the last restart
    assert {prediction_id(r.event_id) for r in reports[-WORKERS:]} <= ids, context
