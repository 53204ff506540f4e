"""Faust's Kafka transport with a configurable fetch wait.

Faust's aiokafka driver creates its consumer with ``fetch_max_wait_ms=1500``
and no setting to change it. A broker that long-polls properly answers a fetch
as soon as data arrives, so that number rarely matters; the embedded broker
(Tansu) answers an empty fetch only when the wait expires, so a report could
wait up to 1.5 s before the processor saw it. Measured here, raw
aiokafka against the embedded broker, 50 messages/s: consume latency p50 0.41 s
at 1500 ms, 0.036 s at 100 ms, 0.009 s at 20 ms.

The app's ``transport`` is replaced by :class:`Transport` (``create_app``,
setting ``processor_fetch_wait_ms``), which differs from Faust's in that number
and in how its fetch loop hands a message on (``_Consumer._drain_messages``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver

__all__ = ["Transport", "fetch_wait_ms", "stream_events"]

#: Faust's fetch loop gives the event loop a turn every this many messages.
YIELD_EVERY = 100


def fetch_wait_ms(consumer: Any) -> int:
    """The fetch wait an aiokafka consumer will use (read at its ``start()``)."""
    return int(consumer._fetch_max_wait_ms)


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        assert hasattr(consumer, "_fetch_max_wait_ms"), "aiokafka renamed the fetch wait"
        consumer._fetch_max_wait_ms = transport.fetch_wait_ms
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

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
        event = await queue.get()
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

    def __init__(self, *args: Any, fetch_wait_ms: int = 1500, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_wait_ms = fetch_wait_ms
