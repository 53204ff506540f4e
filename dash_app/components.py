"""Small building blocks shared by the console pages: tables, cards, empty states, figures.

Tables are plain HTML (not DataTable) so that each row can carry classes and
``data-*`` attributes: the straggler highlight is a class a browser test and a
stylesheet can both find.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import html

__all__ = [
    "CSS",
    "Column",
    "card",
    "empty_figure",
    "empty_state",
    "fmt_duration",
    "fmt_ms",
    "fmt_num",
    "fmt_pct",
    "fmt_time",
    "styled",
    "table",
]

#: (header, column, formatter) of an HTML table.
Column = tuple[str, str, Callable[[Any], str]]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       background: #f5f6f8; color: #1d2330; }
.topbar { display: flex; align-items: center; gap: 24px; padding: 10px 24px;
          background: #1d2330; color: #fff; }
.topbar .brand { font-weight: 700; font-size: 18px; letter-spacing: .3px; }
.topbar a { color: #c9d1e3; text-decoration: none; padding: 6px 10px; border-radius: 6px; }
.topbar a.active, .topbar a:hover { background: #37415a; color: #fff; }
.topbar .job { margin-left: auto; display: flex; align-items: center; gap: 8px; }
.topbar .job .Select-control, .topbar .job .dash-dropdown { min-width: 260px; color: #1d2330; }
.page { padding: 16px 24px 40px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 12px; }
.card { background: #fff; border-radius: 8px; padding: 10px 16px; flex: 1 1 110px;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.card .label { font-size: 12px; color: #667085; text-transform: uppercase; }
.card .value { font-size: 22px; font-weight: 600; white-space: nowrap; }
.card.alert .value { color: #c4320a; }
.panel { background: #fff; border-radius: 8px; padding: 12px 16px; margin-bottom: 14px;
         box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.panel h3 { margin: 0 0 8px; font-size: 15px; }
.row { display: flex; gap: 14px; } .row > .panel { flex: 1; min-width: 0; }
table.data { border-collapse: collapse; width: 100%; font-size: 13px; }
table.data th { text-align: left; color: #667085; font-weight: 600;
                border-bottom: 1px solid #e4e7ec; padding: 5px 8px; }
table.data td { padding: 5px 8px; border-bottom: 1px solid #f0f1f4;
                font-variant-numeric: tabular-nums; }
tr.straggler td { background: #fde8e4; color: #9a2a0c; font-weight: 600; }
tr.declined td { color: #6b5a10; background: #fff8db; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         background: #e4e7ec; }
.badge.bad { background: #c4320a; color: #fff; }
.empty-state { padding: 26px; text-align: center; color: #667085; border: 1px dashed #d0d5dd;
               border-radius: 8px; background: #fafbfc; }
.empty-state code { background: #eef0f4; padding: 1px 5px; border-radius: 4px; }
.console-error { background: #fde8e4; color: #9a2a0c; padding: 8px 24px; }
.console-error:empty { display: none; }
.sql-box textarea { width: 100%; font-family: ui-monospace, Menlo, monospace; font-size: 13px; }
.sql-controls { display: flex; gap: 10px; align-items: center; margin: 8px 0; }
.sql-controls button { padding: 6px 18px; background: #2f54eb; color: #fff; border: 0;
                       border-radius: 6px; cursor: pointer; }
.sql-message { padding: 8px 12px; border-radius: 6px; margin: 8px 0; font-size: 13px; }
.sql-message.sql-error { background: #fde8e4; color: #9a2a0c; }
.sql-message.sql-ok { background: #e7f6ec; color: #1b6b36; }
.muted { color: #667085; font-size: 12px; }
.summary { margin: 0 0 8px; font-size: 14px; }
.summary.has-stragglers { color: #9a2a0c; font-weight: 600; }
"""


def fmt_num(x: Any, digits: int = 2) -> str:
    """A number for a table cell; blanks for missing values.

    >>> fmt_num(1.23456), fmt_num(None), fmt_num(float("nan")), fmt_num(12)
    ('1.23', '–', '–', '12')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NaT:
        return "–"
    if isinstance(x, int | np.integer):
        return f"{int(x):,}"
    return f"{float(x):,.{digits}f}"


def fmt_ms(seconds: Any) -> str:
    """Seconds shown as milliseconds, with more digits below 1 ms.

    >>> fmt_ms(0.2871), fmt_ms(0.0004001)
    ('287.1 ms', '0.400 ms')
    """
    small = seconds is not None and pd.notna(seconds) and 0 < abs(float(seconds)) < 0.001
    text = fmt_num(None if seconds is None else float(seconds) * 1000, 3 if small else 1)
    return text if text == "–" else f"{text} ms"


def fmt_duration(seconds: Any) -> str:
    """Milliseconds below a second, seconds above.

    >>> fmt_duration(0.0421), fmt_duration(1.4449), fmt_duration(None)
    ('42.1 ms', '1.44 s', '–')
    """
    if seconds is not None and pd.notna(seconds) and abs(float(seconds)) >= 1:
        return f"{float(seconds):,.2f} s"
    return fmt_ms(seconds)


def fmt_pct(share: Any) -> str:
    text = fmt_num(None if share is None else float(share) * 100, 1)
    return text if text == "–" else f"{text} %"


def fmt_time(ts: Any) -> str:
    if ts is None or ts is pd.NaT or (isinstance(ts, float) and math.isnan(ts)):
        return "–"
    return pd.Timestamp(ts).strftime("%H:%M:%S")


def card(label: str, value: str, *, alert: bool = False, id: str | None = None) -> html.Div:
    kwargs: dict[str, Any] = {"id": id} if id else {}
    return html.Div(
        [html.Div(label, className="label"), html.Div(value, className="value")],
        className="card alert" if alert else "card",
        **kwargs,
    )


def empty_state(message: str, hint: Any = None, *, id: str | None = None) -> html.Div:
    """A friendly placeholder where a panel has no rows yet."""
    kwargs: dict[str, Any] = {"id": id} if id else {}
    body: list[Any] = [html.Div(message)]
    if hint is not None:
        body.append(html.Div(hint, className="muted"))
    return html.Div(body, className="empty-state", **kwargs)


def table(
    frame: pd.DataFrame,
    columns: Sequence[Column],
    *,
    id: str,
    row_class: Callable[[Any], str] | None = None,
    row_data: Callable[[Any], dict[str, str]] | None = None,
) -> html.Table:
    """An HTML table; ``row_class``/``row_data`` give each row classes and data-* attributes."""
    head = html.Thead(html.Tr([html.Th(h) for h, _, _ in columns]))
    rows = []
    for rec in frame.to_dict("records"):
        attrs: dict[str, Any] = dict(row_data(rec)) if row_data else {}
        cls = row_class(rec) if row_class else ""
        cells = [html.Td(fmt(rec.get(col))) for _, col, fmt in columns]
        rows.append(html.Tr(cells, className=cls, **attrs))
    return html.Table([head, html.Tbody(rows)], id=id, className="data")


def styled(fig: go.Figure, *, height: int = 320, revision: str = "keep") -> go.Figure:
    """Shared look; ``uirevision`` keeps the user's zoom across interval refreshes."""
    fig.update_layout(
        height=height,
        margin={"l": 50, "r": 10, "t": 10, "b": 40},
        template="plotly_white",
        uirevision=revision,
        legend={"orientation": "h", "y": -0.18},
    )
    return fig


def empty_figure(message: str, height: int = 320) -> go.Figure:
    """A blank chart that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font={"size": 14, "color": "#667085"},
                       xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return styled(fig, height=height)
