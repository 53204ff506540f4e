"""The console's Dash app: a shell (top bar, job selector, routing) around three pages.

``create_app`` takes the ClickHouse client it should read through, so that in
the embedded stack the console runs inside the process that owns the chDB path
(and shares its client), while against a ClickHouse server it connects itself.
Routing is a plain ``dcc.Location`` callback rather than Dash Pages, whose
registry is global to the process and would leak between apps (tests build many).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import dash
from dash import Input, Output, State, dcc, html

from dash_app import queries
from dash_app.components import CSS
from dash_app.sqlguard import explain_error, readonly_client
from shardsense.settings import Settings

__all__ = ["HEALTH_PATH", "Console", "create_app"]

log = logging.getLogger("shardsense.console")

PAGES = {"/": "Live", "/planner": "Planner", "/sql": "SQL"}
#: Liveness probe ("OK"); answered without basic auth so container health checks work.
HEALTH_PATH = "/healthz"


@dataclass
class Console:
    """What every page needs: settings, the query handles and the straggler threshold.

    ``sql_client`` runs user SQL in a read-only session of its own; it is made
    on first use, so pages that never run SQL never open it.
    """

    settings: Settings
    db: queries.Db
    threshold: float = queries.STRAGGLER_SLOWDOWN
    sql_client: Any = None
    sql_lock: threading.Lock = field(default_factory=threading.Lock)
    _last_error: tuple[str, float] = field(default=("", 0.0), init=False, repr=False)
    _owns_sql_client: bool = field(default=False, init=False, repr=False)

    def readonly_client(self) -> Any:
        """The SQL page's client (call with ``sql_lock`` held)."""
        if self.sql_client is None:
            s = self.settings
            self.sql_client = readonly_client(
                s.resolved_clickhouse_url, timeout_s=s.console_sql_timeout_s,
                max_rows=s.console_sql_max_rows,
            )
            self._owns_sql_client = True
        return self.sql_client

    def close(self) -> None:
        """Close the SQL session it opened (clients passed in belong to their owners)."""
        with self.sql_lock:
            if self._owns_sql_client:
                self.sql_client.close()
                self.sql_client, self._owns_sql_client = None, False

    def on_error(self, exc: Exception) -> None:
        """Any callback failure: log it, show one line in the banner, never a traceback.

        The same failure repeats on every refresh, so it is logged once a minute.
        """
        text, now = str(exc), time.monotonic()
        if text != self._last_error[0] or now - self._last_error[1] > 60:
            self._last_error = (text, now)
            log.warning("console callback failed: %s", exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
        message = f"A panel could not load. {explain_error(exc)}"
        dash.set_props("console-error", {"children": message})


_INDEX = """<!DOCTYPE html>
<html>
  <head>
    {%metas%}
    <title>{%title%}</title>
    {%favicon%}
    {%css%}
    <style>""" + CSS + """</style>
  </head>
  <body>
    {%app_entry%}
    <footer>{%config%}{%scripts%}{%renderer%}</footer>
  </body>
</html>"""


def _shell(console: Console) -> html.Div:
    job = console.settings.job_id
    nav = [dcc.Link(name, href=path, id=f"nav-{name.lower()}") for path, name in PAGES.items()]
    return html.Div(
        [
            dcc.Location(id="url"),
            dcc.Interval(id="jobs-interval", interval=10_000),
            html.Div(
                [
                    html.Span("ShardSense", className="brand"),
                    *nav,
                    html.Div(
                        [
                            html.Span("job"),
                            dcc.Dropdown(
                                id="job", value=job, options=[job], clearable=False,
                                searchable=True, style={"minWidth": "260px"},
                            ),
                        ],
                        className="job",
                    ),
                ],
                className="topbar",
            ),
            html.Div(id="console-error", className="console-error"),
            html.Div(id="page", className="page"),
        ]
    )


def create_app(
    settings: Settings | None = None,
    client: Any = None,
    *,
    sql_client: Any = None,
    threshold: float | None = None,
) -> dash.Dash:
    """The console app reading through ``client`` (default: connect to the settings' URL).

    ``sql_client`` (default: a :func:`~dash_app.sqlguard.readonly_client` on the
    same URL, made on first use) runs the SQL page's queries; never pass the
    stack's shared writer client there. ``threshold`` (slowdown that makes a
    straggler) defaults to the processor's ``processor_straggler_pct``, so the
    console and the processor agree on who is one.
    """
    from dash_app.pages import live, planner, sql

    settings = settings or Settings.from_env()
    console = _console(settings, client, sql_client, threshold)
    app = dash.Dash(
        __name__,
        title="ShardSense console",
        use_pages=False,
        suppress_callback_exceptions=True,
        update_title="",
        on_error=console.on_error,
        health_endpoint=HEALTH_PATH.lstrip("/"),
    )
    app.index_string = _INDEX
    app.console = console  # type: ignore[attr-defined]  # ConsoleServer.stop closes it
    app.layout = _shell(console)
    renderers = {"/": live.layout, "/planner": planner.layout, "/sql": sql.layout}
    app.validation_layout = html.Div(  # type: ignore[assignment]
        [_shell(console), *(render(console, settings.job_id) for render in renderers.values())]
    )
    _register_shell(app, console, renderers)
    live.register(app, console)
    planner.register(app, console)
    sql.register(app, console)
    if settings.console_auth:
        from dash_app.server import BasicAuth

        app.server.wsgi_app = BasicAuth(
            app.server.wsgi_app, settings.console_auth, open_paths=(HEALTH_PATH,)
        )
    return app


def _console(
    settings: Settings, client: Any, sql_client: Any, threshold: float | None
) -> Console:
    """The pages' shared state; connects to the settings' ClickHouse when no client is given."""
    if client is None:
        from shardsense.clickhouse import connect

        client = connect(settings.resolved_clickhouse_url)
    if threshold is None:
        pct = getattr(settings, "processor_straggler_pct", None)
        threshold = pct / 100 if pct else queries.STRAGGLER_SLOWDOWN
    return Console(settings, queries.Db(client), threshold, sql_client)


def _register_shell(
    app: dash.Dash, console: Console, renderers: Mapping[str, Callable[[Console, str], Any]]
) -> None:
    """The shell's callbacks: routing between pages, and the job selector."""
    settings = console.settings

    @app.callback(
        Output("page", "children"),
        *(Output(f"nav-{name.lower()}", "className") for name in PAGES.values()),
        Input("url", "pathname"),
        State("job", "value"),
    )
    def route(pathname: str | None, job: str | None) -> tuple[Any, ...]:
        path = pathname if pathname is not None and pathname in renderers else "/"
        classes = ["active" if p == path else "" for p in PAGES]
        if pathname not in renderers and pathname is not None:
            page: Any = html.Div(
                ["No such page. ", dcc.Link("Go to the live page", href="/")],
                className="empty-state",
            )
            return (page, *classes)
        return (renderers[path](console, job or settings.job_id), *classes)

    @app.callback(
        Output("job", "options"),
        Output("job", "value"),
        Input("jobs-interval", "n_intervals"),
        Input("url", "search"),
        State("job", "value"),
    )
    def job_options(_: Any, search: str | None, current: str | None) -> tuple[list[str], Any]:
        """Jobs present in ClickHouse, plus the configured one; ``?job=`` in the URL selects.

        The value is only sent when it changes, so the pages do not refresh for nothing.
        """
        wanted = parse_qs((search or "").lstrip("?")).get("job", [None])[0]
        value = current or settings.job_id
        if wanted and dash.ctx.triggered_id != "jobs-interval":  # page load or navigation
            value = wanted
        present = queries.jobs(console.db)
        options = list(dict.fromkeys([value, settings.job_id, *present]))
        return options, (dash.no_update if value == current else value)
