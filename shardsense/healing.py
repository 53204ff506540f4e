"""A Kafka producer that replaces itself when it can no longer deliver.

Measured against the embedded broker (Tansu, memory storage): after a broker
restart an idempotent librdkafka producer never delivers again. Either its
in-flight batch fails with a fatal ``UNKNOWN_PRODUCER_ID`` (``produce`` then
raises ``_FATAL`` for ever), or, with nothing in flight at the restart, it
bumps its producer epoch locally ~10 times a second, the new broker answers
every produce with ``UNKNOWN_PRODUCER_ID`` and no callback fires until the
messages time out (``_MSG_TIMED_OUT`` 30 s later, the symptom seen in the
field). A plain producer recovers by itself; the idempotent one needs a new
instance and a new producer id. The restarted broker hands out producer ids from
1 again, so a not-yet-replaced instance may share its id with a new one; the
sequence errors and fencing that follow are healed the same way, until every
old instance is gone (seen in the faults tier: one or two heals per producer).

:class:`HealingProducer` wraps ``confluent_kafka.Producer`` for the services'
producers. It watches three signals: a fatal error (``error_cb``, or raised by
``produce``/``poll``), the producer epoch climbing without a delivery (from
librdkafka's statistics), and a stall (messages outstanding, the broker
answering requests, nothing delivered for ``stall_s``). On any of them it
purges the old instance, creates a new one from the same config and produces
the purged messages again, in order, with their original callbacks; only what
librdkafka itself gave up on (time-outs, queue full) reaches the callbacks as
an error. ``flush`` works in short slices, so a flush that meets a dead
producer heals it instead of blocking for its whole timeout.

Siblings: when one producer finds the broker's producer ids reset, every other
``HealingProducer`` of the process on the same bootstrap that has not delivered
since is replaced too, at its next ``produce``/``poll``/``flush``, instead of
each finding out alone. An idle one would otherwise send with its stale id, which
the restarted broker may have handed to another producer meanwhile (seen in the
faults tier: a prediction producer stalled 5 s with sequence errors while it kept
its old id).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

__all__ = ["DeliveryProbe", "HealingProducer", "stuck_reason"]

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[Any, Any], None]

#: Failures that mean "this producer instance is broken", not "this message is bad".
_BROKEN = frozenset({
    KafkaError._FATAL, KafkaError._FENCED, KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.INVALID_PRODUCER_ID_MAPPING, KafkaError.PRODUCER_FENCED,
})
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
#: Epoch bumps without a delivery that count as "the broker forgot our producer id".
EPOCH_BUMPS = 3
HEAL_BACKOFF_S = (1.0, 30.0)
#: Longest a heal waits for the old instance to hand back its purged messages.
PURGE_WAIT_S = 2.0
_LIVE: weakref.WeakSet[HealingProducer] = weakref.WeakSet()
SIBLING_REASON = "a producer beside it found the broker's producer ids reset"


@dataclass(frozen=True)
class DeliveryProbe:
    """What librdkafka's statistics say about one producer at one moment."""

    at: float
    delivered: int
    epoch: int = 0
    answered: int = 0
    outstanding: int = 0


def probe_from_stats(stats_json: str, at: float, delivered: int) -> DeliveryProbe:
    """A :class:`DeliveryProbe` from a ``stats_cb`` payload (tolerates missing fields)."""
    stats = json.loads(stats_json)
    brokers = stats.get("brokers", {}).values()
    return DeliveryProbe(
        at=at,
        delivered=delivered,
        epoch=int(stats.get("eos", {}).get("producer_epoch", 0) or 0),
        answered=sum(int(b.get("rx", 0)) for b in brokers if int(b.get("nodeid", -1)) >= 0),
        outstanding=int(stats.get("msg_cnt", 0)),
    )


