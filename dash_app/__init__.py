"""The ShardSense web console (Dash): live stragglers, planner history, read-only SQL.

``create_app(settings, client)`` builds the app around a ClickHouse client;
``ConsoleServer`` serves it from a thread (the embedded stack runs it in the
process that owns chDB); ``main(settings)`` is ``shardsense console``.
Importing this package needs Dash and pandas, never torch.
"""

from dash_app.app import create_app
from dash_app.server import BasicAuth, ConsoleServer, main
from dash_app.sqlguard import SqlRefused, check_sql, run_readonly

__all__ = [
    "BasicAuth",
    "ConsoleServer",
    "SqlRefused",
    "check_sql",
    "create_app",
    "main",
    "run_readonly",
]
