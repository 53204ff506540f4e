"""A processor stopped while its inserts keep failing must not commit the batch.

A stop while a batch is being stored must commit none of it (Faust's
``take_events`` once acked a batch in a ``finally`` and committed reports never
written). The agent acks a batch only after its store, and marks what it never
stored acked without the consumer's bookkeeping on the way out (see
``stream_processors.app.ingest_batches``), so nothing of it is committed and a
restart stores it all (real broker and chDB; the fault is injected on the client's
insert).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from shardsense.clickhouse import connect
from shardsense.settings import Settings
from stream_processors.app import ProcessorThread, create_app
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
        proc = ProcessorThread(create_app(settings, client)).start()
        try:
            deadline = time.monotonic() + 30
            while progress.committed() < len(reports) and time.monotonic() < deadline:
                time.sleep(0.3)
        finally:
            proc.stop()
        assert progress.committed() == len(reports)
    finally:
        progress.close()
    rows = client.query("SELECT count(), uniqExact(event_id, seq) FROM v_batch_timings"
                        " WHERE job_id = {j:String}", parameters={"j": settings.job_id})
    assert rows.result_rows[0] == (10 * len(reports), 10 * len(reports))