def stuck_reason(base: DeliveryProbe, now: DeliveryProbe, stall_s: float) -> str | None:
    """Why the producer behind ``now`` must be replaced, or None.

    ``base`` is the probe taken when deliveries last progressed.

    >>> base = DeliveryProbe(at=0.0, delivered=10, epoch=0, answered=50, outstanding=0)
    >>> stuck_reason(base, DeliveryProbe(1.0, 10, epoch=4, answered=58, outstanding=9), 5.0)
    'producer epoch bumped 4 times without a delivery (the broker forgot our producer id)'
    >>> stuck_reason(base, DeliveryProbe(6.0, 10, epoch=0, answered=50, outstanding=9), 5.0)
    >>> stuck_reason(base, DeliveryProbe(6.0, 10, epoch=0, answered=61, outstanding=9), 5.0)
    'the broker answers but nothing was delivered for 6.0s'
    """
    if stall_s <= 0:
        raise ValueError(f"stall_s must be positive, got {stall_s}")
    if now.delivered != base.delivered:
        return None
    bumps = now.epoch - base.epoch
    if bumps >= EPOCH_BUMPS:
        return f"producer epoch bumped {bumps} times without a delivery " \
               "(the broker forgot our producer id)"
    waited = now.at - base.at
    if now.outstanding and now.answered != base.answered and waited >= stall_s:
        return f"the broker answers but nothing was delivered for {waited:.1f}s"
    return None


