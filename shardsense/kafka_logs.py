"""Kafka client logs through Python logging, one line per interval per client.

librdkafka retries an unreachable broker every few milliseconds and reports each
failure twice (its log callback and the error callback): an AdminClient waiting
30 s for a dead broker printed ~570 lines to stderr. Every client the project
creates gets a :class:`ClientLog` as ``logger`` and ``error_cb`` instead
(:func:`shardsense.kafka.client_config`): the first line of a burst goes
through, the next ones are counted and named in the first line after the
interval ("[41 similar suppressed]"). Fatal errors always go through.

aiokafka (Faust) logs through its own loggers; :func:`limit_logger` puts the
same rate limit on them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

__all__ = ["LOG_EVERY_S", "ClientLog", "RateLimitFilter", "limit_logger"]

#: Default interval: a dead broker costs one line per client every this many seconds.
LOG_EVERY_S = 5.0

#: syslog levels librdkafka passes to ``logger.log`` -> Python levels.
_SYSLOG = {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL, 3: logging.ERROR,
           4: logging.WARNING, 5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}


class _Gate:
    """One pass per interval; counts what it held back (thread-safe)."""

    def __init__(self, interval_s: float) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.interval_s = interval_s
        self.suppressed = 0
        self.passed = 0
        self._last = -math.inf
        self._lock = threading.Lock()

    def open(self, now: float | None = None) -> int | None:
        """None if held back, else how many were held back since the last pass."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if now - self._last < self.interval_s:
                self.suppressed += 1
                return None
            self._last, hidden, self.suppressed = now, self.suppressed, 0
            self.passed += 1
        return hidden


def _suffix(hidden: int) -> str:
    return f" [{hidden} similar suppressed]" if hidden else ""


class RateLimitFilter(logging.Filter):
    """A logging filter that lets one record through per ``interval_s``."""

    def __init__(self, interval_s: float = LOG_EVERY_S) -> None:
        super().__init__()
        self._gate = _Gate(interval_s)

    @property
    def suppressed(self) -> int:
        return self._gate.suppressed

    def filter(self, record: logging.LogRecord) -> bool:
        hidden = self._gate.open()
        if hidden is None:
            return False
        if hidden:
            record.msg = f"{record.getMessage()}{_suffix(hidden)}"
            record.args = None
        return True


def limit_logger(name: str, interval_s: float = LOG_EVERY_S) -> logging.Logger:
    """Rate-limit a library's logger (once per name; aiokafka logs every retry)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
        logger.addFilter(RateLimitFilter(interval_s))
    return logger


class ClientLog:
    """librdkafka ``logger`` + ``error_cb`` of one client, rate-limited per client.

    >>> log = ClientLog("doc", interval_s=60)
    >>> for _ in range(100):
    ...     log.log(3, "%s [%s] %s", "FAIL", "rdkafka#producer-1", "Connect failed")
    >>> log.passed, log.suppressed
    (1, 99)
    """

    def __init__(self, what: str, interval_s: float = LOG_EVERY_S,
                 logger: logging.Logger | None = None) -> None:
        self.what = what
        self.logger = logger or logging.getLogger("shardsense.kafka.client")
        self.last_error = ""
        self._gate = _Gate(interval_s)

    @property
    def passed(self) -> int:
        return self._gate.passed

    @property
    def suppressed(self) -> int:
        return self._gate.suppressed

    def log(self, level: int, msg: str, *args: Any) -> None:
        """confluent-kafka calls ``logger.log(syslog_level, "%s [%s] %s", fac, name, text)``."""
        text = msg % args if args else msg
        self._emit(_SYSLOG.get(level, logging.WARNING) if level < 8 else level, text)

    def error(self, err: Any) -> None:
        """The ``error_cb``: remembered for stats, logged rate-limited (fatal ones always)."""
        text = err.str() if hasattr(err, "str") else str(err)
        self.last_error = text
        fatal = bool(getattr(err, "fatal", lambda: False)())
        if fatal:
            self.logger.error("%s: fatal Kafka error: %s", self.what, text)
        else:
            self._emit(logging.WARNING, text)

    def _emit(self, level: int, text: str) -> None:
        if not self.logger.isEnabledFor(level):
            return
        hidden = self._gate.open()
        if hidden is not None:
            self.logger.log(level, "%s: %s%s", self.what, text, _suffix(hidden))
