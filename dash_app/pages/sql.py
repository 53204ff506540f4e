"""SQL page: a read-only query box over ClickHouse, a result table and a quick chart.

Queries pass :func:`dash_app.sqlguard.check_sql` (one read statement) and run
on the console's read-only session (readonly=1 with time and row limits);
saved examples answer the common questions and are filled in for the selected job.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import Input, Output, State, ctx, dash_table, dcc, html, no_update

from dash_app.components import empty_figure, styled
from dash_app.sqlguard import QueryResult, explain_error, run_readonly

if TYPE_CHECKING:
    import dash

    from dash_app.app import Console

__all__ = [
    "EXAMPLES",
    "example_sql",
    "is_example",
    "layout",
    "quick_chart",
    "register",
    "to_records",
    "unique_names",
]

#: Saved examples: title -> SQL with ``{job}`` standing for the quoted job id.
EXAMPLES: dict[str, str] = {
    "Slowest workers over the last 5 minutes": """SELECT worker_id,
       round(quantile(0.5)((data_wait_s + compute_s) / samples) * 1000, 3) AS p50_ms_per_sample,
       round(quantile(0.9)((data_wait_s + compute_s) / samples) * 1000, 3) AS p90_ms_per_sample,
       round(avg(data_wait_s / (data_wait_s + compute_s)), 3) AS wait_share,
       count() AS batches
FROM v_batch_timings
WHERE job_id = {job} AND samples > 0
  AND end_ts >= (SELECT max(end_ts) FROM batch_timings WHERE job_id = {job}) - INTERVAL 5 MINUTE
GROUP BY worker_id
ORDER BY p50_ms_per_sample DESC""",
    "Step time per shard-map version": """SELECT map_version, count() AS steps,
       round(avg(step_s) * 1000, 1) AS mean_step_ms,
       round(quantile(0.9)(step_s) * 1000, 1) AS p90_step_ms
FROM (SELECT epoch, step, min(map_version) AS map_version, max(data_wait_s + compute_s) AS step_s
      FROM v_batch_timings WHERE job_id = {job} GROUP BY epoch, step)
GROUP BY map_version ORDER BY map_version""",
    "Planner decisions by outcome": """SELECT decision, count() AS decisions,
       round(avg(predicted_gain_s), 3) AS avg_gain_s, round(avg(move_cost_s), 3) AS avg_cost_s,
       any(reason) AS example_reason
FROM v_planner_decisions WHERE job_id = {job}
GROUP BY decision ORDER BY decisions DESC""",
    "Ingested batch timings per minute": """SELECT toStartOfMinute(ingest_ts) AS minute,
       count() AS batches, uniqExact(event_id) AS reports,
       round(quantile(0.95)(dateDiff('microsecond', end_ts, ingest_ts) / 1e6), 3) AS lag_p95_s
FROM v_batch_timings WHERE job_id = {job}
GROUP BY minute ORDER BY minute""",
    "Predicted stragglers (latest prediction per worker)": """SELECT worker_id,
       argMax(slowdown, ts) AS predicted_slowdown, argMax(straggler, ts) AS straggler,
       argMax(model_versions, ts) AS models, max(ts) AS at
FROM v_predictions WHERE job_id = {job}
GROUP BY worker_id ORDER BY predicted_slowdown DESC""",
    "Dead letters by reason": """SELECT code, count() AS letters, any(reason) AS example,
       max(ts) AS last
FROM v_dead_letters
GROUP BY code ORDER BY letters DESC""",
    "Tables and their sizes": """SELECT name, total_rows, formatReadableSize(total_bytes) AS size
