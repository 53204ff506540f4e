"""Loopback ports: is one free, find one, wait for one (the stack, tests and tools share them).

Services bind 127.0.0.1 by default, so every helper defaults to it.
"""

from __future__ import annotations

import contextlib
import socket
import time

__all__ = ["free_port", "port_is_free", "wait_for_port"]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (we try to bind it, then let go).

    SO_REUSEADDR as servers set it: connections in TIME_WAIT from a previous run
    do not make a port "taken", a listening socket still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now (tests and tools never hard-code one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> bool:
    """Poll until something accepts on ``host:port``; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False
