"""Faust's Kafka transport with a configurable fetch wait.

Faust's aiokafka driver creates its consumer with ``fetch_max_wait_ms=1500``
and no setting to change it. A broker that long-polls properly answers a fetch
as soon as data arrives, so that number rarely matters; the embedded broker
(Tansu) answers an empty fetch only when the wait expires, so a report could
wait up to 1.5 s before the processor saw it. Measured here, raw
aiokafka against the embedded broker, 50 messages/s: consume latency p50 0.41 s
at 1500 ms, 0.036 s at 100 ms, 0.009 s at 20 ms.

The app's ``transport`` is replaced by :class:`Transport` (``create_app``,
setting ``processor_fetch_wait_ms``), which differs from Faust's in that
number, in how its fetch loop hands a message on (``_Consumer._drain_messages``),
and in its logs: aiokafka logs every reconnect attempt against a dead
broker (~40 lines a second, measured), so its loggers are rate-limited to one
line per ``log_interval_s`` each (``kafka_log_interval_s``).

Measured against the embedded broker (issue 12): the Faust consumer recovers by
itself from a broker restart that forgets the topics (the group is joined again,
offsets reset to the earliest of the new topics; rows flowed again ~3 s after the
broker and topics were back) and from a 10 s SIGSTOP (~0.2 s after SIGCONT).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast
from weakref import WeakSet

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from mode.threads import WorkerThread

from shardsense.kafka_logs import LOG_EVERY_S, limit_logger

__all__ = ["AIOKAFKA_LOGGERS", "Transport", "fetch_wait_ms", "stream_events"]

log = logging.getLogger(__name__)

#: aiokafka's loggers that report connection trouble (each rate-limited on its own).
AIOKAFKA_LOGGERS = (
    "aiokafka", "aiokafka.conn", "aiokafka.cluster", "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator", "aiokafka.consumer.consumer",
    "aiokafka.producer.sender", "aiokafka.producer.producer",
)

#: Faust's fetch loop gives the event loop a turn every this many messages.
YIELD_EVERY = 100


def fetch_wait_ms(consumer: Any) -> int:
    """The fetch wait an aiokafka consumer will use (read at its ``start()``)."""
    return int(consumer._fetch_max_wait_ms)


class _DaemonWorkerThread(WorkerThread):
    """mode runs the aiokafka consumer in a non-daemon thread: after a stop that timed out
    (a broker that does not answer) it kept the interpreter alive at exit (pytest hung).
    The processor's own stop bounds its waits; this thread never outlives the process."""

    def __init__(self, service: Any, **kwargs: Any) -> None:
        super().__init__(service, **kwargs)
        self.daemon = True


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    Worker = _DaemonWorkerThread

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        assert hasattr(consumer, "_fetch_max_wait_ms"), "aiokafka renamed the fetch wait"
        consumer._fetch_max_wait_ms = transport.fetch_wait_ms
        return consumer

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """After an assignment: committed offsets, and the start where there are none.

        aiokafka seeks only partitions that have a committed offset and leaves the
        others at its in-memory fetch position. After a broker restart that forgot
        the group's offsets, that position is past everything Faust had fetched but
        not yet processed when the group re-joined, which was dropped with the old
        assignment: measured, ~6 s of reports lost while a batch was slow. With no
        committed offset a partition is read from its start, as
        ``auto_offset_reset="earliest"`` promises; replays are deduplicated at rest.
        """
        committed: Mapping[Any, int] = await super().seek_to_committed()
        fresh = [tp for tp, offset in committed.items() if offset is None]
        if fresh:
            cast("_Consumer", self.consumer).start_afresh(fresh)
            consumer = self._ensure_consumer()
            await self.call_thread(consumer.seek_to_beginning, *fresh)
            log.info("no committed offsets for %s: reading them from the start", fresh)
        return committed


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        """Remember what was in flight when partitions went away (see ``start_afresh``)."""
        self._in_flight: WeakSet[Any] = WeakSet(
            m for m in list(self._unacked_messages) if m.tp in revoked
        )
        await super().on_partitions_revoked(revoked)

    def start_afresh(self, tps: list[Any]) -> None:
        """Partitions without committed offsets start over: older acks must not commit.

        Faust records an ack that comes late (a batch slow in its hooks while the
        group re-joins) and commits it under the new assignment. After a broker
        restart that committed the old log's offsets (60, 120) on the new, empty one,
        and the next re-join skipped that many new reports (measured). So when a
        partition has no committed offset (a broker that forgot the group, or a new
        group), acks of messages fetched before are dropped and what was acked but
        not yet committed is forgotten: the partition is read again from its start.
        Where committed offsets exist nothing changes (acks during a revocation of
        the same log still count).
        """
        fresh = set(tps)
        self._stale: WeakSet[Any] = WeakSet(
            m for m in list(getattr(self, "_in_flight", ())) if m.tp in fresh
        )
        for tp in fresh:
            self._acked.pop(tp, None)
            self._acked_index.pop(tp, None)
            self._committed_offset.pop(tp, None)

    def ack(self, message: Any) -> bool:
        if message in getattr(self, "_stale", ()):
            message.acked = True  # of another life of the log: read again, never committed
            return False
        return bool(super().ack(message))
    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - in a thread
        """Faust's fetch loop, delivering a message with a plain ``await``.

        Adapted from faust-streaming's ``Consumer._drain_messages`` (BSD-3-Clause),
        which wraps every delivery in ``wait_first(callback, suspend_flow.wait())``:
        four tasks and an ``asyncio.wait`` per message, ~40 of the ~60 µs of CPU a
        message cost here. Here a message is not delivered while the flow is
        suspended (a rebalance; it is fetched again from the committed offset, as
        Faust does), and otherwise awaited directly; a delivery that a rebalance
        overtakes completes with the old generation, which the stream skips.
        """
        deliver = _delivery(self)
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    await deliver(records)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


