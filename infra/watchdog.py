"""The stack's Kafka side kept whole while ``shardsense up`` runs.

Two faults leave the running stack without a usable broker, and nothing else in
the stack would notice:

* the embedded broker process dies (crash, OOM kill, ``kill -9``): the watchdog
  starts it again on the same port, so every client (trainers included) finds it
  where it was, and re-creates the topics;
* the broker forgets its topics (the embedded one keeps them in memory, so any
  restart, also one made outside the stack, does): missing topics are created
  again with the deployment's shapes. Producers never auto-create topics
  (``shardsense.kafka``), so nothing else creates them with wrong ones.

Why restart rather than exit: ``up`` is the broker's only owner, its clients
(trainers, processor, planner) all heal from a broker restart by themselves,
and ClickHouse keeps the loop's state; exiting would turn one dead child into a
dead stack. A broker that keeps dying is not restarted for ever: after
``MAX_RESTARTS`` within ``WINDOW_S`` the watchdog gives up (``on_give_up``; ``up``
then stops with an error), with a growing pause between attempts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from infra.broker import EmbeddedBroker
from shardsense.kafka import admin_config, create_topics
from shardsense.settings import Settings

__all__ = ["MAX_RESTARTS", "WINDOW_S", "BrokerWatchdog", "restart_delay"]

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
WINDOW_S = 60.0


def restart_delay(recent: int) -> float:
    """Pause before the next broker restart, given restarts in the window so far.

    >>> [restart_delay(n) for n in range(5)]
    [0.0, 0.5, 1.0, 2.0, 4.0]
    """
    if recent < 0:
        raise ValueError(f"recent must be >= 0, got {recent}")
    return 0.0 if recent == 0 else min(30.0, 0.5 * 2 ** (recent - 1))


class BrokerWatchdog:
    """Checks every ``every_s``: broker alive (if embedded), topics present."""

    def __init__(
        self,
        settings: Settings,
        broker: EmbeddedBroker | None,
        *,
        every_s: float = 0.5,
        on_restart: Callable[[], None] | None = None,
        on_give_up: Callable[[], None] | None = None,
    ) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s must be positive, got {every_s}")
        self.settings = settings
        self.broker = broker
        self.every_s = every_s
        self.on_restart = on_restart
        self.on_give_up = on_give_up
        self.stats = {"broker_restarts": 0, "topics_recreated": 0}
        self._restarts: deque[float] = deque()
        self._admin: Any = None
        self._gave_up = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-watchdog", daemon=True)

    def start(self) -> BrokerWatchdog:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.check()
            except Exception:  # the watchdog itself must not die
                log.exception("broker watchdog check failed")

    def check(self) -> None:
        """One round: restart a dead embedded broker, re-create missing topics."""
        if self._gave_up:
            return
        dead = self.broker is not None and not self.broker.alive
        if dead and not self._restart_broker():
            return
        self._ensure_topics()

    def _restart_broker(self) -> bool:
        assert self.broker is not None
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > WINDOW_S:
            self._restarts.popleft()
        if len(self._restarts) >= MAX_RESTARTS:
            self._gave_up = True
            log.error("the embedded broker died %d times within %.0fs; not restarting it again",
                      len(self._restarts) + 1, WINDOW_S)
            if self.on_give_up is not None:
                self.on_give_up()
            return False
        code = self.broker.exit_code
        delay = restart_delay(len(self._restarts))
        log.warning("the embedded broker exited (code %s); restarting it on %s%s", code,
                    self.broker.bootstrap, f" in {delay:.1f}s" if delay else "")
        if self._stop.wait(delay):
            return False
        self._restarts.append(time.monotonic())
        try:
            self.broker.stop()  # reap, drop its pid file
            self.broker.start()
        except Exception as exc:
            log.error("restarting the embedded broker failed: %s", exc)
            return False
        self.stats["broker_restarts"] += 1
        self._admin = None  # a new broker: ask it afresh
        if self.on_restart is not None:
            self.on_restart()
        return True

    def _ensure_topics(self) -> None:
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(admin_config(self.settings, what="stack watchdog"))
        try:
            existing = set(self._admin.list_topics(timeout=2.0).topics)
        except Exception as exc:
            log.debug("watchdog: broker did not answer: %s", exc)
            self._admin.poll(0)
            return
        missing = [t.name for t in self.settings.topics() if t.name not in existing]
        if not missing:
            return
        log.warning("Kafka topics %s are missing (the broker restarted or forgot them); "
                    "creating them again", missing)
        created = create_topics(self.settings, timeout=5.0)
        self.stats["topics_recreated"] += len(created)