FROM system.tables WHERE database = currentDatabase() AND engine NOT LIKE '%View'
ORDER BY name""",
}

_DEFAULT = "Slowest workers over the last 5 minutes"


def example_sql(title: str, job: str) -> str:
    """An example query for ``job`` (quoted as an SQL string literal).

    >>> example_sql("Dead letters by reason", "x").startswith("SELECT code")
    True
    >>> "job_id = 'o\\\\'k'" in example_sql("Planner decisions by outcome", "o'k")
    True
    """
    literal = "'" + job.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return EXAMPLES[title].replace("{job}", literal)


_JOB_LITERAL = r"'(?:[^'\\]|\\.)*'"
_EXAMPLE_PATTERNS = [
    re.compile("^" + re.escape(sql).replace(re.escape("{job}"), _JOB_LITERAL) + "$")
    for sql in EXAMPLES.values()
]


def is_example(sql: str) -> bool:
    """Whether ``sql`` is a saved example, unchanged but for its job id.

    >>> is_example(example_sql("Planner decisions by outcome", "a")), is_example("SELECT 1")
    (True, False)
    """
    return any(p.match(sql) for p in _EXAMPLE_PATTERNS)


def layout(console: Console, job: str) -> html.Div:
    """The SQL page, its box holding the default example for ``job``."""
    s = console.settings
    limits = (f"read-only · one statement · time limit {s.console_sql_timeout_s} s · "
              f"row limit {s.console_sql_max_rows:,}")
    return html.Div(
        [
            html.Div(
                [
                    html.H3("Query ClickHouse (read-only)"),
                    dcc.Dropdown(
                        id="sql-example", options=list(EXAMPLES), value=_DEFAULT,
                        clearable=False, placeholder="Saved examples",
                    ),
                    html.Div(
                        dcc.Textarea(
                            id="sql-input", value=example_sql(_DEFAULT, job),
                            style={"height": "170px"}, spellCheck=False,
                        ),
                        className="sql-box",
                    ),
                    html.Div(
                        [
                            html.Button("Run", id="sql-run", n_clicks=0),
                            html.Span(limits, className="muted"),
                        ],
                        className="sql-controls",
                    ),
                    dcc.Loading(html.Div(id="sql-message"), type="dot"),
                ],
                className="panel",
            ),
            html.Div([html.H3("Quick chart"), dcc.Graph(id="sql-chart")], className="panel"),
            html.Div([html.H3("Result"), html.Div(id="sql-result")], className="panel"),
        ]
    )


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique for the table (``SELECT 1, 1`` has two columns ``1``).

    >>> unique_names(["1", "1", "a", "1"])
    ['1', '1 (2)', 'a', '1 (3)']
    """
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def to_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows a DataTable can show: arrays, maps and timestamps as text.

    >>> to_records(pd.DataFrame({"a": [[1, 2]], "b": [1.5]}))
    [{'a': '[1, 2]', 'b': 1.5}]
    """
    shown = frame.copy()
    for col in shown.columns:
        if shown[col].dtype == object or "datetime" in str(shown[col].dtype):
            shown[col] = [_text(v) for v in shown[col]]
    records: list[dict[str, Any]] = shown.to_dict("records")
    return records


def _text(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(_plain(value))


def _plain(value: Any) -> Any:
    """Python values for numpy scalars/arrays inside lists, tuples and dicts.

    >>> str(_plain([np.uint8(1), np.array([2, 3])]))
    '[1, [2, 3]]'
    """
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist()) if isinstance(value, np.ndarray) else value.tolist()
    return value


def quick_chart(frame: pd.DataFrame) -> go.Figure:
    """First column as x, the first numeric column after it as y.

    A line when x is time or increasing numbers, bars over categories.
    """
    if frame.empty or len(frame.columns) < 2:
        return empty_figure("A chart needs two columns: an x and a numeric y.", height=300)
    x = frame.columns[0]
    numeric = [c for c in frame.columns[1:] if pd.api.types.is_numeric_dtype(frame[c])]
    if not numeric:
        return empty_figure("No numeric column to chart.", height=300)
    data = frame.head(2000)
    fig = go.Figure()
    xs = data[x] if data[x].dtype != object else data[x].astype(str)
    ordered = pd.api.types.is_datetime64_any_dtype(data[x]) or (
        pd.api.types.is_numeric_dtype(data[x]) and data[x].is_monotonic_increasing
    )
    y = numeric[0]
    if ordered:
        fig.add_scatter(x=xs, y=data[y], mode="lines+markers", name=str(y))
    else:
        fig.add_bar(x=xs, y=data[y], name=str(y), marker_color="#2f54eb")
    fig.update_xaxes(title=str(x), type=None if ordered else "category")
    fig.update_yaxes(title=str(y))
    return styled(fig, height=300, revision="sql")


def _message(result: QueryResult, limit: int, run: int) -> html.Div:
    """The outcome line; ``data-run`` counts runs so a test can wait for this one."""
    attrs: dict[str, Any] = {"id": "sql-status", "data-run": str(run)}
    if not result.ok:
        return html.Div(result.error, className="sql-message sql-error", **attrs)
    note = f" (cut at the row limit of {limit:,})" if result.truncated else ""
    text = f"{len(result.frame):,} rows in {result.elapsed_s * 1000:,.0f} ms{note}."
    return html.Div(text, className="sql-message sql-ok", **attrs)


def register(app: dash.Dash, console: Console) -> None:
    @app.callback(
        Output("sql-input", "value"),
        Input("sql-example", "value"),
        Input("job", "value"),
        State("sql-input", "value"),
        prevent_initial_call=True,  # the layout already holds the example for the job
    )
    def fill(title: str | None, job: str | None, current: str | None) -> Any:
        """Load the chosen example for the job; a job change keeps a query the user wrote."""
        if ctx.triggered_id == "job" and current and not is_example(current):
            return no_update
        return example_sql(title or _DEFAULT, job or console.settings.job_id)

    @app.callback(
        Output("sql-message", "children"),
        Output("sql-chart", "figure"),
        Output("sql-result", "children"),
        Input("sql-run", "n_clicks"),
        State("sql-input", "value"),
    )
    def run(clicks: int | None, sql: str | None) -> tuple[Any, ...]:
        if not clicks:
            hint = html.Div("Pick an example or write a query, then Run.", className="muted")
            return hint, empty_figure("Run a query to chart its result.", height=300), ""
        s = console.settings
        with console.sql_lock:
            try:
                client = console.readonly_client()
            except Exception as exc:
                result = QueryResult(error=f"SQL is unavailable: {explain_error(exc)}")
            else:
                result = run_readonly(client, sql or "", max_rows=s.console_sql_max_rows)
        if not result.ok:
            return _message(result, s.console_sql_max_rows, clicks), empty_figure(
                "No result to chart.", height=300), ""
        frame = result.frame
        frame.columns = unique_names([str(c) for c in frame.columns])
        grid = dash_table.DataTable(  # type: ignore[attr-defined]
            id="sql-table",
            columns=[{"name": str(c), "id": str(c)} for c in frame.columns],
            data=to_records(frame),
            page_size=25,
            sort_action="native",
            style_table={"overflowX": "auto"},
            style_cell={"fontFamily": "ui-monospace, Menlo, monospace", "fontSize": "12px",
                        "textAlign": "left", "maxWidth": "420px", "overflow": "hidden",
                        "textOverflow": "ellipsis"},
            style_header={"fontWeight": "600"},
        )
        return _message(result, s.console_sql_max_rows, clicks), quick_chart(frame), grid
