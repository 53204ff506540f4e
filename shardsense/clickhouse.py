"""ClickHouse clients chosen by URL scheme: ``chdb://`` in-process, ``http(s)://`` server.

chDB lets only one process open a path, but many clients in that process, so
``connect`` hands out one shared client per chDB path and process.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shardsense.errors import ConfigError

__all__ = ["connect"]

_lock = threading.Lock()
_chdb_clients: dict[str, Any] = {}


def connect(url: str) -> Any:
    """A clickhouse-connect client for ``url`` (``chdb:///path`` or ``http(s)://...``).

    Raises :class:`ConfigError` for other schemes. With chDB, a second process on
    the same path fails with "Cannot lock file": route that process's work
    through the one that owns the path (see docs/ARCHITECTURE.md).
    """
    import clickhouse_connect

    parts = urlsplit(url)
    if parts.scheme == "chdb":
        path = str(Path(parts.path).absolute())
        with _lock:
            client = _chdb_clients.get(path)
            if client is None:
                if _chdb_clients:
                    (owned,) = _chdb_clients
                    raise ConfigError(
                        "SHARDSENSE_CLICKHOUSE_URL",
                        f"this process already runs chDB on {owned}; chDB allows one path "
                        f"per process, so {path} cannot be opened here",
                    )
                Path(path).mkdir(parents=True, exist_ok=True)
                client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
                _chdb_clients[path] = client
            return client
    if parts.scheme in ("http", "https"):
        return clickhouse_connect.get_client(dsn=url)
    raise ConfigError("SHARDSENSE_CLICKHOUSE_URL", f"unsupported scheme {parts.scheme!r}")
