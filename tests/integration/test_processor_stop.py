"""A processor stopped while its inserts keep failing must not commit the batch.

A stop while a batch is being stored must commit none of it (Faust's
``take_events`` once acked a batch in a ``finally`` and committed reports never
written). The agent acks a batch only after its store, and marks what it never
stored acked without the consumer's bookkeeping on the way out (see
``stream_processors.app.ingest_batches``), so nothing of it is committed and a
restart stores it all (real broker and chDB; the fault is injected on the client's
insert). Every thread the processor starts is a daemon: once, under load, a stop that
timed out left aiokafka's (non-daemon) consumer thread running and pytest hung at exit.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from shardsense.clickhouse import connect
from shardsense.settings import Settings
from stream_processors.app import ProcessorThread, create_app
from tests.support.faults import wait_until
from tests.support.fleet import fleet_reports, produce
from tests.support.progress import Progress

pytestmark = pytest.mark.integration


class FailingInserts:
    """The real client, whose inserts fail while ``broken`` is set (ClickHouse down)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.broken = True
        self.attempts = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def _insert(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        if self.broken:
            self.attempts.set()
            raise ConnectionError("injected: ClickHouse is down")
        return getattr(self.client, fn)(*args, **kwargs)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        return self._insert("insert", *args, **kwargs)

    def insert_arrow(self, *args: Any, **kwargs: Any) -> Any:
        return self._insert("insert_arrow", *args, **kwargs)


def test_stop_during_failing_inserts_commits_nothing_then_restart_stores_all(
    settings: Settings,
) -> None:
    client = FailingInserts(connect(settings.resolved_clickhouse_url))
    progress = Progress(settings)  # the processor group's committed offsets, from outside
    try:
        reports = fleet_reports(settings.job_id, rounds=10)
        produce(settings, reports)
        proc = ProcessorThread(create_app(settings, client)).start()
        try:
            assert client.attempts.wait(30), "the processor never tried to insert"
            time.sleep(1.0)  # a few retries
        finally:
            proc.stop()
        assert progress.committed() == 0, "a batch that was never stored was committed"

        client.broken = False  # ClickHouse is back: a restart stores every report once
        before = set(threading.enumerate())
        proc = ProcessorThread(create_app(settings, client)).start()
        try:
            # generous: under load the restart once committed 30 of 40 within 30 s
            wait_until(lambda: progress.committed() >= len(reports), 180,
                       f"the restart to commit all {len(reports)} reports", every=0.3)
            started = [t for t in threading.enumerate() if t not in before]
            assert started and all(t.daemon for t in started), \
                [(t.name, t.daemon) for t in started]  # none may keep pytest alive at exit
        finally:
            assert proc.stop(), "the processor did not stop"
        assert progress.committed() == len(reports)
    finally:
        progress.close()
    rows = client.query("SELECT count(), uniqExact(event_id, seq) FROM v_batch_timings"
                        " WHERE job_id = {j:String}", parameters={"j": settings.job_id})
    assert rows.result_rows[0] == (10 * len(reports), 10 * len(reports))