class HealingProducer:
    """``produce``/``poll``/``flush``/``len`` of a confluent ``Producer``, healing itself.

    ``config`` is a full librdkafka producer config (``shardsense.kafka.producer_config``);
    its ``error_cb`` still gets every error. Use it from one thread at a time for
    ``poll``/``flush``; ``produce`` may come from another.
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        what: str = "producer",
        stall_s: float = 5.0,
        stats_interval_ms: int = 250,
        factory: Callable[[dict[str, Any]], Any] = Producer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stall_s <= 0:
            raise ValueError(f"stall_s must be positive, got {stall_s}")
        self.what = what
        self.stall_s = stall_s
        self._user_error_cb = config.get("error_cb")
        self._config = {**config, "error_cb": self._on_error, "stats_cb": self._on_stats,
                        "statistics.interval.ms": stats_interval_ms}
        self._factory = factory
        self._clock = clock
        self._lock = threading.RLock()
        self._delivered = 0
        self._base = DeliveryProbe(clock(), 0)
        self._reason = ""
        self._healing = False
        self._resend: list[tuple[str, bytes | None, bytes | None, DeliveryCallback | None]] = []
        self._backoff = HEAL_BACKOFF_S[0]
        self._not_before = -1.0
        self._delivered_at_heal = -1
        self.counts = {"recreated": 0, "resent": 0}
        self.last_reason = ""
        self._bootstrap = str(config.get("bootstrap.servers", ""))
        self._last_ok = -math.inf  # when the current instance last delivered
        self._born = clock()  # when the current instance was made
        self._producer = factory(self._config)
        _LIVE.add(self)

    # ------------------------------------------------------------ Producer API

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                on_delivery: DeliveryCallback | None = None) -> None:
        """Like ``Producer.produce`` (raises ``BufferError`` when full); heals a fatal instance."""
        callback = partial(self._on_delivery, on_delivery)
        if self._reason == SIBLING_REASON:
            self._heal()  # before this message goes out with a stale producer id
        with self._lock:
            try:
                self._producer.produce(topic, value, key, on_delivery=callback)
                return
            except KafkaException as exc:
                if not _is_broken(exc):
                    raise
                self._flag(f"produce failed: {exc.args[0].str()}")
                self._heal(force=True)
                self._producer.produce(topic, value, key, on_delivery=callback)

    def poll(self, timeout: float = 0.0) -> int:
        """Serve callbacks (and statistics) for up to ``timeout`` s; heal if needed."""
        served = self._served(self._producer.poll, timeout)
        self._heal()
        return served

    def flush(self, timeout: float) -> int:
        """Deliver what is outstanding within ``timeout`` s, healing on the way; what is left."""
        deadline = self._clock() + max(0.0, timeout)
        while True:
            left = self._served(self._producer.flush, min(0.1, max(0.0, deadline - self._clock())))
            healed = self._heal()
            if (left == 0 and not healed) or self._clock() >= deadline:
                return len(self._producer)

    def purge(self) -> None:
        """Drop everything queued or in flight (their callbacks get ``_PURGE_*``)."""
        self._producer.purge()

    def __len__(self) -> int:
        return len(self._producer)

    # ------------------------------------------------------------ callbacks

    def _served(self, call: Callable[[float], int], timeout: float) -> int:
        try:
            return int(call(timeout))
        except KafkaException as exc:  # a fatal error surfaces here too
            if not _is_broken(exc):
                raise
            self._flag(f"fatal error: {exc.args[0].str()}")
            return 0

    def _on_delivery(self, callback: DeliveryCallback | None, err: Any, msg: Any) -> None:
        try:
            if err is None:
                self._delivered += 1
                self._last_ok = self._clock()
            elif (self._healing and err.code() in _PURGED) or err.code() in _BROKEN:
                if err.code() in _BROKEN:
                    self._flag(f"delivery failed: {err.str()}")
                self._resend.append((msg.topic(), msg.value(), msg.key(), callback))
                return
            if callback is not None:
                callback(err, msg)
        except Exception:  # a callback must never break librdkafka's poll
            log.exception("%s: delivery callback failed", self.what)

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self._flag(f"fatal error: {err.str()}")
        if self._user_error_cb is not None:
            self._user_error_cb(err)

    def _on_stats(self, stats_json: str) -> None:
        try:
            now = probe_from_stats(stats_json, self._clock(), self._delivered)
        except (ValueError, TypeError, AttributeError):
            return
        if now.delivered != self._base.delivered or not now.outstanding:
            self._base = now
            return
        reason = stuck_reason(self._base, now, self.stall_s)
        if reason:
            self._flag(reason)

    def _flag(self, reason: str) -> None:
        if not self._reason:
            self._reason = reason

    # ------------------------------------------------------------ healing

    def _heal(self, force: bool = False) -> bool:
        """Replace the producer if flagged (and not backing off); True if it did."""
        if not self._reason:
            return False
        now = self._clock()
        if not force and now < self._not_before:
            return False
        with self._lock:
            reason, self._reason = self._reason, ""
            last_ok, self._last_ok = self._last_ok, -math.inf
            old = self._producer
            self._healing = True
            try:
                old.purge()
                # poll(0) serves one batch of callbacks: serve them all (into _resend)
                until = time.monotonic() + PURGE_WAIT_S
                while len(old) and time.monotonic() < until:
                    old.poll(0.01)
            except Exception as exc:  # a fatal instance may refuse; nothing to save then
                log.debug("%s: purge of the old producer: %s", self.what, exc)
            finally:
                self._healing = False
            pending, self._resend = self._resend, []
            self._producer = self._factory(self._config)
            self._born = now
            self._base = DeliveryProbe(now, self._delivered)
            self._back_off(now)
            self.counts["recreated"] += 1
            self.last_reason = reason
            log.warning("%s: %s; recreated the producer (%d messages produced again)",
                        self.what, reason, len(pending))
            for topic, value, key, callback in pending:
                self._produce_again(topic, value, key, callback)
        if reason != SIBLING_REASON:
            self._warn_siblings(last_ok)
        return True

    def _warn_siblings(self, last_ok: float) -> None:
        """Flag this broker's other producers of the process with nothing newer than ours.

        An instance made or heard from after our last delivery may already hold a
        new producer id; it is left to its own checks.
        """
        for other in list(_LIVE):
            if (other is not self and other._bootstrap == self._bootstrap
                    and max(other._born, other._last_ok) <= last_ok and not other._reason):
                other._reason = SIBLING_REASON

    def _back_off(self, now: float) -> None:
        """Heal at most every ``backoff`` s; double it while heals bring no delivery."""
        lo, hi = HEAL_BACKOFF_S
        no_progress = self._delivered == self._delivered_at_heal
        self._backoff = min(hi, self._backoff * 2) if no_progress else lo
        self._delivered_at_heal = self._delivered
        self._not_before = now + self._backoff

    def _produce_again(self, topic: str, value: bytes | None, key: bytes | None,
                       callback: DeliveryCallback | None) -> None:
        try:
            self._producer.produce(topic, value, key,
                                   on_delivery=partial(self._on_delivery, callback))
            self.counts["resent"] += 1
        except (BufferError, KafkaException) as exc:
            if callback is not None:
                callback(KafkaError(KafkaError._QUEUE_FULL, f"not produced again: {exc}"), None)


def _is_broken(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and (err.fatal() or err.code() in _BROKEN)
