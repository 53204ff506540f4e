"""Live page: batch time actual vs predicted, stragglers now, batch shares, ingest rate and lag.

Everything refreshes from one ``dcc.Interval`` callback, so a refresh costs a
handful of small queries over the job's newest rows and never reloads the page.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from dash import Input, Output, dcc, html, set_props

from dash_app import queries
from dash_app.components import (
    Column,
    card,
    empty_figure,
    empty_state,
    fmt_duration,
    fmt_ms,
    fmt_num,
    fmt_pct,
    fmt_time,
    styled,
    table,
)

if TYPE_CHECKING:
    import dash

    from dash_app.app import Console

__all__ = ["layout", "register"]

WINDOWS = [("2 min", 120), ("10 min", 600), ("1 h", 3600), ("6 h", 21600)]
PALETTE = px.colors.qualitative.D3


def _color(worker: int) -> str:
    return PALETTE[int(worker) % len(PALETTE)]


def layout(console: Console, job: str) -> html.Div:
    """The page's frame; its refresh callback reads the job from the selector."""
    return html.Div(
        [
            dcc.Interval(id="live-interval", interval=console.settings.console_refresh_ms),
            html.Div(id="live-cards", className="cards"),
            html.Div(
                [
                    html.H3("Batch time per worker: actual (solid) vs predicted (dotted)"),
                    dcc.RadioItems(
                        id="live-window",
                        options=[{"label": lbl, "value": s} for lbl, s in WINDOWS],
                        value=600,
                        inline=True,
                        className="muted",
                    ),
                    dcc.Graph(id="batch-time-graph", config={"displaylogo": False}),
                ],
                className="panel",
            ),
            html.Div(
                [
                    html.Div(
                        [html.H3("Workers now (stragglers highlighted)"),
                         html.Div(id="stragglers-panel")],
                        className="panel",
                    ),
                    html.Div(
                        [html.H3("Share of the global batch per rank"),
                         dcc.Graph(id="share-graph", config={"displaylogo": False})],
                        className="panel",
                    ),
                ],
                className="row",
            ),
            html.Div(id="live-updated", className="muted"),
        ]
    )


def _hint(job: str) -> html.Span:
    return html.Span(
        [
            "Start training with the ShardSense runtime for job ",
            html.Code(job),
            ", or write a demo run: ",
            html.Code(f"python -m benchmarks.console_fixture --job-id {job}"),
        ]
    )


def _cards(kpis: dict[str, Any], strag: pd.DataFrame) -> list[html.Div]:
    if not kpis["workers"]:
        return [card("workers", "–"), card("events/s", "–"), card("e2e lag p50", "–")]
    slow = strag[strag["straggler"]] if len(strag) else strag
    idle = float(kpis["idle_s"])
    return [
        card("workers", fmt_num(int(kpis["workers"]))),
        card("stragglers", str(len(slow)), alert=len(slow) > 0, id="straggler-count"),
        card("epoch · step", f"{int(kpis['last_epoch'])} · {int(kpis['last_step']):,}"),
        card("shard map", f"v{int(kpis['map_version'])}"),
        card("events/s (1 min)", fmt_num(kpis["events_per_s"], 1), id="events-rate"),
        card("reports/s", fmt_num(kpis["reports_per_s"], 1)),
        card("e2e lag p50", fmt_duration(kpis["lag_p50_s"]), id="lag-p50"),
        card("e2e lag p95", fmt_duration(kpis["lag_p95_s"])),
        card("last event", "now" if idle < 5 else f"{idle:,.0f} s ago", alert=idle > 60),
    ]


def batch_figure(series: pd.DataFrame, stragglers: set[int]) -> go.Figure:
    """Solid actual and dotted predicted line per worker; stragglers drawn thicker."""
    fig = go.Figure()
    for worker, rows in series.groupby("worker_id"):
        w = int(worker)
        group, color, width = f"w{w}", _color(w), 3 if w in stragglers else 1.5
        fig.add_scatter(
            x=rows["t"], y=rows["actual_s"] * 1000, mode="lines", name=f"rank {w}",
            legendgroup=group, line={"color": color, "width": width},
        )
        if rows["predicted_s"].notna().any():
            fig.add_scatter(
                x=rows["t"], y=rows["predicted_s"] * 1000, mode="lines",
                name=f"rank {w} predicted", legendgroup=group, showlegend=False,
                line={"color": color, "width": 1.5, "dash": "dot"},
            )
    fig.update_yaxes(title="batch time (ms)")
    return styled(fig, height=360, revision="batch")


