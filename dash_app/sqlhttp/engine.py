"""Read-only chDB sessions for the SQL endpoint: one per settings profile, readonly=1 each.

Each session is a ``chdb.connect`` handle on the stack's own chDB path (chDB
allows many handles in the process that owns a path) with the console's
limits (:func:`dash_app.sqlguard.readonly_settings`) set by ``SET`` and
``readonly=1`` last, so nothing can lift them afterwards: the engine itself
refuses writes and setting changes. A client that lowers a limit or asks for
an output setting (:func:`~dash_app.sqlhttp.protocol.sort_settings`) gets a
session made with those settings before readonly=1; sessions are pooled by
their settings (a few at most, least recently used closed first).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dash_app.sqlhttp.protocol import ClickHouseError

__all__ = ["Engine", "Result"]

log = logging.getLogger("shardsense.sql")

#: Databases a request may name (``system`` would make bare names reach its tables).
SERVED_DATABASES = frozenset({"default", "information_schema", "INFORMATION_SCHEMA"})
_CODE = re.compile(r"Code: (\d+)\.")
_TRAILER = re.compile(r"[.\s]*\((?:version [^)]*|([A-Z][A-Z0-9_]+))\)[.\s]*$")


@dataclass(frozen=True)
class Result:
    """A query's output bytes and what ClickHouse's X-ClickHouse-Summary reports."""

    data: bytes
    rows_read: int
    bytes_read: int
    elapsed_s: float


def engine_error(exc: BaseException) -> ClickHouseError:
    """A chDB exception as the ClickHouse error it carries (code 1000 when none).

    >>> e = engine_error(RuntimeError("Code: 164. DB::Exception: Code: 164. DB::Exception: "
    ...                               "No. (READONLY) (version 26.9.2.1). (READONLY)"))
    >>> e.code, e.name, e.message
    (164, 'READONLY', 'No')
    """
    text = str(exc).strip()
    code = _CODE.match(text)
    if not code:
        return ClickHouseError(1000, "POCO_EXCEPTION", text or type(exc).__name__)
    message, name = text.rsplit("DB::Exception: ", 1)[-1], "UNKNOWN_EXCEPTION"
    while trailer := _TRAILER.search(message):
        name = trailer.group(1) or name
        message = message[: trailer.start()]
    return ClickHouseError(int(code.group(1)), name, message.strip())


class _Session:
    """One read-only chDB handle (callers hold the pool's checkout, so one query at a time)."""

    def __init__(self, path: str, settings: Mapping[str, Any]) -> None:
        import chdb

        self.conn = chdb.connect(path)
        self.database = "default"
        try:
            for name, value in settings.items():
                self.conn.query(f"SET {name} = {_literal(value)}", "TabSeparated")
            mode = self.conn.query("SELECT getSetting('readonly')", "TabSeparated").bytes()
        except Exception:
            self.conn.close()
            raise
        if mode.strip() in (b"", b"0"):
            self.conn.close()
            raise RuntimeError("the SQL endpoint's session is not read-only; it stays off")

    def run(self, sql: str, fmt: str, params: Mapping[str, str], database: str) -> Result:
        if database != self.database:
            self.conn.query(f"USE `{database}`", "TabSeparated")
            self.database = database
        started = time.perf_counter()
        result = self.conn.query(sql, fmt, params=dict(params))
        return Result(result.bytes() or b"", int(result.rows_read()), int(result.bytes_read()),
                      time.perf_counter() - started)

    def close(self) -> None:
        self.conn.close()


def _literal(value: Any) -> str:
    """A setting value as SQL: numbers bare, anything else a quoted string."""
    text = str(value)
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    """Read-only sessions on the chDB at ``path`` with ``base`` settings (readonly last).

    ``max_sessions`` bounds the open handles (queries beyond it wait their turn).
    """

    def __init__(self, path: str, base: Mapping[str, Any], *, max_sessions: int = 4) -> None:
        if list(base)[-1:] != ["readonly"]:
            raise ValueError("base: readonly must be the last setting (nothing applies after it)")
        self.path = os.path.realpath(path)
        self.base = dict(base)
        self.max_sessions = max_sessions
        self._idle: OrderedDict[tuple[tuple[str, str], ...], list[_Session]] = OrderedDict()
        self._open = 0
        self._cond = threading.Condition()
        self._closed = False
        self._open = 1
        self._give_back((), _Session(self.path, self.base))
        self.settings = self._table("SELECT name, value FROM system.settings")
        info = self._table("SELECT 'version', version() UNION ALL SELECT 'timezone', timezone() "
                           "UNION ALL SELECT 'display_name', displayName()")
        self.version, self.timezone = info["version"], info["timezone"]
        self.display_name = info["display_name"]

    def _table(self, sql: str) -> dict[str, str]:
        result = self.run(sql, "TabSeparated", {}, "default", {})
        rows = (line.split("\t", 1) for line in result.data.decode().splitlines())
        return {name: value for name, value in rows}

    def run(self, sql: str, fmt: str, params: Mapping[str, str], database: str,
            profile: Mapping[str, str]) -> Result:
        """Run one checked statement in a session with ``profile``'s extra settings."""
        if database not in SERVED_DATABASES:
            raise ClickHouseError(497, "ACCESS_DENIED", f"database {database!r} is not served "
                                  f"here; use one of {', '.join(sorted(SERVED_DATABASES))}")
        with self._checkout(profile) as session:
            try:
                return session.run(sql, fmt, params, database)
            except Exception as exc:
                raise engine_error(exc) from None

    @contextmanager
    def _checkout(self, profile: Mapping[str, str]) -> Iterator[_Session]:
        key = tuple(sorted(profile.items()))
        session = self._take(key)
        if session is None:
            try:
                extra = {k: v for k, v in profile.items() if k not in self.base}
                session = _Session(self.path, {**extra, **{k: profile.get(k, v)
                                                           for k, v in self.base.items()}})
            except Exception as exc:
                with self._cond:
                    self._open -= 1
                    self._cond.notify()
                raise engine_error(exc) from None
        try:
            yield session
        finally:
            self._give_back(key, session)

    def _take(self, key: tuple[tuple[str, str], ...]) -> _Session | None:
        """An idle session with ``key``, or None after reserving room for a new one."""
        with self._cond:
            while True:
                if self._closed:
                    raise ClickHouseError(210, "NETWORK_ERROR", "the SQL endpoint is stopping")
                idle = self._idle.get(key)
                if idle:
                    self._idle.move_to_end(key)
                    return idle.pop()
                if self._open < self.max_sessions:
                    self._open += 1
                    return None
                if not self._evict_one():
                    self._cond.wait(timeout=1.0)

    def _evict_one(self) -> bool:
        """Close the least recently used idle session (call with the lock held)."""
        for key, sessions in self._idle.items():
            if sessions:
                sessions.pop().close()
                self._open -= 1
                if not sessions:
                    del self._idle[key]
                return True
        return False

    def _give_back(self, key: tuple[tuple[str, str], ...], session: _Session) -> None:
        with self._cond:
            if self._closed:
                session.close()
                self._open -= 1
            else:
                self._idle.setdefault(key, []).append(session)
                self._idle.move_to_end(key)
            self._cond.notify()

    def close(self) -> None:
        """Close every idle session; sessions in use close when their query ends."""
        with self._cond:
            self._closed = True
            for sessions in self._idle.values():
                for session in sessions:
                    session.close()
                    self._open -= 1
            self._idle.clear()
            self._cond.notify_all()
