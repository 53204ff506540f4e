"""ClickHouse's HTTP interface, read-only, served from the process that owns the chDB path.

curl, clickhouse-connect and Grafana's ClickHouse data source query the
embedded stack's tables here (``http://127.0.0.1:<sql_port>``) while training
runs; the guard and the read-only session are the console's.
"""

from dash_app.sqlhttp.server import SqlServer, start_sql_server

__all__ = ["SqlServer", "start_sql_server"]