def share_figure(series: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for worker, rows in series.groupby("worker_id"):
        w = int(worker)
        fig.add_scatter(
            x=rows["t"], y=rows["share"] * 100, mode="lines", stackgroup="share",
            name=f"rank {w}", line={"color": _color(w), "width": 0.5},
        )
    fig.update_yaxes(title="% of global batch", range=[0, 100])
    return styled(fig, height=330, revision="share")


_WORKER_COLUMNS: list[Column] = [
    ("rank", "worker_id", lambda x: str(int(x))),
    ("slowdown", "slowdown", lambda x: "–" if x is None or math.isnan(x) else f"×{x:.2f}"),
    ("predicted", "predicted_slowdown",
     lambda x: "–" if x is None or math.isnan(x) else f"×{x:.2f}"),
    ("time/sample", "time_per_sample_s", fmt_ms),
    ("batch", "batch_size", lambda x: str(int(x))),
    ("share", "share", fmt_pct),
    ("last seen", "last_seen", fmt_time),
]


def straggler_summary(frame: pd.DataFrame, threshold: float) -> html.Div:
    """One line naming the current stragglers and their slowdown."""
    slow = frame[frame["straggler"]]
    if slow.empty:
        return html.Div(f"No stragglers: every rank within ×{threshold:g} of the median.",
                        id="straggler-summary", className="summary")
    names = ", ".join(f"rank {int(r.worker_id)} (×{r.slowdown:.2f})" for r in slow.itertuples())
    return html.Div(f"Stragglers now: {names}", id="straggler-summary",
                    className="summary has-stragglers")


def workers_table(frame: pd.DataFrame) -> html.Table:
    """All workers, slowest first; straggler rows carry class ``straggler`` and data-* attrs."""
    return table(
        frame,
        _WORKER_COLUMNS,
        id="stragglers-table",
        row_class=lambda r: "straggler" if r["straggler"] else "",
        row_data=lambda r: {
            "data-worker": str(int(r["worker_id"])),
            "data-straggler": "1" if r["straggler"] else "0",
            "data-slowdown": f"{r['slowdown']:.3f}",
        },
    )


def register(app: dash.Dash, console: Console) -> None:
    @app.callback(
        Output("live-cards", "children"),
        Output("batch-time-graph", "figure"),
        Output("stragglers-panel", "children"),
        Output("share-graph", "figure"),
        Output("live-updated", "children"),
        Input("live-interval", "n_intervals"),
        Input("job", "value"),
        Input("live-window", "value"),
    )
    def refresh(_: Any, job: str | None, window: int | None) -> tuple[Any, ...]:
        job = job or console.settings.job_id
        db = console.db
        kpis = queries.live_kpis(db, job)
        updated = f"job {job} · refreshed {pd.Timestamp.now():%H:%M:%S} · every " \
                  f"{console.settings.console_refresh_ms / 1000:g} s"
        set_props("console-error", {"children": ""})
        if not kpis["workers"]:
            message = f"No batch timings for job '{job}' yet."
            return (
                _cards(kpis, pd.DataFrame()),
                empty_figure(message),
                empty_state(message, _hint(job), id="live-empty"),
                empty_figure("No batch shares yet."),
                updated,
            )
        strag = queries.stragglers(db, job, console.threshold)
        series = queries.batch_series(db, job, int(window or 600))
        slow = {int(w) for w in strag.loc[strag["straggler"], "worker_id"]}
        return (
            _cards(kpis, strag),
            batch_figure(series, slow),
            [straggler_summary(strag, console.threshold), workers_table(strag)],
            share_figure(series),
            updated,
        )