def _delivery(consumer: Any) -> Any:
    """One ``getmany`` batch's deliveries (the inner loop of ``_drain_messages``)."""
    callback = consumer.callback
    read_offset = consumer._read_offset
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    suspended = consumer.suspend_flow.is_set

    async def deliver(records: Any) -> None:
        since_yield = 0
        async for tp, message in records:
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            r_offset = read_offset[tp]
            if r_offset is not None and offset < r_offset:
                continue  # Faust drops a message before the read offset too
            if (offset - (r_offset or 0)) > 1 and r_offset and acks_enabled_for(message.topic):
                await consumer._add_gap(tp, r_offset + 1, offset)
            if consumer._commit_every is not None and consumer._n_acked >= consumer._commit_every:
                consumer._n_acked = 0
                await consumer.commit()
            if not suspended():
                await callback(message)
            read_offset[tp] = offset

    return deliver


async def stream_events(stream: Any, app: Any) -> AsyncIterator[Any]:
    """An agent's events, read from its channel's queue, acked by nobody.

    Faust's ``Stream`` iteration costs ~33 µs a message here (a loop turn, sensors,
    the current-event context per message); the processor needs only what it does
    for correctness, done here: a message a rebalance overtook (flow suspended, or
    fetched in an older consumer generation) is skipped, as the stream skips it (it
    is fetched again from the committed offset), and every message is tracked with
    the consumer (``track_message``: shutdown knows it is in flight).
    """
    queue = stream.channel.queue
    consumer = app.consumer
    flow = app.flow_control
    while True:
        try:
            event = await queue.get()
        except StopAsyncIteration:  # Faust closes the channel on its way out: the stream ends
            return
        message = event.message
        if not flow.is_active() or message.generation_id != app.consumer_generation_id:
            continue
        if not message.tracked:
            message.tracked = True
            consumer.track_message(message)
        yield event


class Transport(driver.Transport):
    """``kafka://`` as Faust does it, with the fetch wait ``fetch_wait_ms``.

    ``Transport(app.conf.broker_consumer, app, fetch_wait_ms=100)``
    """

    Consumer = _Consumer

    def __init__(self, *args: Any, fetch_wait_ms: int = 1500,
                 log_interval_s: float = LOG_EVERY_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_wait_ms = fetch_wait_ms
        for name in AIOKAFKA_LOGGERS:
            limit_logger(name, log_interval_s)
