"""The self-contained HTML report of one backtest: tables of the stats plus interactive plotly charts.

The charts are one plotly figure whose five panels share the time axis, so zooming into one day
zooms them all: price with the entry ladder (every rung price from one centre to the next), every
fill (WebGL markers, never thinned) and the regime bands; equity; drawdown; funding payments per
settlement; gate trips, rejections and other events in lanes. plotly.js is embedded inline, once,
so the file opens with no network. Long curves (price, equity, drawdown) are downsampled per bucket
keeping the first, lowest, highest and last point (``minmax_indices``), so extremes such as the
deepest drawdown survive; fills, ladder rungs, funding and events are drawn in full.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gridctl.engine.enums import EventKind, Regime, Side
from gridctl.engine.ladder import rung_price_nb
from gridctl.engine.params import P_LEVELS_LONG, P_LEVELS_SHORT

if TYPE_CHECKING:  # plotly loads when a figure is drawn, not for the summary rows (`gridctl backtest`)
    import plotly.graph_objects as go

#: Points kept of the equity and drawdown curves; the price line keeps MAX_PRICE_POINTS.
MAX_CURVE_POINTS = 8000
MAX_PRICE_POINTS = 40000
CHART_DIV_ID = "backtest-charts"
#: Plotly options of every chart: scroll to zoom, no plotly logo.
PLOT_CONFIG = {"scrollZoom": True, "displaylogo": False, "responsive": True}

# Event kinds that mean a risk gate acted (the rest are bookkeeping: re-centres, data gaps, ...).
GATE_EVENTS = (
    "drawdown_halt",
    "circuit_breaker_trip",
    "reducing_on",
    "funding_unknown",
    "input_missing",
    "liquidation",
)
# Events that end trading for good: drawn as a vertical line across the price panel.
_STOP_EVENTS = ("drawdown_halt", "liquidation")
_REGIME_COLOURS = {"up": "rgba(46,125,50,0.12)", "down": "rgba(198,40,40,0.12)"}
_KIND_COLOURS = {
    "entry": "#1565c0",
    "tp": "#2e7d32",
    "sl": "#c62828",
    "flatten": "#6a1b9a",
    "liquidation": "#000000",
}
_SIDE_ENTRY_COLOURS = {"long": "#1565c0", "short": "#ef6c00"}
_LADDER_COLOURS = {"long": "rgba(21,101,192,0.45)", "short": "rgba(239,108,0,0.45)"}
# Panel rows of the figure.
ROW_PRICE, ROW_EQUITY, ROW_DRAWDOWN, ROW_FUNDING, ROW_EVENTS = 1, 2, 3, 4, 5
_ROW_TITLES = (
    "Price (close), ladder rungs (dashed; the policy may rest fewer), fills; shaded: regime up / down",
    "Equity (USDT, bar close)",
    "Drawdown from peak (%)",
    "Funding per settlement (USDT; + received, - paid)",
    "Gate trips, rejections and other events",
)


def minmax_indices(values: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Indices of a downsampled curve: per bucket the first, lowest, highest and last point.

    At most ``max_points`` indices (rounded down to whole buckets of four) and never fewer than all
    points of a curve that is already short. NaN values are never chosen as the lowest/highest point.
    """
    n = len(values)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    buckets = max(1, max_points // 4)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    lo, hi = edges[:-1], edges[1:]
    keep_bucket = hi > lo
    lo, hi = lo[keep_bucket], hi[keep_bucket]
    # Per bucket, in one pass over the whole curve: the first point reaching the bucket's lowest
    # (highest) finite value, as np.argmin / np.argmax would pick it; buckets without a finite value
    # keep only their first and last point.
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    bucket = np.repeat(np.arange(lo.size), hi - lo)
    picks = [lo, hi - 1]
    for fill, reduce in ((np.inf, np.minimum), (-np.inf, np.maximum)):
        masked = np.where(finite, values, fill)
        extreme = reduce.reduceat(masked, lo)
        hit = np.flatnonzero((masked == extreme[bucket]) & finite)
        owner = bucket[hit]
        picks.append(hit[np.concatenate(([True], owner[1:] != owner[:-1]))] if hit.size else hit)
    return np.unique(np.concatenate(picks).astype(np.int64))


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index runs of equal consecutive values."""
    if len(values) == 0:
        return []
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(values)]))
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


@dataclass(frozen=True)
class ReportData:
    """Everything the report draws, already in plain arrays with labels (see research.results)."""

    title: str
    bar_ms: int
    ts: np.ndarray  # bar open times (ms)
    close: np.ndarray
    equity_ts: np.ndarray
    equity: np.ndarray
    regime: Sequence[str]  # label per equity row
    ladder_ts: np.ndarray  # times the ladder (re)starts
    ladder_long: np.ndarray  # [n_centres, levels] long entry rung prices
    ladder_short: np.ndarray  # [n_centres, levels] short entry rung prices
    ladder_end: float  # when entries stopped for good (halt, liquidation) or the end of the data
    fills: dict[str, np.ndarray | list[str]]  # ts, price, qty, side, kind (+ level, fee, realized_pnl)
    funding: dict[str, np.ndarray]  # ts, amount, rate
    events: dict[str, np.ndarray | list[str]]  # ts, kind, reason, value


def _ms(values: np.ndarray) -> np.ndarray:
    """Epoch milliseconds as float64 (plotly date axes read numbers as ms; typed arrays keep it small)."""
    return np.asarray(values, dtype=np.float64)


def drawdown_pct(equity: np.ndarray) -> np.ndarray:
    """Fall of each bar-close equity below its running peak, in percent of the peak (<= 0)."""
    if len(equity) == 0:
        return np.zeros(0)
    peak = np.maximum.accumulate(np.where(np.isfinite(equity), equity, -np.inf))
    safe = np.where(peak > 0, peak, 1.0)
    return np.where(peak > 0, (equity - peak) / safe * 100.0, 0.0)


def _ladder_segments(d: ReportData, side: str, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """x/y of one side's rungs as horizontal segments (start, end, gap) from one centre to the next."""
    prices = d.ladder_long if side == "long" else d.ladder_short
    if len(d.ladder_ts) == 0 or prices.size == 0:
        return np.zeros(0), np.zeros(0)
    starts = _ms(d.ladder_ts)
    ends = np.minimum(np.concatenate((starts[1:], [t1])), d.ladder_end)
    live = (starts < ends)[:, None] & np.isfinite(prices)
    j, _ = np.nonzero(live)
    p = prices[live]
    xs = np.column_stack((starts[j], ends[j], np.full(len(j), np.nan))).ravel()
    ys = np.column_stack((p, p, np.full(len(j), np.nan))).ravel()
    return xs, ys


def _regime_steps(d: ReportData, label: str, t1: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Step curve 1 inside ``label``'s runs and 0 outside (drawn shaded on a hidden 0..1 axis)."""
    reg = np.asarray(d.regime, dtype=object)
    if not len(reg) or not (reg == label).any():
        return None
    xs, ys = [], []
    for a, b in _runs(reg == label):
        xs.append(float(d.equity_ts[a]))
        ys.append(1.0 if reg[a] == label else 0.0)
        if b == len(reg):
            xs.append(t1)
            ys.append(ys[-1])
    return np.asarray(xs), np.asarray(ys)


def _add_price_panel(fig: go.Figure, d: ReportData, t1: float) -> None:
    import plotly.graph_objects as go

    for label, colour in _REGIME_COLOURS.items():
        steps = _regime_steps(d, label, t1)
        if steps is None:
            continue
        fig.add_trace(
            go.Scatter(
                x=steps[0],
                y=steps[1],
                name=f"regime {label}",
                mode="lines",
                line={"width": 0, "shape": "hv"},
                fill="tozeroy",
                fillcolor=colour,
                hoverinfo="skip",
                legendgroup="regime",
            ),
            row=ROW_PRICE,
            col=1,
            secondary_y=True,
        )
    for side in ("long", "short"):
        xs, ys = _ladder_segments(d, side, t1)
        if len(xs) == 0:
            continue
        fig.add_trace(
            go.Scattergl(
                x=xs,
                y=ys,
                name=f"{side} rungs",
                mode="lines",
                line={"color": _LADDER_COLOURS[side], "width": 1, "dash": "dash"},
                hovertemplate=f"{side} rung %{{y}}<extra></extra>",
                legendgroup="ladder",
            ),
            row=ROW_PRICE,
            col=1,
        )
    idx = minmax_indices(d.close, MAX_PRICE_POINTS)
    fig.add_trace(
        go.Scattergl(
            x=_ms(d.ts[idx] + d.bar_ms),
            y=np.asarray(d.close, dtype=np.float64)[idx],
            name="close" if len(idx) == len(d.close) else f"close ({len(idx):,} of {len(d.close):,} bars)",
            mode="lines",
            line={"color": "#333", "width": 1},
            hovertemplate="%{x|%Y-%m-%d %H:%M} close %{y}<extra></extra>",
        ),
        row=ROW_PRICE,
        col=1,
    )
    _add_fills(fig, d)
    kinds = list(map(str, d.events["kind"]))
    ets = np.asarray(d.events["ts"], dtype=np.int64)
    for kind in _STOP_EVENTS:
        for t in ets[[k == kind for k in kinds]] if kinds else []:
            fig.add_vline(x=float(t), line={"color": "#c62828", "width": 1.5}, row=ROW_PRICE, col=1)


def _add_fills(fig: go.Figure, d: ReportData) -> None:
    """Every fill as a marker, one trace per (side, kind); hover shows the ledger row."""
    import plotly.graph_objects as go

    side = np.asarray(d.fills["side"], dtype=object)
    kind = np.asarray(d.fills["kind"], dtype=object)
    n = len(side)
    extra = [c for c in ("level", "fee", "realized_pnl") if c in d.fills]
    for s, k in sorted({(str(a), str(b)) for a, b in zip(side, kind, strict=True)}):
        rows = np.flatnonzero((side == s) & (kind == k))
        if k == "entry":
            symbol = "triangle-up" if s == "long" else "triangle-down"
            colour = _SIDE_ENTRY_COLOURS.get(s, "#555")
        else:
            symbol = "circle" if s == "long" else "diamond"
            colour = _KIND_COLOURS.get(k, "#555")
        custom = np.column_stack(
            [np.asarray(d.fills["qty"], dtype=np.float64)[rows]]
            + [np.asarray(d.fills[c], dtype=np.float64)[rows] for c in extra]
        )
        tail = "".join(f"<br>{c} %{{customdata[{i + 1}]:.6g}}" for i, c in enumerate(extra))
        fig.add_trace(
            go.Scattergl(
                x=_ms(np.asarray(d.fills["ts"])[rows]),
                y=np.asarray(d.fills["price"], dtype=np.float64)[rows],
                customdata=custom,
                name=f"{s} {k} ({len(rows):,})",
                mode="markers",
                marker={"symbol": symbol, "color": colour, "size": 7 if k == "entry" else 6},
                hovertemplate=f"%{{x|%Y-%m-%d %H:%M}} {s} {k}<br>%{{customdata[0]:g}} @ %{{y}}{tail}"
                "<extra></extra>",
                legendgroup="fills",
            ),
            row=ROW_PRICE,
            col=1,
        )
    if n == 0:
        _empty_note(fig, ROW_PRICE, "no fills", 0.95)


def _empty_note(fig: go.Figure, row: int, text: str, y: float) -> None:
    """A line of text inside an empty panel: what is absent, said instead of a blank chart."""
    fig.add_annotation(
        text=text, xref="x domain", yref="y domain", x=0.01, y=y, showarrow=False, row=row, col=1
    )


def _add_line(fig: go.Figure, row: int, name: str, ts: np.ndarray, values: np.ndarray, colour: str) -> None:
    import plotly.graph_objects as go

    idx = minmax_indices(values, MAX_CURVE_POINTS)
    fig.add_trace(
        go.Scattergl(
            x=_ms(ts[idx]),
            y=np.asarray(values, dtype=np.float64)[idx],
            name=name,
            mode="lines",
            line={"color": colour, "width": 1.2},
            hovertemplate=f"%{{x|%Y-%m-%d %H:%M}} {name} %{{y:,.2f}}<extra></extra>",
            showlegend=False,
        ),
        row=row,
        col=1,
    )


def _add_funding(fig: go.Figure, d: ReportData) -> None:
    import plotly.graph_objects as go

    ts = np.asarray(d.funding["ts"], dtype=np.int64)
    if len(ts) == 0:
        _empty_note(fig, ROW_FUNDING, "no funding paid or received", 0.9)
        return
    amount = np.asarray(d.funding["amount"], dtype=np.float64)
    settle, first, inverse = np.unique(ts, return_index=True, return_inverse=True)
    total = np.zeros(len(settle))
    np.add.at(total, inverse, amount)
    rate = np.asarray(d.funding["rate"], dtype=np.float64)[first] * 100.0  # one rate per settlement
    fig.add_trace(
        go.Bar(
            x=_ms(settle),
            y=total,
            customdata=rate,
            name=f"funding ({len(settle):,} settlements)",
            marker={"color": np.where(total >= 0, "#2e7d32", "#c62828").tolist()},
            hovertemplate="%{x|%Y-%m-%d %H:%M} rate %{customdata:+.4f} %: %{y:+.4f} USDT<extra></extra>",
            showlegend=False,
        ),
        row=ROW_FUNDING,
        col=1,
    )


def _add_events(fig: go.Figure, d: ReportData) -> list[str]:
    """One lane per event kind (count in its name); returns the lane labels, bottom first."""
    import plotly.graph_objects as go

    kinds_all = np.asarray(list(map(str, d.events["kind"])), dtype=object)
    kinds = sorted(set(kinds_all.tolist()))
    ets = np.asarray(d.events["ts"], dtype=np.int64)
    reasons = np.asarray(list(map(str, d.events["reason"])), dtype=object)
    values = np.asarray(d.events["value"], dtype=np.float64)
    for lane, kind in enumerate(kinds):
        rows = np.flatnonzero(kinds_all == kind)
        fig.add_trace(
            go.Scattergl(
                x=_ms(ets[rows]),
                y=np.full(len(rows), float(lane)),
                customdata=np.column_stack((reasons[rows], values[rows])),
                name=f"{kind} ({len(rows):,})",
                mode="markers",
                marker={"color": "#c62828" if kind in GATE_EVENTS else "#546e7a", "size": 6},
                hovertemplate=f"%{{x|%Y-%m-%d %H:%M}} {kind}<br>%{{customdata[0]}} value=%{{customdata[1]}}"
                "<extra></extra>",
                showlegend=False,
            ),
            row=ROW_EVENTS,
            col=1,
        )
    return [f"{k} ({int((kinds_all == k).sum()):,})" for k in kinds]


def backtest_figure(d: ReportData) -> go.Figure:
    """The report's interactive figure: five panels on one shared, zoomable time axis."""
    from plotly.subplots import make_subplots

    t1 = float(d.ts[-1] + d.bar_ms) if len(d.ts) else 1.0
    fig = make_subplots(
        rows=5,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.035,
        row_heights=[0.42, 0.16, 0.12, 0.12, 0.18],
        specs=[[{"secondary_y": True}], [{}], [{}], [{}], [{}]],
        subplot_titles=_ROW_TITLES,
    )
    _add_price_panel(fig, d, t1)
    _add_line(fig, ROW_EQUITY, "equity", d.equity_ts + d.bar_ms, d.equity, "#1565c0")
    _add_line(fig, ROW_DRAWDOWN, "drawdown %", d.equity_ts + d.bar_ms, drawdown_pct(d.equity), "#c62828")
    _add_funding(fig, d)
    lanes = _add_events(fig, d)
    fig.update_xaxes(type="date", showspikes=True, spikemode="across", spikethickness=1)
    fig.update_xaxes(
        rangeselector={
            "buttons": [
                {"count": 1, "label": "1 day", "step": "day", "stepmode": "backward"},
                {"count": 7, "label": "1 week", "step": "day", "stepmode": "backward"},
                {"count": 1, "label": "1 month", "step": "month", "stepmode": "backward"},
                {"label": "all", "step": "all"},
            ]
        },
        row=ROW_PRICE,
        col=1,
    )
    fig.update_yaxes(range=[0, 1], visible=False, fixedrange=True, row=ROW_PRICE, col=1, secondary_y=True)
    fig.update_yaxes(
        tickvals=list(range(len(lanes))),
        ticktext=lanes,
        range=[-0.7, max(len(lanes), 1) - 0.3],
        fixedrange=True,
        row=ROW_EVENTS,
        col=1,
    )
    if not lanes:
        _empty_note(fig, ROW_EVENTS, "no events", 0.5)
    fig.update_layout(
        template="plotly_white",
        height=1250,
        margin={"l": 70, "r": 30, "t": 70, "b": 40},
        hovermode="closest",
        dragmode="zoom",
        legend={"y": 1, "yanchor": "top", "font": {"size": 11}, "groupclick": "toggleitem"},
        font={"size": 11},
    )
    return fig


# After every zoom or pan of the shared time axis, fit each value axis (price, equity, drawdown,
# funding) to the points inside the visible time range, except the one a box zoom just set; a
# double-click (autorange) resets them.
_FIT_Y_SCRIPT = """
(function () {
  var gd = document.getElementById('{plot_id}');
  var fitted = ['y', 'y3', 'y4', 'y5'];
  var busy = false;
  function ms(ax, v) { return typeof ax.r2l === 'function' ? ax.r2l(v) : Date.parse(v); }
  gd.on('plotly_relayout', function (ev) {
    if (busy || !ev) return;
    var keys = Object.keys(ev);
    if (!keys.some(function (k) { return k.indexOf('xaxis') === 0; })) return;
    var fl = gd._fullLayout, upd = {}, box = {};
    var reset = keys.some(function (k) { return k.indexOf('autorange') >= 0; });
    gd._fullData.forEach(function (tr) {
      if (tr.visible !== true || fitted.indexOf(tr.yaxis) < 0 || !tr.x || !tr.y) return;
      var xa = fl[tr.xaxis.replace('x', 'xaxis')];
      var lo = ms(xa, xa.range[0]), hi = ms(xa, xa.range[1]);
      var b = box[tr.yaxis] || (box[tr.yaxis] = [Infinity, -Infinity]);
      if (tr.type === 'bar') { b[0] = Math.min(b[0], 0); b[1] = Math.max(b[1], 0); }
      var n = tr.x.length;
      for (var i = 0; i < n; i++) {
        var x = +tr.x[i], y = +tr.y[i];
        if (!isFinite(y)) continue;
        // A point counts when it is inside the range or its line segment to a neighbour crosses it.
        var seen = x >= lo && x <= hi;
        if (!seen && tr.mode === 'lines') {
          var prev = i > 0 ? +tr.x[i - 1] : NaN, next = i + 1 < n ? +tr.x[i + 1] : NaN;
          seen = (x < lo && next >= lo && isFinite(+tr.y[i + 1])) ||
                 (x > hi && prev <= hi && isFinite(+tr.y[i - 1]));
        }
        if (seen) { if (y < b[0]) b[0] = y; if (y > b[1]) b[1] = y; }
      }
    });
    fitted.forEach(function (y) {
      var name = y.replace('y', 'yaxis'), b = box[y];
      if (reset) { upd[name + '.autorange'] = true; return; }
      // A box zoom chose this panel's value range itself: keep it.
      if ((name + '.range[0]') in ev || (name + '.range') in ev) return;
      if (!b || !(b[1] >= b[0])) return;
      var pad = (b[1] - b[0]) * 0.05 || Math.abs(b[0]) * 0.001 || 1;
      upd[name + '.range'] = [b[0] - pad, b[1] + pad];
    });
    busy = true;
    Plotly.relayout(gd, upd).then(function () { busy = false; }, function () { busy = false; });
  });
})();
"""


def _table(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:20px;color:#222}"
    "table{border-collapse:collapse;margin:0 24px 16px 0;display:inline-table;vertical-align:top}"
    "th,td{border-bottom:1px solid #ddd;padding:3px 10px;text-align:left;font-size:13px}"
    "th{color:#555;font-weight:normal}p.note{color:#555;font-size:13px}"
)


def render_report(
    d: ReportData,
    headline: Sequence[tuple[str, str]],
    assumptions: Sequence[tuple[str, str]],
    gates: Sequence[tuple[str, str]],
) -> str:
    """The whole report as one HTML string; plotly.js is inline, so it loads nothing from anywhere."""
    title = html.escape(d.title)
    fig = backtest_figure(d)
    chart = fig.to_html(
        full_html=False,
        include_plotlyjs=True,
        config=PLOT_CONFIG,
        div_id=CHART_DIV_ID,
        default_width="100%",
        post_script=_FIT_Y_SCRIPT,
    )
    kept = min(len(d.close), len(minmax_indices(d.close, MAX_PRICE_POINTS)))
    note = (
        "Drag to zoom (all panels share the time axis), double-click to zoom out, scroll to zoom, "
        f"click a legend entry to hide it. Every fill is drawn ({len(d.fills['ts']):,}); the price line "
        f"keeps {kept:,} of {len(d.close):,} closes (first, lowest, highest and last per bucket)."
    )
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>',
        f"<style>{_CSS}</style></head><body><h1>{title}</h1>",
        "<h2>Results</h2>",
        _table(headline),
        _table(gates),
        "<h2>What this run assumed</h2>",
        _table(assumptions),
        "<h2>Charts</h2>",
        f'<p class="note">{html.escape(note)}</p>',
        chart,
        "</body></html>",
    ]
    return "\n".join(parts)


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def headline_rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """The key numbers of a run, formatted for people (shared by the report and the CLI summary)."""
    s = stats
    return [
        ("Initial balance", _fmt(s["initial_balance"], " USDT")),
        ("Final equity", _fmt(s["final_equity"], " USDT")),
        ("Total return", _fmt(s["total_return_pct"], " %")),
        ("CAGR", _fmt(s["cagr_pct"], " %")),
        ("Max drawdown (daily close)", _fmt(s["max_drawdown_daily_close_pct"], " %")),
        ("Max drawdown (bar close)", _fmt(s["max_drawdown_bar_close_pct"], " %")),
        ("Max drawdown (intrabar worst point)", _fmt(s["max_drawdown_intrabar_pct"], " %")),
        ("Sharpe", _fmt(s["sharpe"])),
        ("Sortino", _fmt(s["sortino"])),
        ("Calmar", _fmt(s["calmar"])),
        ("Profit factor (closed lots, after fees)", _fmt(s["profit_factor"])),
        ("Win rate (closed lots, after fees)", _fmt(s["win_rate_pct"], " %", 1)),
        ("Fills (entries / exits)", f"{s['n_fills']:,} ({s['n_entries']:,} / {s['n_exits']:,})"),
        ("Realized PnL", _fmt(s["realized_pnl"], " USDT")),
        ("Fees paid", _fmt(s["fees_paid"], " USDT")),
        ("Funding paid / received", f"{_fmt(s['funding_paid'])} / {_fmt(s['funding_received'])} USDT"),
        ("Maker share", _fmt(s["maker_share_pct"], " %", 1)),
        ("Exposure (bars with a position)", _fmt(s["exposure_pct"], " %", 1)),
        ("Time halted", _fmt(s["halted_pct"], " %", 1)),
        ("Liquidated", f"yes at {s['liquidated_at']}" if s["liquidated"] else "no"),
        *path_rows(s),
    ]


def path_rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """The path bracket (every intrabar path rule, worst and best) and the round trips one bar decided."""
    rows = []
    b = stats.get("path_bracket")
    if b is not None:
        hi, lo, worst, best = b["high_first"], b["low_first"], b["worst"], b["best"]
        dd = "max_drawdown_bar_close_pct"
        rows += [
            (
                "Return, worst / best path",
                f"{_fmt(worst['total_return_pct'], ' %')} / {_fmt(best['total_return_pct'], ' %')} "
                f"(ran: {b['rule']})",
            ),
            ("Max DD bar close, worst / best", f"{_fmt(worst[dd], ' %')} / {_fmt(best[dd], ' %')}"),
            (
                "Return, high / low first",
                f"{_fmt(hi['total_return_pct'], ' %')} / {_fmt(lo['total_return_pct'], ' %')}",
            ),
            (
                "Return, nearer / farther first",
                f"{_fmt(b['nearer_first']['total_return_pct'], ' %')} / "
                f"{_fmt(b['farther_first']['total_return_pct'], ' %')}",
            ),
            ("Fills, high / low first", f"{hi['n_fills']:,} / {lo['n_fills']:,}"),
        ]
    if "same_bar_round_trips" in stats:
        rows.append(
            (
                "Same-bar round trips",
                f"{stats['same_bar_round_trips']:,}, realized "
                + _fmt(stats["same_bar_round_trip_pnl"], " USDT"),
            )
        )
    return rows


def gate_rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """Gate trips, rejections and other event counts of a run."""
    tripped = [k for k in GATE_EVENTS if stats["events"].get(k)]
    rows = [("Gates tripped", ", ".join(tripped) or "none")]
    rows += [(f"event: {k}", f"{v:,}") for k, v in stats["events"].items()]
    rows += [(f"rejected: {k}", f"{v:,}") for k, v in stats["rejections"].items()]
    rows += [
        ("Time in cooldown", _fmt(stats["cooldown_pct"], " %", 1)),
        ("Time reducing-only", _fmt(stats["reducing_pct"], " %", 1)),
        ("Halted at", _fmt(stats["halted_at"])),
        ("Orders deferred (rate limits)", f"{stats['orders_deferred']:,}"),
        ("Orders skipped (precision)", f"{stats['skipped_precision']:,}"),
    ]
    return rows


def assumption_rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """What the run assumed: data, fees, funding mark source, gates off, fill model."""
    a = stats["assumptions"]
    marks = ", ".join(f"{k}: {v:,}" for k, v in a["funding_mark_source"].items())
    return [
        ("Strategy", f"{stats['strategy']} ({stats['strategy_source']})"),
        ("Venue", stats["venue"]),
        ("Market", f"{stats['symbol']} {stats['timeframe']}"),
        ("Data", f"{stats['data_start']} -> {stats['data_end']}"),
        ("Bars", f"{stats['bars']:,} ({stats['gaps']:,} gaps, {stats['missing_bars']:,} missing bars)"),
        ("Fees", f"maker {a['maker_fee']:g} / taker {a['taker_fee']:g} ({a['fees_source']})"),
        ("Exchange rules", a.get("exchange_rules", "n/a")),
        ("Funding mark price", marks),
        ("Gates disabled", ", ".join(a["gates_disabled"]) or "none"),
        ("Intrabar path", a["intrabar_path"]),
        ("Detail bars", a["detail_timeframe"] or "none (each bar's own OHLC)"),
        ("Liquidation", a["liquidation_rule"]),
        ("Limit fills", "on touch" if a["fill_on_touch"] else "only when traded through"),
        ("Taker slippage", f"{a['slippage_bps']:g} bps"),
        *[("Data warning", w) for w in a["data_warnings"]],
    ]


def ladder_history(run: Any, market: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start times, long rung prices, short rung prices) of every centre the ladder had.

    The first centre is the first finite close; each RECENTER event moves it to the event's price
    (the new centre; its value is the old one). Prices come from the kernel's own rung function.
    """
    p = run.params.vector
    finite = np.flatnonzero(np.isfinite(market.close))
    if len(finite) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 0)), np.zeros((0, 0))
    rec = run.events[run.events["kind"] == EventKind.RECENTER]
    first = int(finite[0])
    # Decisions happen at a bar's close, so each ladder rests from the next bar's open.
    starts = np.concatenate(([market.ts[first]], rec["ts"])).astype(np.int64) + market.bar_ms
    centres = np.concatenate(([market.close[first]], rec["price"]))
    n_long, n_short = int(p[P_LEVELS_LONG]), int(p[P_LEVELS_SHORT])
    longs = np.array([[rung_price_nb(c, Side.LONG, i, p) for i in range(1, n_long + 1)] for c in centres])
    shorts = np.array([[rung_price_nb(c, Side.SHORT, i, p) for i in range(1, n_short + 1)] for c in centres])
    return starts, longs.reshape(len(centres), n_long), shorts.reshape(len(centres), n_short)


def report_data(run: Any, market: Any, stats: dict[str, Any]) -> ReportData:
    """What the charts of one run (``engine.run.RunOutput``) on its market draw."""
    from gridctl.research.results import labels, record_frame

    # The small ledgers as labelled frames; the equity curve's regime labels straight from the codes
    # (no frame and no Python string per bar: a year of 1m bars is 525,600 rows).
    frames = {t: record_frame(t, getattr(run, t)) for t in ("fills", "funding", "events")}
    eq = run.equity
    ladder_ts, ladder_long, ladder_short = ladder_history(run, market)
    fills, funding, events = frames["fills"], frames["funding"], frames["events"]
    stops = run.events[np.isin(run.events["kind"], [EventKind.DRAWDOWN_HALT, EventKind.LIQUIDATION])]
    ladder_end = float(stops["ts"][0] + market.bar_ms) if len(stops) else float(market.ts[-1] + market.bar_ms)
    return ReportData(
        title=f"gridctl backtest: {stats['strategy']} on {stats['symbol']} {stats['timeframe']}",
        bar_ms=int(market.bar_ms),
        ts=market.ts,
        close=market.close,
        equity_ts=eq["ts"],
        equity=eq["equity"],
        regime=np.array(labels(Regime), dtype=object)[eq["regime"]],
        ladder_ts=ladder_ts,
        ladder_long=ladder_long,
        ladder_short=ladder_short,
        ladder_end=ladder_end,
        fills={c: fills[c].to_numpy() for c in ("ts", "price", "qty", "level", "fee", "realized_pnl")}
        | {c: fills[c].to_list() for c in ("side", "kind")},
        funding={c: funding[c].to_numpy() for c in ("ts", "amount", "rate")},
        events={c: events[c].to_numpy() for c in ("ts", "value")}
        | {c: events[c].to_list() for c in ("kind", "reason")},
    )


def build_report(run: Any, market: Any, stats: dict[str, Any]) -> str:
    """The report of one run (``engine.run.RunOutput``) on its market, with its stats."""
    d = report_data(run, market, stats)
    return render_report(d, headline_rows(stats), assumption_rows(stats), gate_rows(stats))
