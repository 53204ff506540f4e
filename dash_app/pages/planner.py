"""Planner page: every shard-map version with its gain, cost and effect; the decisions not taken.

"Realised" step times come from the timings themselves (the slowest rank's
batch time per step, split by the map version each batch ran under), so the
page checks the planner's predictions against what training actually did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
from dash import Input, Output, dcc, html

from dash_app import queries
from dash_app.components import (
    Column,
    card,
    empty_figure,
    empty_state,
    fmt_ms,
    fmt_num,
    fmt_time,
    styled,
)
from dash_app.components import table as html_table

if TYPE_CHECKING:
    import dash

    from dash_app.app import Console

__all__ = ["layout", "register"]


def layout(console: Console, job: str) -> html.Div:
    """The page's frame; its refresh callback reads the job from the selector."""
    return html.Div(
        [
            dcc.Interval(id="planner-interval", interval=5 * console.settings.console_refresh_ms),
            html.Div(id="planner-cards", className="cards"),
            html.Div(
                [html.H3("Realised step time and shard-map changes"),
                 dcc.Graph(id="step-graph", config={"displaylogo": False})],
                className="panel",
            ),
            html.Div([html.H3("Shard-map versions"), html.Div(id="maps-panel")], className="panel"),
            html.Div(
                [html.H3("Decisions not taken, and why"), html.Div(id="declined-panel")],
                className="panel",
            ),
        ]
    )


def _sizes(x: Any) -> str:
    return "–" if x is None else " ".join(str(int(v)) for v in x)


def _secs(x: Any) -> str:
    """Gains and costs: seconds over the planner's horizon, small ones in ms.

    >>> _secs(6.1423), _secs(0.012), _secs(None)
    ('6.14 s', '12.0 ms', '–')
    """
    if x is not None and pd.notna(x) and abs(float(x)) < 1:
        return fmt_ms(x)
    text = fmt_num(x, 2)
    return text if text == "–" else f"{text} s"


_MAP_COLUMNS: list[Column] = [
    ("version", "map_version", lambda x: f"v{int(x)}"),
    ("published", "ts", fmt_time),
    ("applies from", "applies", str),
    ("batch sizes per rank", "batch_sizes", _sizes),
    ("predicted gain", "predicted_gain_s", _secs),
    ("move cost", "move_cost_s", _secs),
    ("moved shards", "moved_shards", lambda x: str(int(x))),
    ("step before", "before_s", fmt_ms),
    ("step after", "after_s", fmt_ms),
    ("realised", "realised_gain_s", lambda x: fmt_ms(x) if pd.notna(x) else "–"),
    ("reason", "reason", str),
]

_DECISION_COLUMNS: list[Column] = [
    ("time", "ts", fmt_time),
    ("decision", "decision", str),
    ("reason", "reason", str),
    ("predicted gain", "predicted_gain_s", _secs),
    ("move cost", "move_cost_s", _secs),
    ("step now", "current_step_s", fmt_ms),
    ("step predicted", "predicted_step_s", fmt_ms),
    ("would move", "moved_shards", lambda x: str(int(x))),
]


def step_figure(steps: pd.DataFrame, maps: pd.DataFrame) -> go.Figure:
    """Bucketed step time with a dashed line where each map change took effect.

    The job's first map (version 1, rank 0's) is no change, so it gets no line.
    """
    fig = go.Figure()
    fig.add_scatter(x=steps["t"], y=steps["step_s"] * 1000, mode="lines", name="step time",
                    line={"color": "#2f54eb", "width": 1.5})
    first = maps["map_version"].min() if len(maps) else None
    for row in maps.itertuples():
        if row.map_version == first or pd.isna(row.first_t):
            continue
        fig.add_vline(x=pd.Timestamp(row.first_t).to_pydatetime(), line_dash="dash",
                      line_color="#c4320a")
        fig.add_annotation(x=pd.Timestamp(row.first_t).to_pydatetime(), y=1, yref="paper",
                           text=f"v{int(row.map_version)}", showarrow=False, yanchor="bottom",
                           font={"color": "#c4320a"})
    fig.update_yaxes(title="step time (ms)")
    styled(fig, height=300, revision="steps")
    fig.update_layout(margin={"t": 24}, showlegend=False)
    return fig


def _cards(maps: pd.DataFrame, decisions: pd.DataFrame) -> list[html.Div]:
    taken = int(decisions["taken"].sum()) if len(decisions) else 0
    last = maps.iloc[-1] if len(maps) else None
    return [
        card("map versions", str(len(maps))),
        card("decisions", str(len(decisions))),
        card("published", str(taken)),
        card("declined", str(len(decisions) - taken)),
        card("current map", "–" if last is None else f"v{int(last['map_version'])}"),
        card("last realised gain",
             "–" if last is None or pd.isna(last["realised_gain_s"])
             else fmt_ms(last["realised_gain_s"])),
    ]


def register(app: dash.Dash, console: Console) -> None:
    @app.callback(
        Output("planner-cards", "children"),
        Output("step-graph", "figure"),
        Output("maps-panel", "children"),
        Output("declined-panel", "children"),
        Input("planner-interval", "n_intervals"),
        Input("job", "value"),
    )
    def refresh(_: Any, job: str | None) -> tuple[Any, ...]:
        job = job or console.settings.job_id
        db = console.db
        maps = queries.shard_map_versions(db, job)
        decisions = queries.decisions(db, job)
        steps = queries.step_series(db, job)
        if len(maps):
            maps["applies"] = [
                f"epoch {int(e)} step {int(s)}"
                for e, s in zip(maps["apply_epoch"], maps["apply_step"], strict=True)
            ]
            maps_view: Any = html_table(
                maps.iloc[::-1], _MAP_COLUMNS, id="maps-table",
                row_data=lambda r: {"data-version": str(int(r["map_version"]))},
            )
        else:
            maps_view = empty_state(
                f"No shard maps published for job '{job}' yet.",
                "The planner publishes the first map when the job starts; later versions "
                "appear when a rebalance is worth its move cost.",
                id="maps-empty",
            )
        declined = decisions[~decisions["taken"]] if len(decisions) else decisions
        if len(declined):
            declined_view: Any = html_table(declined, _DECISION_COLUMNS, id="declined-table",
                                            row_class=lambda r: "declined")
        else:
            declined_view = empty_state(
                "No declined decisions." if len(decisions) else
                f"No planner decisions recorded for job '{job}' yet.",
                "Declined decisions appear when a possible rebalance does not beat its cost.",
                id="declined-empty",
            )
        figure = (step_figure(steps, maps) if len(steps)
                  else empty_figure(f"No step timings for job '{job}' yet.", height=300))
        return _cards(maps, decisions), figure, maps_view, declined_view
