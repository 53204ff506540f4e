"""Apply ``shardsense/schema/*.sql`` in name order, once each, on chDB or a server.

Every statement is idempotent (``IF NOT EXISTS``); applied files are recorded
with a checksum in ``schema_migrations`` so that a file edited after it was
applied is reported instead of silently diverging.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from shardsense.errors import MigrationError

__all__ = ["SCHEMA_DIR", "apply_schema", "split_statements"]

#: The schema files; every service applies them at start-up (idempotent).
SCHEMA_DIR = Path(__file__).parent

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(name String, checksum String, applied_at DateTime DEFAULT now())
ENGINE = ReplacingMergeTree ORDER BY name
"""


def split_statements(sql: str) -> list[str]:
    """Statements of a schema file: ``--`` comments dropped, split on ``;`` at line end.

    >>> split_statements("-- c\\nCREATE TABLE a (x Int8) ENGINE=Memory;\\nSELECT 1;")
    ['CREATE TABLE a (x Int8) ENGINE=Memory', 'SELECT 1']
    """
    lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
    parts = "\n".join(lines).split(";\n")
    return [p.strip().rstrip(";").strip() for p in parts if p.strip().rstrip(";").strip()]


def apply_schema(client: Any, schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """Apply pending files; return the names applied now (empty when up to date)."""
    client.command(_LEDGER)
    done = dict(client.query("SELECT name, checksum FROM schema_migrations FINAL").result_rows)
    applied = []
    for path in sorted(schema_dir.glob("*.sql")):
        sql = path.read_text()
        checksum = hashlib.sha256(sql.encode()).hexdigest()
        if path.name in done:
            if done[path.name] != checksum:
                raise MigrationError(
                    f"{path.name} changed after it was applied; add a new numbered file instead"
                )
            continue
        for statement in split_statements(sql):
            try:
                client.command(statement)
            except Exception as exc:
                raise MigrationError(f"{path.name}: {exc}") from exc
        client.insert(
            "schema_migrations", [[path.name, checksum]], column_names=["name", "checksum"]
        )
        applied.append(path.name)
    return applied
