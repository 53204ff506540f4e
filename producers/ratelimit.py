"""Rate-limited logging for Kafka clients: a dead broker must not flood the training log.

librdkafka retries an unreachable broker every few milliseconds and reports each failure;
these helpers let one record through per interval and say how many were hidden.
"""

from __future__ import annotations

import logging
import math
import threading
import time

__all__ = ["LOG_EVERY_S", "RateLimitFilter", "rate_limited_logger"]

#: At most one warning per this many seconds from each rate-limited source.
LOG_EVERY_S = 30.0


class RateLimitFilter(logging.Filter):
    """Let one record through per ``interval_s``; librdkafka retries a dead broker every few ms."""

    def __init__(self, interval_s: float = LOG_EVERY_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.suppressed = 0
        self._last = -math.inf
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval_s:
                self.suppressed += 1
                return False
            self._last, hidden, self.suppressed = now, self.suppressed, 0
        if hidden:
            record.msg = f"{record.msg} [{hidden} similar messages suppressed]"
        return True


def rate_limited_logger(name: str, interval_s: float = LOG_EVERY_S) -> logging.Logger:
    """A logger that emits at most one record per interval (for librdkafka logs/errors)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
        logger.addFilter(RateLimitFilter(interval_s))
    return logger
