"""Batch timings from a training rank to Kafka, without ever slowing the training loop.

``offer`` appends one tuple to a bounded deque (a few hundred ns, never blocks, never
raises). A daemon thread packs the queued timings into one column-wise
:class:`~shardsense.events.TimingReport` per Kafka message (the stream processor pays
~240 µs per message, not per timing) and produces them keyed by job id (``job_key``) with the
shared idempotent, lz4, murmur2 producer config, so a rank's reports stay in order.

Flush policy (:func:`next_report_in`): a timing leaves at once when the rank's last report
is at least ``flush_every_s`` old, else with the next report, which leaves
``flush_every_s`` after the last one. So a timing waits at most ``flush_every_s`` (100 ms
by default, ``SHARDSENSE_TELEMETRY_FLUSH_MS``) at any step rate, a slow rank sends each
timing alone and at once, and a fast rank's reports grow with its step rate (about
``rate x flush_every_s`` timings each, at most ``1 / flush_every_s`` messages per second).

The producer heals itself (:class:`~shardsense.healing.HealingProducer`): after a broker
restart it is recreated and what was queued is produced again. Whatever cannot be shipped
(queue full, librdkafka queue full, message timeout, invalid values) is dropped and
counted, and logged at most every few seconds: a dead broker costs training nothing but
lost telemetry, and bounded memory.

Create the sink in the training process, not in forked DataLoader workers: librdkafka's
threads do not survive ``fork``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import weakref
from collections import deque
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from producers.timingpack import pack_timings
from shardsense.errors import ConfigError
from shardsense.kafka import healing_producer
from shardsense.kafka_logs import LOG_EVERY_S
from shardsense.settings import Settings
from shardsense.topics import job_key

__all__ = ["KafkaTimingSink", "next_report_in"]

log = logging.getLogger(__name__)
_LIVE_SINKS: weakref.WeakSet[KafkaTimingSink] = weakref.WeakSet()
#: The sender thread wakes at least this often (librdkafka callbacks, healing).
TICK_S = 0.1


def _close_in_forked_child() -> None:
    """A forked child has the deque but no sender thread: its offers drop at once, counted."""
    for sink in list(_LIVE_SINKS):
        sink._closed = True


os.register_at_fork(after_in_child=_close_in_forked_child)


def next_report_in(
    now: float, queued: int, last_report_at: float, *, flush_every_s: float, max_per_report: int
) -> float | None:
    """Seconds until the next report should leave (0 = now); None with nothing queued.

    >>> next_report_in(10.0, 1, 9.0, flush_every_s=0.1, max_per_report=2000)  # idle rank
    0.0
    >>> round(next_report_in(10.0, 3, 9.96, flush_every_s=0.1, max_per_report=2000), 3)
    0.06
    >>> next_report_in(10.0, 2000, 9.96, flush_every_s=0.1, max_per_report=2000)  # full
    0.0
    """
    if flush_every_s <= 0 or max_per_report < 1:
        raise ValueError("flush_every_s and max_per_report must be positive")
    if queued <= 0:
        return None
    if queued >= max_per_report:
        return 0.0
    return max(0.0, last_report_at + flush_every_s - now)


class KafkaTimingSink:
    """A :class:`producers.seams.TimingSink` that ships timings to ``settings.topic_timings``."""

    def __init__(
        self,
        settings: Settings,
        worker_id: int,
        *,
        max_queue: int = 65536,
        flush_every_s: float | None = None,
        max_per_report: int = 2000,
        message_timeout_s: float = 30.0,
        max_buffered_kbytes: int = 32768,
    ) -> None:
        if flush_every_s is None:
            flush_every_s = settings.telemetry_flush_ms / 1000.0
        if max_queue < 1 or max_per_report < 1 or flush_every_s <= 0:
            raise ValueError("max_queue, max_per_report and flush_every_s must be positive")
        self._settings = settings
        self._worker_id = worker_id
        self._key = job_key(settings.job_id)
        self._host = socket.gethostname()[:255]
        self._max_queue = max_queue
        self._flush_every_s = flush_every_s
        self._max_per_report = max_per_report
        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._deadline = math.inf
        self._full_until = -math.inf
        self._last_report = -math.inf
        # Counters: _drop_full is written under _lock, the others only by the sender
        # thread (delivery callbacks run in its poll/flush), so no update is lost.
        self._drop_full = 0
        self._drop_kafka = 0
        self._drop_invalid = 0
        self._sent = 0
        self._messages = 0
        self._produced_rows = 0
        self.last_error = ""
        self._logged_drops = 0
        self._last_drop_log = -math.inf
        try:
            self._producer = healing_producer(
                settings, what=f"telemetry rank {worker_id}",
                **{
                    "linger.ms": 0,  # we pack ourselves; the policy above sets the pace
                    "message.timeout.ms": int(message_timeout_s * 1000),
                    "queue.buffering.max.messages": 1000,
                    "queue.buffering.max.kbytes": max_buffered_kbytes,
                },
            )
        except KafkaException as exc:
            raise ConfigError("SHARDSENSE_RDKAFKA_*", f"bad Kafka producer config: {exc}") from exc
        self._thread = threading.Thread(
            target=self._run, name=f"shardsense-telemetry-{worker_id}", daemon=True
        )
        self._thread.start()
        _LIVE_SINKS.add(self)

    # ------------------------------------------------------------ training thread

    def offer(
        self,
        epoch: int,
        step: int,
        samples: int,
        data_wait_s: float,
        compute_s: float,
        map_version: int,
        end_ts: float,
    ) -> None:
        """Queue one batch timing; never blocks, never raises (drops and counts when full)."""
        try:
            queue = self._queue
            if len(queue) < self._max_queue and not self._closed:
                idle = not queue
                queue.append((epoch, step, samples, data_wait_s, compute_s, map_version, end_ts))
                if idle:
                    self._wake.set()  # a lone timing may leave now
                return
            with self._lock:
                self._drop_full += 1
        except Exception:  # pragma: no cover - the training loop must never see it
            pass

    @property
    def dropped(self) -> int:
        """Timings given up on: queue full, Kafka failures/timeouts, invalid values."""
        return self._drop_full + self._drop_kafka + self._drop_invalid

    @property
    def sent(self) -> int:
        """Timings the broker acknowledged."""
        return self._sent

    def stats(self) -> dict[str, Any]:
        """Counters for logs, benchmarks and the console (a snapshot, not atomic)."""
        return {
            "worker_id": self._worker_id,
            "sent": self._sent,
            "messages": self._messages,
            "dropped": self.dropped,
            "dropped_queue_full": self._drop_full,
            "dropped_kafka": self._drop_kafka,
            "dropped_invalid": self._drop_invalid,
            "queued": len(self._queue),
            "in_flight": self._produced_rows - self._sent - self._drop_kafka,
            "producer_recreated": self._producer.counts["recreated"],
            "messages_resent": self._producer.counts["resent"],
            "last_error": self.last_error,
        }

    def close(self, timeout: float = 5.0) -> None:
        """Ship what is queued within ``timeout`` seconds, drop (and count) the rest."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._deadline = time.monotonic() + max(0.0, timeout - 0.1)
        self._stop.set()
        self._wake.set()
        self._thread.join(max(0.0, timeout))

    def __enter__(self) -> KafkaTimingSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ sender thread

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                due = next_report_in(
                    time.monotonic(), len(self._queue), self._last_report,
                    flush_every_s=self._flush_every_s, max_per_report=self._max_per_report,
                )
                if due is None or due > 0:
                    self._wake.wait(TICK_S if due is None else min(due, TICK_S))
                    self._wake.clear()
                else:
                    self._report()
                self._producer.poll(0)
                self._log_drops()
        except Exception as exc:  # keep counting even if something unexpected breaks
            log.exception("telemetry sender failed; remaining timings are dropped: %s", exc)
        finally:
            self._shutdown()

    def _report(self) -> None:
        """Produce one report of what is queued now (up to ``max_per_report`` timings)."""
        self._last_report = time.monotonic()
        self._drain(everything=False)

    def _drain(self, everything: bool) -> None:
        """Produce one report's worth, or everything queued when ``everything``."""
        queue, cap = self._queue, self._max_per_report
        while queue:
            rows = [queue.popleft() for _ in range(min(cap, len(queue)))]
            if time.monotonic() < self._full_until:  # don't pack what librdkafka refuses
                self._drop_kafka += len(rows)
            else:
                payloads, invalid = pack_timings(
                    self._settings.job_id, self._worker_id, rows, max_per_report=cap,
                    max_bytes=self._settings.max_event_bytes, host=self._host,
                )
                self._drop_invalid += invalid
                for payload, n in payloads:
                    self._produce(payload, n)
            if not everything:
                return

    def _produce(self, payload: bytes, n: int) -> None:
        try:
            self._producer.produce(
                self._settings.topic_timings, payload, self._key,
                on_delivery=partial(self._on_delivery, n),
            )
            self._produced_rows += n
        except BufferError:
            self._drop_kafka += n
            self._full_until = time.monotonic() + 1.0
            self.last_error = "librdkafka queue full (broker slow or unreachable)"
        except KafkaException as exc:
            self._drop_kafka += n
            self.last_error = str(exc)

    def _on_delivery(self, n: int, err: KafkaError | None, _msg: Message | None) -> None:
        if err is None:
            self._sent += n
            self._messages += 1
        else:
            self._drop_kafka += n
            self.last_error = err.str()

    def _log_drops(self) -> None:
        dropped = self.dropped
        now = time.monotonic()
        if dropped > self._logged_drops and now - self._last_drop_log >= LOG_EVERY_S:
            log.warning(
                "telemetry rank %d: %d timings dropped so far (+%d), %d sent; last error: %s",
                self._worker_id, dropped, dropped - self._logged_drops, self._sent,
                self.last_error or "-",
            )
            self._logged_drops, self._last_drop_log = dropped, now

    def _shutdown(self) -> None:
        """Final drain and bounded flush (the thread's last act, so counters stay single-writer)."""
        try:
            self._drain(everything=True)
            left = min(self._deadline - time.monotonic(), 5.0)  # 5 s if not closing
            self._producer.flush(max(0.0, left))
        except Exception as exc:  # pragma: no cover - best effort on the way out
            self.last_error = str(exc)
        try:
            self._producer.purge()
            self._producer.poll(0)  # serves the purged deliveries: counted as dropped
        except Exception as exc:  # pragma: no cover
            self.last_error = str(exc)
        with self._lock:
            self._drop_full += len(self._queue)
            self._queue.clear()
        self._last_drop_log = -math.inf
        self._log_drops()
