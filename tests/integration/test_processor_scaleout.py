"""Two processor processes share the timings partitions in one consumer group (issue 13
item 3), on the real broker, each with its own chDB path.

chDB lets one process open a path, so each ``shardsense processor`` here writes its own
store; with an ``http://`` ClickHouse both would write one (and ReplacingMergeTree would
remove the handover's replays there as it does a restart's). Checked: the partitions are
split between them (each job served by exactly one instance, both used); predictions are
right (every job's straggler flagged, nobody else); after a ``kill -9`` of one instance
the other takes its partitions over and predicts its jobs right; nothing is lost (the
group commits every report, the union of the stores holds every timing) and within each
store nothing is stored twice.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.processes import ProcessorProcess, read_store
from benchmarks.throughput import PredictionTap, balanced_jobs
from shardsense.events import TimingReport
from shardsense.settings import Settings
from stream_processors.predictor import prediction_id
from tests.support.fleet import fleet_reports, produce
from tests.support.progress import Progress

pytestmark = pytest.mark.integration

ROUNDS = 30  # reports per rank per wave; rank 2 of every job is 1.6x slower from round 10


def _until(cond: Callable[[], bool], what: str, procs: list[ProcessorProcess],
           timeout: float = 90.0, every: Callable[[], object] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n"
                                 + "\n".join(p.tail(15) for p in procs))
        if every is not None:
            every()
        time.sleep(0.5)


def _wave(jobs: list[str], start: int) -> list[TimingReport]:
    out: list[TimingReport] = []
    for job in jobs:
        out += fleet_reports(job, ROUNDS, start=start, slow_from=10, per_report=8)
    return out


def _last(wave: list[TimingReport]) -> dict[tuple[str, int], str]:
    """Each rank's prediction after its last report of ``wave``."""
    return {(r.job_id, r.worker_id): prediction_id(r.event_id) for r in wave}


def _right(tap: PredictionTap, wave: list[TimingReport]) -> dict[str, str]:
    """Check every rank's last prediction; return the instance that made each job's."""
    owners: dict[str, str] = {}
    for (job, worker), pid in _last(wave).items():
        p = tap.by_id[pid]
        if worker == 2:
            assert p["straggler"] and p["slowdown"] > 1.3, (job, p)
        else:
            assert not p["straggler"] and 0.8 < p["slowdown"] < 1.2, (job, worker, p)
        owner = tap.instance_of(pid)
        assert owner is not None and owners.setdefault(job, owner) == owner
    return owners


def test_two_processors_split_the_partitions_and_hand_them_over(settings: Settings,
                                                                tmp_path: Path) -> None:
    assert settings.topic_partitions == 2
    jobs = balanced_jobs(settings.job_id, 4, 2)  # two jobs on each partition
    probes = balanced_jobs(f"{settings.job_id}-probe", 2, 2)
    chdb = [f"chdb://{tmp_path / f'p{i}' / 'ch'}" for i in range(2)]
    procs = [ProcessorProcess(settings.replace(data_dir=str(tmp_path / f"p{i}")), url,
                              tmp_path / f"p{i}.log").start() for i, url in enumerate(chdb)]
    tap = PredictionTap(settings, keep=True)
    progress = Progress(settings)
    sent: list[TimingReport] = []

    def probe() -> None:  # one report per partition, until each instance answers one
        reports = [fleet_reports(j, 1, start=len(sent))[0] for j in probes]
        produce(settings, reports)
        sent.extend(reports)

    try:
        _until(lambda: len(set().union(*(tap.instances.get(j, set()) for j in probes))) == 2,
               "both instances serving a partition", procs, every=probe)
        wave1 = _wave(jobs, start=0)
        produce(settings, wave1)
        sent += wave1
        _until(lambda: set(_last(wave1).values()) <= tap.by_id.keys(), "wave 1", procs)
        owners = _right(tap, wave1)
        assert len(set(owners.values())) == 2, owners  # the jobs are split between the two
        assert all(len(tap.instances[j]) == 1 for j in jobs), tap.instances  # one owner each

        victim, survivor = procs
        dead = {j for j, o in owners.items() if o.endswith(f":{victim.pid}")}
        assert victim.signal(signal.SIGKILL) == -signal.SIGKILL
        wave2 = _wave(jobs, start=ROUNDS)
        produce(settings, wave2)
        sent += wave2
        _until(lambda: set(_last(wave2).values()) <= tap.by_id.keys(),
               "wave 2, after the handover", [survivor], timeout=120)
        after = _right(tap, wave2)
        assert set(after.values()) == {f for f in after.values() if f.endswith(
            f":{survivor.pid}")}, after  # the survivor serves every job, the dead one's too
        assert dead and all(after[j].endswith(f":{survivor.pid}") for j in dead)
        _until(lambda: progress.committed() == len(sent), "every offset committed", [survivor])
    finally:
        for p in procs:
            if p.alive():
                p.signal(signal.SIGTERM, timeout=60)
        tap.close()
        progress.close()
    _check_stores(chdb, settings.job_id, sent)


def _check_stores(chdb: list[str], job_prefix: str, sent: list[TimingReport]) -> None:
    """Every timing in the union of the stores; within a store, each once."""
    sql = {"ids": "SELECT event_id, count(), uniqExact(seq) FROM v_batch_timings"
                  " WHERE startsWith(job_id, {j:String}) GROUP BY event_id"}
    stored: dict[str, int] = {}
    for url in chdb:
        for event_id, count, unique in read_store(url, sql, {"j": job_prefix})["ids"]:
            assert count == unique, event_id  # nothing twice within one store
            stored[event_id] = max(stored.get(event_id, 0), int(unique))
    assert stored == {r.event_id: len(r) for r in sent}
