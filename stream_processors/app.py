"""The Faust stream processor: thin wiring around :class:`~stream_processors.pipeline.Pipeline`.

One agent reads the timings topic in batches that follow the load
(``batching.Batcher``: what arrived while the previous batch was stored, or the
first message after ``processor_batch_linger_ms`` when idle); each batch goes to
the pipeline (route, store, hooks), which Faust never sees inside. Offsets are
acknowledged only after the pipeline stored the batch (at-least-once), so a
stop or a crash mid-batch commits nothing of it; ClickHouse's
ReplacingMergeTree removes replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust

from shardsense.events import DeadLetter, encode
from shardsense.settings import Settings
from stream_processors.batching import Batcher
from stream_processors.pipeline import Batch, Pipeline, ReportHook
from stream_processors.transport import Transport, stream_events

__all__ = ["ProcessorThread", "ReportHook", "consumer_group", "create_app", "ingest_batches",
           "run_worker"]

log = logging.getLogger(__name__)


def consumer_group(settings: Settings) -> str:
    """The processor's Kafka consumer group (Faust's app id): one per timings topic."""
    return f"shardsense-processor.{settings.topic_timings}"


def _faust_app(settings: Settings) -> faust.App:
    """The Faust app for ``settings``: loopback-safe, at-least-once, our fetch wait."""
    datadir = Path(settings.data_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        consumer_group(settings),
        broker=[f"kafka://{hp}" for hp in settings.bootstrap_servers.split(",")],
        broker_credentials=_faust_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        web_host="127.0.0.1",
        store="memory://",
        datadir=str(datadir),
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=max(settings.max_event_bytes + 4096, 1_000_000),
        consumer_max_fetch_size=max(settings.max_event_bytes * 4, 4_194_304),
    )
    # Before the first topic: topics reach the transport through the conductor.
    app.transport = Transport(app.conf.broker_consumer, app,
                              fetch_wait_ms=settings.processor_fetch_wait_ms,
                              log_interval_s=settings.kafka_log_interval_s)
    return app


def create_app(
    settings: Settings, client: Any, hooks: Sequence[ReportHook] = ()
) -> faust.App:
    """A Faust app wired to ``settings``' topics, writing through ``client``."""
    app = _faust_app(settings)
    timings = app.topic(settings.topic_timings, value_type=bytes, value_serializer="raw")
    dead_topic = app.topic(settings.topic_dead_letters, value_type=bytes, value_serializer="raw")

    async def send_dead(dead: Sequence[DeadLetter]) -> None:
        futures = [await dead_topic.send(key=d.job_id.encode(), value=encode(d)) for d in dead]
        await asyncio.gather(*futures)

    pipeline = Pipeline(settings, client, hooks, send_dead)
    app.shardsense_stats = pipeline.stats  # type: ignore[attr-defined]

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(_app: faust.App, revoked: set[Any], **_kw: Any) -> None:
        # job-keyed partitions: a revoked partition's jobs belong to another instance now
        mine = {tp.partition for tp in revoked if tp.topic == settings.topic_timings}
        jobs = pipeline.revoked(mine)
        if jobs:
            log.info("partitions %s revoked: forgot %d jobs", sorted(mine), len(jobs))

    @app.agent(timings, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        await ingest_batches(stream, app, pipeline, settings)

    return app


async def ingest_batches(stream: faust.StreamT, app: faust.App, pipeline: Pipeline,
                         settings: Settings) -> None:
    """The agent's loop: batches as they come, batch N+1 prepared while N is stored.

    Events come from the stream's channel (``transport.stream_events``), acked by
    nobody but this loop: a batch once stored, so a stop or crash mid-batch commits
    none of it (tests/integration/test_processor_stop.py, test_processor_restart.py).
    """
    batcher: Batcher[Any] = Batcher(settings.processor_batch_max,
                                    settings.processor_batch_linger_ms / 1000,
                                    settings.processor_batch_interval_ms / 1000)
    reader = asyncio.ensure_future(batcher.fill(stream_events(stream, app)))
    events: list[Any] = []
    storing: tuple[asyncio.Future[None], list[Any]] | None = None

    async def store_and_ack(batch: Batch, stored: list[Any]) -> None:
        await pipeline.store(batch)
        for e in stored:
            e.message.ack(app.consumer)

    try:
        while events := await batcher.take():
            batch = await pipeline.prepare(
                [(e.message.value, e.message.partition, e.message.offset) for e in events])
            if storing is not None:
                await storing[0]
            storing = (asyncio.ensure_future(store_and_ack(batch, events)), events)
            events = []
        if storing is not None:
            await storing[0]
    finally:
        reader.cancel()
        # Unstored messages (the batch being prepared, the one being stored, the
        # buffer) are marked acked without the consumer's bookkeeping: Faust's
        # shutdown stops waiting for them and their offsets stay uncommitted, so
        # they are replayed. (Leans on Faust's Message.acked: re-test on upgrades.)
        unstored = [*events, *batcher.drain()]
        if storing is not None and not _stored(storing[0]):
            storing[0].cancel()
            unstored += storing[1]
        for e in unstored:
            e.message.acked = True


def _stored(future: asyncio.Future[None]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _faust_credentials(settings: Settings) -> Any:
    """Translate librdkafka SASL/SSL pass-through options for aiokafka (Faust)."""
    opts = settings.kafka_options
    protocol = str(opts.get("security.protocol", "")).upper()
    if not protocol or protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if "SSL" in protocol:
        import ssl

        ssl_context = ssl.create_default_context(cafile=opts.get("ssl.ca.location"))
        if opts.get("ssl.certificate.location"):
            ssl_context.load_cert_chain(
                opts["ssl.certificate.location"], opts.get("ssl.key.location"),
                opts.get("ssl.key.password"),
            )
    if "SASL" in protocol:
        return faust.SASLCredentials(
            username=opts.get("sasl.username"),
            password=opts.get("sasl.password"),
            mechanism=opts.get("sasl.mechanism", "PLAIN"),
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context)


def run_worker(app: faust.App, log_level: str = "INFO") -> int:
    """Run the Faust worker in this thread until SIGINT/SIGTERM; returns an exit code.

    Must run in the main thread (Faust installs signal handlers).
    """
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = faust.Worker(app, loglevel=log_level, override_logging=False, quiet=True)
    started = time.monotonic()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
        log.info("processor stopped after %.1fs (exit %s)", time.monotonic() - started, code)
        return code
    return 0


class _QuietWorker(faust.Worker):
    """A worker that leaves signals alone, so it can run in a non-main thread."""

    def install_signal_handlers(self) -> None:
        pass


class ProcessorThread:
    """Run a processor app in a background thread (tests, benchmarks, the demo).

    ``start()`` returns once the worker is running; ``stop()`` stops it cleanly.
    """

    def __init__(self, app: faust.App, log_level: str = "WARNING") -> None:
        self.app = app
        self.log_level = log_level
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: faust.Worker | None = None
        self._thread: Any = None

    def start(self, timeout: float = 30.0) -> ProcessorThread:
        import threading

        ready = threading.Event()

        def _run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._worker = _QuietWorker(
                self.app, loglevel=self.log_level, override_logging=False, quiet=True,
                loop=self._loop,
            )
            self._loop.call_soon(ready.set)
            with contextlib.suppress(SystemExit):
                self._worker.execute_from_commandline()

        self._thread = threading.Thread(target=_run, name="faust-processor", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("processor thread did not start")
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the worker within about ``timeout`` seconds in all; whether it stopped.

        Its threads (this one and the consumer's) are daemons, so a worker that does
        not stop in time never keeps the process alive at exit.
        """
        if self._loop is None or self._worker is None or self._loop.is_closed():
            return True
        deadline = time.monotonic() + timeout
        fut = asyncio.run_coroutine_threadsafe(self._worker.stop(), self._loop)
        try:
            fut.result(timeout)
        except Exception as exc:  # already stopping, or it timed out
            log.debug("processor stop: %r", exc)
        self._thread.join(max(0.1, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("processor thread did not stop within %.0fs; left to die with the "
                        "process (a daemon)", timeout)
            return False
        return True
