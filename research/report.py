"""The self-contained HTML report of one backtest: interactive plotly charts, then the tables a trader reads.

The charts are one plotly figure whose six panels share the time axis, so zooming into one day
zooms them all: candles (OHLC) with the entry ladder (every rung price from one centre to the next),
every fill (WebGL markers, never thinned) and the regime bands; both sides' inventory; equity next to
buy-and-hold (the initial balance in the underlying at the first close); drawdown; funding payments
per settlement; gate trips, rejections and other events in lanes. plotly.js is embedded inline, once,
so the file opens with no network.

Resolution refines on zoom: the page carries every bar's OHLC, equity and inventory once, packed
(exact integers in units of 10**-decimals, delta-coded, deflated, base64), and after every zoom or pan
a script redraws the candles at the finest period from ``CANDLE_PERIODS_MS`` that keeps at most
``MAX_CANDLES`` on screen (one day of 1m bars is 1,440 one-minute candles) and the lines with the
first, lowest, highest and last point per bucket (``minmax_indices``) of the visible range only, at
most ``MAX_CURVE_POINTS``. Fills, ladder rungs, funding and events are always drawn in full.

Below the charts: the key numbers, monthly returns (month x year), every round trip (each lot's
entry and exit, from the fills ledger) and what the run assumed.
"""

from __future__ import annotations

import base64
import html
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gridctl.configs.gates import GATES, SECTION, Gate
from gridctl.engine.enums import EventKind, FillKind, Reason, Regime, Side
from gridctl.engine.ladder import rung_price_nb
from gridctl.engine.params import P_LEVELS_LONG, P_LEVELS_SHORT
from gridctl.research.basket import SYMBOL_BRACKET_MEANING
from gridctl.research.stats import INTRABAR_PATHS, walk_lots

if TYPE_CHECKING:  # plotly loads when a figure is drawn, not for the summary rows (`gridctl backtest`)
    import plotly.graph_objects as go

#: Points drawn of each line (equity, buy-and-hold, drawdown, inventory) for the visible time range.
MAX_CURVE_POINTS = 8000
CHART_DIV_ID = "backtest-charts"
#: Plotly options of every chart: scroll to zoom, no plotly logo.
PLOT_CONFIG = {"scrollZoom": True, "displaylogo": False, "responsive": True}


def gate_events(gates: tuple[Gate, ...] = GATES) -> tuple[str, ...]:
    """Event labels that mean a risk gate acted (each row's ``trips``; the rest are bookkeeping)."""
    return tuple(e.lower() for g in gates for e in g.trips)


def stop_events(gates: tuple[Gate, ...] = GATES) -> tuple[str, ...]:
    """Event labels that end trading for good (drawn as a vertical line across the price panel)."""
    return tuple(e.lower() for g in gates if g.ends_run for e in g.trips)


GATE_EVENTS = gate_events()
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
ROW_PRICE, ROW_INVENTORY, ROW_EQUITY, ROW_DRAWDOWN, ROW_FUNDING, ROW_EVENTS = 1, 2, 3, 4, 5, 6
_ROW_TITLES = (
    "Candles (UTC), ladder rungs (dashed; the policy may rest fewer), fills; shaded: regime up / down",
    "Inventory: long and short position size (base units, bar close)",
    "Equity and buy-and-hold (USDT, bar close)",
    "Drawdown from peak (%)",
    "Funding per settlement (USDT; + received, - paid; hover: the rate)",
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
    """Everything the report draws, already in plain arrays with labels (see ``report_data``)."""

    title: str
    bar_ms: int
    initial: float  # initial balance (USDT): where equity and buy-and-hold start
    ts: np.ndarray  # bar open times (ms)
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    equity_ts: np.ndarray
    equity: np.ndarray
    long_qty: np.ndarray  # per equity row, base units
    short_qty: np.ndarray  # per equity row, base units (a size, >= 0)
    regime: Sequence[str]  # label per equity row
    ladder_ts: np.ndarray  # times the ladder (re)starts
    ladder_long: np.ndarray  # [n_centres, levels] long entry rung prices
    ladder_short: np.ndarray  # [n_centres, levels] short entry rung prices
    ladder_end: float  # when entries stopped for good (halt, liquidation) or the end of the data
    fills: dict[str, np.ndarray | list[str]]  # ts, price, qty, side, kind (+ level, fee, realized_pnl)
    funding: dict[str, np.ndarray]  # ts, amount, rate
    events: dict[str, np.ndarray | list[str]]  # ts, kind, reason, value
    trips: dict[str, list[Any]]  # round_trips() of the fills ledger


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


def buy_and_hold(close: np.ndarray, initial: float) -> np.ndarray:
    """Value of ``initial`` put into the underlying at the first finite close, at every close.

    ``initial * close / first close``; NaN where the close is missing (and everywhere without a price).
    """
    close = np.asarray(close, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(close))
    if len(finite) == 0 or close[finite[0]] <= 0:
        return np.full(len(close), np.nan)
    return initial * close / close[finite[0]]


@dataclass(frozen=True)
class MonthlyReturns:
    """Return of each calendar month (UTC) in percent: ``pct[year_row, month - 1]``, NaN without data."""

    years: list[int]
    pct: np.ndarray  # [len(years), 12]
    year_pct: np.ndarray  # [len(years)] compounded over the months present


def monthly_returns(ts: np.ndarray, equity: np.ndarray, initial: float) -> MonthlyReturns:
    """Monthly returns of an equity curve: equity at the last bar of each UTC month (month of the bar's
    open time, as the daily stats) over that of the last earlier month with data, the first month over
    ``initial``; a year's return compounds its months (last month's equity over the one before the year)."""
    ts = np.asarray(ts, dtype=np.int64)
    equity = np.asarray(equity, dtype=np.float64)
    if len(ts) == 0:
        return MonthlyReturns([], np.zeros((0, 12)), np.zeros(0))
    month_index = ts.astype("datetime64[ms]").astype("datetime64[M]").astype(np.int64)  # months since 1970-01
    last = np.flatnonzero(np.append(month_index[1:] != month_index[:-1], True))
    months = month_index[last]
    closes = equity[last]
    prev = np.concatenate(([initial], closes[:-1]))
    ret = (closes / prev - 1.0) * 100.0
    year_of = 1970 + months // 12
    years = sorted(set(year_of.tolist()))
    pct = np.full((len(years), 12), np.nan)
    year_pct = np.full(len(years), np.nan)
    for row, year in enumerate(years):
        in_year = year_of == year
        pct[row, months[in_year] % 12] = ret[in_year]
        start = prev[np.flatnonzero(in_year)[0]]
        year_pct[row] = (closes[np.flatnonzero(in_year)[-1]] / start - 1.0) * 100.0
    return MonthlyReturns(years, pct, year_pct)


#: Columns of ``round_trips``; times are bar open times (ms) of the fills, prices and money in USDT.
ROUND_TRIP_COLUMNS = (
    "side",
    "entry_ts",
    "entry_price",
    "exit_ts",
    "exit_price",
    "exit_kind",
    "qty",
    "pnl",
    "fees",
    "bars_held",
)


def round_trips(fills: np.ndarray, bar_ms: int) -> dict[str, list[Any]]:
    """Every lot's entry and exit (``research.stats.walk_lots``: a rung's entry until its TP or SL, or
    until a flatten or liquidation of its side, which shares its fee by qty). ``pnl`` is after the entry
    fee and the exit fee (as the stats' profit factor and win rate), ``fees`` is the two together,
    ``bars_held`` the number of bars from the entry's bar to the exit's (0: opened and closed inside one
    bar). Closed lots come in closing order; lots still open at the end follow in entry order with exit
    kind "open" and no exit, PnL or bars held (None).
    """
    side_names, kind_names = _labels_of(Side), _labels_of(FillKind)
    closed, still = walk_lots(fills)
    rows: list[tuple[Any, ...]] = [
        (
            side_names[lot.side],
            lot.entry_ts,
            lot.entry,
            lot.exit_ts,
            lot.exit,
            kind_names[lot.exit_kind],
            lot.qty,
            lot.pnl,
            lot.entry_fee + lot.exit_fee,
            lot.exit_ts // bar_ms
            - lot.entry_ts // bar_ms,  # bars are UTC-aligned; detail fills carry finer ts
        )
        for lot in closed
        if lot.exit_ts is not None and lot.exit_kind is not None
    ]
    rows += [
        (
            side_names[lot.side],
            lot.entry_ts,
            lot.entry,
            None,
            None,
            "open",
            lot.qty,
            None,
            lot.entry_fee,
            None,
        )
        for lot in still
    ]
    return {c: [r[i] for r in rows] for i, c in enumerate(ROUND_TRIP_COLUMNS)}


def _labels_of(enum: Any) -> list[str]:
    """Lowercase names of an enum's values, indexed by value."""
    names = [""] * (max(enum) + 1)
    for name, value in zip(enum._fields, enum, strict=True):
        names[value] = name.lower()
    return names


#: Candle periods the charts choose from (the finest that keeps at most MAX_CANDLES on screen);
#: periods that are not a whole number of the market's bars are skipped.
CANDLE_PERIODS_MS = tuple(
    m * 60_000 for m in (1, 3, 5, 15, 30, 60, 120, 240, 360, 720, 1440, 2 * 1440, 3 * 1440, 7 * 1440)
)
MAX_CANDLES = 1500


def candle_period(span_bars: int, bar_ms: int, max_candles: int = MAX_CANDLES) -> int:
    """The finest candle period (ms) that shows ``span_bars`` bars in at most ``max_candles`` candles."""
    for period in CANDLE_PERIODS_MS:
        if period >= bar_ms and period % bar_ms == 0 and span_bars * bar_ms / period <= max_candles:
            return period
    return -(-span_bars * bar_ms // (max_candles * 86_400_000)) * 86_400_000  # whole days


def candles(
    ts: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, period: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bars merged into UTC-aligned candles of ``period`` ms: (start, open, high, low, close).

    A candle opens at its first finite bar's open, closes at its last finite bar's close and spans the
    highest high and lowest low; a period without a finite bar has no candle. (The page's script
    computes the same on zoom.)
    """
    ts = np.asarray(ts, dtype=np.int64)
    ok = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c)
    ts, o, h, lo, c = ts[ok], o[ok], h[ok], lo[ok], c[ok]
    if len(ts) == 0:
        return ts, o, h, lo, c
    bucket = ts // period
    first = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    last = np.concatenate((first[1:] - 1, [len(ts) - 1]))
    return (
        bucket[first] * period,
        o[first],
        np.maximum.reduceat(h, first),
        np.minimum.reduceat(lo, first),
        c[last],
    )


def exact_decimals(values: np.ndarray, most: int = 8) -> int:
    """Fewest decimals (<= ``most``) at which every finite value is an exact decimal; ``most`` if none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    for d in range(most + 1):
        if np.array_equal(np.round(v * 10.0**d) / 10.0**d, v):
            return d
    return most


def pack(values: np.ndarray, decimals: int) -> dict[str, Any]:
    """A series as the page's script reads it: integers in units of 10**-decimals, delta-coded
    (float64, exact below 2**53), byte-shuffled, deflated and base64-encoded; NaNs in a separate mask."""
    v = np.asarray(values, dtype=np.float64)
    nan = ~np.isfinite(v)
    ints = _scaled(np.where(nan, 0.0, v), decimals)
    out: dict[str, Any] = {"decimals": decimals, "data": _deflate64(np.diff(ints, prepend=0.0))}
    if nan.any():
        out["nan"] = base64.b64encode(zlib.compress(nan.astype(np.uint8).tobytes(), 4)).decode("ascii")
    return out


def pack_ohlc(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, decimals: int) -> dict[str, Any]:
    """Bars packed as ``pack`` does, but as small numbers: the close's change from the last close, the
    open's gap from it, the upper wick (high over max(open, close)) and the lower wick. A bar with any
    NaN is NaN throughout (``nan`` mask) and keeps the last close."""
    cols = [np.asarray(x, dtype=np.float64) for x in (o, h, lo, c)]
    nan = ~np.logical_and.reduce([np.isfinite(x) for x in cols])
    last = np.maximum.accumulate(np.where(nan, 0, np.arange(len(nan))))  # the last bar with prices
    o_i, h_i, l_i, c_i = (_scaled(np.where(nan, 0.0, x), decimals)[last] for x in cols)
    o_i, h_i, l_i = (np.where(nan, c_i, x) for x in (o_i, h_i, l_i))  # a missing bar: all streams 0
    prev = np.concatenate(([0.0], c_i[:-1]))
    body_hi, body_lo = np.maximum(o_i, c_i), np.minimum(o_i, c_i)
    out: dict[str, Any] = {
        "decimals": decimals,
        "close": _deflate64(c_i - prev),
        "open": _deflate64(o_i - prev),
        "upper": _deflate64(h_i - body_hi),
        "lower": _deflate64(body_lo - l_i),
    }
    if nan.any():
        out["nan"] = base64.b64encode(zlib.compress(nan.astype(np.uint8).tobytes(), 4)).decode("ascii")
    return out


def _scaled(v: np.ndarray, decimals: int) -> np.ndarray:
    """``v`` in whole units of 10**-decimals (float64 integers; refused from 2**53 on, where they stop
    being exact)."""
    ints = np.round(v * 10.0**decimals)
    if len(ints) and np.abs(ints).max() >= 2.0**53:
        raise ValueError(f"series too large to pack at {decimals} decimals")
    return ints


def _deflate64(ints: np.ndarray) -> str:
    """float64 values byte-shuffled (all first bytes, then all second bytes, ...), deflated, base64."""
    raw = np.ascontiguousarray(ints, dtype="<f8").view(np.uint8).reshape(-1, 8).T.tobytes()
    return base64.b64encode(zlib.compress(raw, 4)).decode("ascii")


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
    period = candle_period(_span_bars(d.ts, d.bar_ms), d.bar_ms)
    x, o, h, lo, c = candles(d.ts, d.open, d.high, d.low, d.close, period)
    fig.add_trace(
        go.Candlestick(
            x=_ms(x),
            open=o,
            high=h,
            low=lo,
            close=c,
            uid="candles",
            name=f"candles {_period_label(period)}",
            increasing={"line": {"color": "#26a69a", "width": 1}, "fillcolor": "#26a69a"},
            decreasing={"line": {"color": "#ef5350", "width": 1}, "fillcolor": "#ef5350"},
            whiskerwidth=0,
        ),
        row=ROW_PRICE,
        col=1,
    )
    _add_fills(fig, d)
    kinds = list(map(str, d.events["kind"]))
    ets = np.asarray(d.events["ts"], dtype=np.int64)
    for kind in stop_events():
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


def _add_line(
    fig: go.Figure,
    row: int,
    uid: str,
    name: str,
    ts: np.ndarray,
    values: np.ndarray,
    colour: str,
    *,
    legend: str | None = None,
    step: bool = False,
    fmt: str = ",.2f",
) -> None:
    """One long curve, thinned to MAX_CURVE_POINTS (the page refines it on zoom, found by ``uid``);
    ``legend`` names the panel's own legend (none: not listed)."""
    import plotly.graph_objects as go

    idx = minmax_indices(values, MAX_CURVE_POINTS)
    fig.add_trace(
        go.Scattergl(
            x=_ms(ts[idx]),
            y=np.asarray(values, dtype=np.float64)[idx],
            uid=uid,
            name=name,
            mode="lines",
            line={"color": colour, "width": 1.2, "shape": "hv" if step else "linear"},
            hovertemplate=f"%{{x|%Y-%m-%d %H:%M}} {name} %{{y:{fmt}}}<extra></extra>",
            showlegend=legend is not None,
            legend=legend or "legend",
        ),
        row=row,
        col=1,
    )


def _span_bars(ts: np.ndarray, bar_ms: int) -> int:
    """Bars from the first bar to the last, gaps included."""
    return int((ts[-1] - ts[0]) // bar_ms) + 1 if len(ts) else 0


def _period_label(period: int) -> str:
    """A candle period as traders write it: 1m, 15m, 4h, 1d, 7d."""
    minutes = period // 60_000
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


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
    # Markers, not bars: a bar is as wide as the gap to the next settlement (8 h), which zoomed into a
    # few hours reads as funding paid over all of them.
    fig.add_trace(
        go.Scattergl(
            x=_ms(settle),
            y=total,
            customdata=rate,
            uid="funding",
            name=f"funding ({len(settle):,} settlements)",
            mode="markers",
            marker={"color": np.where(total >= 0, "#2e7d32", "#c62828").tolist(), "size": 6},
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
    """The report's interactive figure: six panels on one shared, zoomable time axis."""
    from plotly.subplots import make_subplots

    t1 = float(d.ts[-1] + d.bar_ms) if len(d.ts) else 1.0
    fig = make_subplots(
        rows=6,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.03,
        row_heights=[0.38, 0.11, 0.15, 0.1, 0.1, 0.16],
        specs=[[{"secondary_y": True}], [{}], [{}], [{}], [{}], [{}]],
        subplot_titles=_ROW_TITLES,
    )
    _add_price_panel(fig, d, t1)
    _add_inventory_equity_drawdown(fig, d)
    _add_funding(fig, d)
    lanes = _add_events(fig, d)
    _lay_out(fig, lanes)
    return fig


def _add_inventory_equity_drawdown(fig: go.Figure, d: ReportData) -> None:
    """The inventory panel (both sides' sizes), the equity panel (with buy and hold) and the drawdown."""
    rows_t = d.equity_ts + d.bar_ms
    inv, eq = "legend2", "legend3"  # each panel's lines named beside the panel
    _add_line(
        fig,
        ROW_INVENTORY,
        "long_qty",
        "long size",
        rows_t,
        d.long_qty,
        "#1565c0",
        legend=inv,
        step=True,
        fmt=",.6g",
    )
    _add_line(
        fig,
        ROW_INVENTORY,
        "short_qty",
        "short size",
        rows_t,
        d.short_qty,
        "#ef6c00",
        legend=inv,
        step=True,
        fmt=",.6g",
    )
    _add_line(fig, ROW_EQUITY, "equity", "equity", rows_t, d.equity, "#1565c0", legend=eq)
    bh = buy_and_hold(d.close, d.initial)
    _add_line(fig, ROW_EQUITY, "buyhold", "buy and hold", d.ts + d.bar_ms, bh, "#9e9e9e", legend=eq)
    _add_line(fig, ROW_DRAWDOWN, "drawdown", "drawdown %", rows_t, drawdown_pct(d.equity), "#c62828")


def _lay_out(fig: go.Figure, lanes: list[str]) -> None:
    """Shared time axis, range buttons, the events panel's lanes, legends beside their panels, size."""
    fig.update_xaxes(type="date", showspikes=True, spikemode="across", spikethickness=1)
    fig.update_xaxes(rangeslider={"visible": False})
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
        height=1500,
        margin={"l": 70, "r": 30, "t": 70, "b": 40},
        hovermode="closest",
        dragmode="zoom",
        legend={"y": 1, "yanchor": "top", "font": {"size": 11}, "groupclick": "toggleitem"},
        **{
            name: {"y": fig.layout[axis].domain[1], "yanchor": "top", "x": 1.02, "font": {"size": 11}}
            for name, axis in (("legend2", "yaxis3"), ("legend3", "yaxis4"))
        },
        font={"size": 11},
    )


def page_data(d: ReportData) -> dict[str, Any]:
    """Every bar's OHLC and every equity row's equity and inventory, packed for the page's zoom script.

    Prices and quantities are packed at the decimals that keep them exact (at most 8); equity to
    1e-4 USDT.
    """
    px = np.concatenate([np.asarray(a, dtype=np.float64) for a in (d.open, d.high, d.low, d.close)])
    p_dec = exact_decimals(px)
    q_dec = exact_decimals(np.concatenate((d.long_qty, d.short_qty)))
    return {
        "bar_ms": d.bar_ms,
        "initial": d.initial,
        "max_candles": MAX_CANDLES,
        "max_points": MAX_CURVE_POINTS,
        "periods": [p for p in CANDLE_PERIODS_MS if p >= d.bar_ms and p % d.bar_ms == 0],
        "ts": pack(d.ts, 0),
        "ohlc": pack_ohlc(d.open, d.high, d.low, d.close, p_dec),
        "rows": {
            "ts": pack(d.equity_ts, 0),
            "equity": pack(d.equity, 4),
            "long_qty": pack(d.long_qty, q_dec),
            "short_qty": pack(d.short_qty, q_dec),
        },
    }


# After every zoom or pan of the shared time axis: redraw the candles and the long lines from the
# packed full-resolution data (see the module docstring) for the visible range, then fit each value
# axis (price, inventory, equity, drawdown, funding) to the points inside it, except the one a box
# zoom just set; a double-click (autorange) shows everything again and resets them. The chart's
# ``data-views`` attribute counts the views finished (tests wait on it). Decoding the
# packed data is asynchronous; until it is done (``data-refine="ready"`` on the chart) the figure's
# own thinned data is shown and only the axes are fitted.
_ZOOM_SCRIPT = """
(function () {
  var gd = document.getElementById('{plot_id}');
  var fitted = ['y', 'y3', 'y4', 'y5', 'y6'];
  var P = JSON.parse(document.getElementById('{data_id}').textContent);
  var full = null, pending = false, busy = false, views = 0;
  function inflate(b64) {
    var bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Response(stream).arrayBuffer();
  }
  // Undo the byte shuffle: plane b holds byte b of every float64.
  function floats(buf) {
    var bytes = new Uint8Array(buf), n = bytes.length / 8, out = new Uint8Array(bytes.length);
    for (var b = 0; b < 8; b++) for (var i = 0; i < n; i++) out[i * 8 + b] = bytes[b * n + i];
    return new Float64Array(out.buffer);
  }
  function unpack(p) {
    return Promise.all([inflate(p.data), p.nan ? inflate(p.nan) : null]).then(function (r) {
      var d = floats(r[0]), nan = r[1] ? new Uint8Array(r[1]) : null;
      var out = new Float64Array(d.length), s = 0, k = Math.pow(10, p.decimals);
      for (var i = 0; i < d.length; i++) { s += d[i]; out[i] = nan && nan[i] ? NaN : s / k; }
      return out;
    });
  }
  function unpackAll(group) {
    var keys = Object.keys(group);
    return Promise.all(keys.map(function (k) { return unpack(group[k]); })).then(function (a) {
      var o = {}; keys.forEach(function (k, i) { o[k] = a[i]; }); return o;
    });
  }
  function unpackOhlc(p) {
    var parts = [p.close, p.open, p.upper, p.lower].map(inflate).concat([p.nan ? inflate(p.nan) : null]);
    return Promise.all(parts).then(function (r) {
      var dc = floats(r[0]), og = floats(r[1]), up = floats(r[2]), dn = floats(r[3]);
      var nan = r[4] ? new Uint8Array(r[4]) : null, n = dc.length, k = Math.pow(10, p.decimals), prev = 0;
      var out = { open: new Float64Array(n), high: new Float64Array(n), low: new Float64Array(n),
                  close: new Float64Array(n) };
      for (var i = 0; i < n; i++) {
        var c = prev + dc[i], o = prev + og[i];
        var h = Math.max(o, c) + up[i], l = Math.min(o, c) - dn[i], gap = nan && nan[i];
        out.open[i] = gap ? NaN : o / k; out.high[i] = gap ? NaN : h / k;
        out.low[i] = gap ? NaN : l / k; out.close[i] = gap ? NaN : c / k;
        prev = c;
      }
      return out;
    });
  }
  function plus(a, c) {
    var o = new Float64Array(a.length);
    for (var i = 0; i < a.length; i++) o[i] = a[i] + c;
    return o;
  }
  function derive(b, r) {
    var n = r.equity.length, dd = new Float64Array(n), peak = -Infinity;
    for (var i = 0; i < n; i++) {
      var e = r.equity[i];
      if (isFinite(e) && e > peak) peak = e;
      dd[i] = peak > 0 ? (e - peak) / peak * 100 : 0;
    }
    var bh = new Float64Array(b.close.length), c0 = NaN;
    for (var j = 0; j < b.close.length; j++) if (isFinite(b.close[j])) { c0 = b.close[j]; break; }
    for (var j2 = 0; j2 < b.close.length; j2++) bh[j2] = c0 > 0 ? P.initial * b.close[j2] / c0 : NaN;
    var bx = plus(b.ts, P.bar_ms), rx = plus(r.ts, P.bar_ms);
    return { bars: b, lines: [
      { uid: 'equity', x: rx, y: r.equity }, { uid: 'buyhold', x: bx, y: bh },
      { uid: 'drawdown', x: rx, y: dd }, { uid: 'long_qty', x: rx, y: r.long_qty },
      { uid: 'short_qty', x: rx, y: r.short_qty } ] };
  }
  // A date axis value (ms, or plotly's 'YYYY-MM-DD HH:MM:SS.sss' in UTC) as epoch ms.
  function toMs(v) {
    if (typeof v === 'number') return v;
    var parts = String(v).split(' '), t = Date.parse(parts[0] + 'T' + (parts[1] || '00:00') + 'Z');
    return isFinite(t) ? t : gd._fullLayout.xaxis.r2l(v);
  }
  function lowerBound(a, v) {
    var lo = 0, hi = a.length;
    while (lo < hi) { var m = (lo + hi) >> 1; if (a[m] < v) lo = m + 1; else hi = m; }
    return lo;
  }
  function period(lo, hi) {
    var span = Math.ceil((hi - lo) / P.bar_ms);
    for (var i = 0; i < P.periods.length; i++) {
      if (span * P.bar_ms / P.periods[i] <= P.max_candles) return P.periods[i];
    }
    return Math.ceil(span * P.bar_ms / (P.max_candles * 86400000)) * 86400000;
  }
  function label(p) {
    var m = p / 60000;
    return m % 1440 === 0 ? (m / 1440) + 'd' : m % 60 === 0 ? (m / 60) + 'h' : m + 'm';
  }
  // Candles of the visible range plus one period on each side, as research.report.candles makes them.
  function candles(lo, hi) {
    var b = full.bars, p = period(lo, hi);
    var i = lowerBound(b.ts, (Math.floor(lo / p) - 1) * p);
    var end = lowerBound(b.ts, (Math.floor(hi / p) + 2) * p);
    var x = [], o = [], h = [], l = [], c = [], cur = null;
    for (; i < end; i++) {
      var ok = isFinite(b.open[i]) && isFinite(b.high[i]) && isFinite(b.low[i]) && isFinite(b.close[i]);
      if (!ok) continue;
      var k = Math.floor(b.ts[i] / p);
      if (k !== cur) {
        cur = k; x.push(k * p);
        o.push(b.open[i]); h.push(b.high[i]); l.push(b.low[i]); c.push(b.close[i]);
        continue;
      }
      var last = x.length - 1;
      if (b.high[i] > h[last]) h[last] = b.high[i];
      if (b.low[i] < l[last]) l[last] = b.low[i];
      c[last] = b.close[i];
    }
    return { x: x, open: o, high: h, low: l, close: c, name: 'candles ' + label(p) };
  }
  // Indices i0..i1-1 thinned to first, lowest, highest and last point per bucket (minmax_indices).
  function minmax(y, i0, i1) {
    var n = i1 - i0, keep = [];
    if (n <= P.max_points) { for (var i = i0; i < i1; i++) keep.push(i); return keep; }
    var buckets = Math.max(1, Math.floor(P.max_points / 4));
    for (var b = 0; b < buckets; b++) {
      var a = i0 + Math.floor(b * n / buckets), z = i0 + Math.floor((b + 1) * n / buckets);
      if (z <= a) continue;
      var mn = -1, mx = -1;
      for (var j = a; j < z; j++) {
        if (!isFinite(y[j])) continue;
        if (mn < 0 || y[j] < y[mn]) mn = j;
        if (mx < 0 || y[j] > y[mx]) mx = j;
      }
      keep.push(a);
      if (mn >= 0) { keep.push(Math.min(mn, mx)); keep.push(Math.max(mn, mx)); }
      keep.push(z - 1);
    }
    return keep.filter(function (v, k) { return k === 0 || v > keep[k - 1]; });
  }
  function traceIndex(uid) {
    for (var i = 0; i < gd.data.length; i++) if (gd.data[i].uid === uid) return i;
    return -1;
  }
  // The traces' data for the time range lo..hi (ms), candles and every long line in one redraw
  // (an attribute a trace does not have is left undefined, which plotly skips).
  function refine(lo, hi) {
    var upd = { x: [], y: [], open: [], high: [], low: [], close: [], name: [] }, idx = [];
    var ci = traceIndex('candles');
    if (ci >= 0) {
      var c = candles(lo, hi);
      idx.push(ci);
      ['x', 'open', 'high', 'low', 'close', 'name'].forEach(function (k) { upd[k].push(c[k]); });
      upd.y.push(undefined);
    }
    full.lines.forEach(function (s) {
      var ti = traceIndex(s.uid);
      if (ti < 0) return;
      var i0 = Math.max(0, lowerBound(s.x, lo) - 1), i1 = Math.min(s.x.length, lowerBound(s.x, hi) + 1);
      var keep = minmax(s.y, i0, i1);
      idx.push(ti);
      upd.x.push(keep.map(function (i) { return s.x[i]; }));
      upd.y.push(keep.map(function (i) { return s.y[i]; }));
      ['open', 'high', 'low', 'close', 'name'].forEach(function (k) { upd[k].push(undefined); });
    });
    return idx.length ? Plotly.restyle(gd, upd, idx) : Promise.resolve();
  }
  function fit(ev, reset, xr) {
    var fl = gd._fullLayout, upd = {}, box = {};
    var lo = toMs(xr[0]), hi = toMs(xr[1]);
    // A panel left behind (a scripted relayout of one time axis, then the redraw re-ran the others'
    // autorange) is pinned to the range shown; only those, as each pinned axis costs a redraw.
    Object.keys(fl).forEach(function (k) {
      if (reset || !/^xaxis[0-9]*$/.test(k)) return;
      var r = fl[k].range;
      if (Math.abs(toMs(r[0]) - lo) > 1 || Math.abs(toMs(r[1]) - hi) > 1) upd[k + '.range'] = xr.slice();
    });
    gd._fullData.forEach(function (tr) {
      if (tr.visible !== true || fitted.indexOf(tr.yaxis) < 0 || !tr.x) return;
      var b = box[tr.yaxis] || (box[tr.yaxis] = [Infinity, -Infinity]);
      if (tr.uid === 'funding') { b[0] = Math.min(b[0], 0); b[1] = Math.max(b[1], 0); }
      var candle = tr.type === 'candlestick', n = tr.x.length;
      for (var i = 0; i < n; i++) {
        var x = +tr.x[i], ys = candle ? [+tr.low[i], +tr.high[i]] : [+tr.y[i]];
        if (!isFinite(ys[0])) continue;
        // A point counts when it is inside the range or its line segment to a neighbour crosses it.
        var seen = x >= lo && x <= hi;
        if (!seen && tr.mode === 'lines') {
          var prev = i > 0 ? +tr.x[i - 1] : NaN, next = i + 1 < n ? +tr.x[i + 1] : NaN;
          seen = (x < lo && next >= lo && isFinite(+tr.y[i + 1])) ||
                 (x > hi && prev <= hi && isFinite(+tr.y[i - 1]));
        }
        if (seen) ys.forEach(function (y) { if (y < b[0]) b[0] = y; if (y > b[1]) b[1] = y; });
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
    return Plotly.relayout(gd, upd);
  }
  function update(ev) {
    var keys = Object.keys(ev);
    var reset = keys.some(function (k) { return k.indexOf('autorange') >= 0; });
    var xa = gd._fullLayout.xaxis, step = Promise.resolve(), xr = xa.range.slice();
    if (full) {
      var lo = toMs(xr[0]), hi = toMs(xr[1]);
      if (reset) { lo = full.bars.ts[0]; hi = full.bars.ts[full.bars.ts.length - 1] + P.bar_ms; }
      step = refine(lo, hi);
    } else {
      pending = true;
    }
    busy = true;
    function done() { busy = false; gd.setAttribute('data-views', String(++views)); }
    return step.then(function () { return fit(ev, reset, xr); }).then(done, done);
  }
  // Hiding or showing a trace from the legend refits the value axes to what is left visible.
  gd.on('plotly_restyle', function (ev) {
    if (busy || !ev || !ev[0] || !('visible' in ev[0])) return;
    busy = true;
    function done() { busy = false; gd.setAttribute('data-views', String(++views)); }
    fit({}, false, gd._fullLayout.xaxis.range.slice()).then(done, done);
  });
  gd.on('plotly_relayout', function (ev) {
    if (busy || !ev) return;
    if (!Object.keys(ev).some(function (k) { return k.indexOf('xaxis') === 0; })) return;
    update(ev);
  });
  Promise.all([unpack(P.ts), unpackOhlc(P.ohlc), unpackAll(P.rows)]).then(function (r) {
    r[1].ts = r[0];
    full = derive(r[1], r[2]);
    var next = pending ? update({ 'xaxis.range': gd._fullLayout.xaxis.range }) : Promise.resolve();
    return next.then(function () { gd.setAttribute('data-refine', 'ready'); });
  }, function (err) { console.error('report data could not be decoded: ' + err); });
})();
"""


def _table(rows: Sequence[tuple[str, str]], table_id: str | None = None) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table id="{table_id}">{cells}</table>' if table_id else f"<table>{cells}</table>"


def benchmark_rows(d: ReportData) -> list[tuple[str, str]]:
    """The run against buy-and-hold: the initial balance in the underlying at the first close, valued
    at the last close; the run's return from its final equity."""
    bh = buy_and_hold(d.close, d.initial)
    finite = bh[np.isfinite(bh)]
    if len(finite) == 0 or len(d.equity) == 0:
        return [("Buy and hold", "n/a (no price)")]
    bh_ret = (finite[-1] / d.initial - 1.0) * 100.0
    run_ret = (float(d.equity[-1]) / d.initial - 1.0) * 100.0
    return [
        ("Buy and hold, final value", _fmt(float(finite[-1]), " USDT")),
        ("Buy and hold, return", _fmt(float(bh_ret), " %")),
        ("Run minus buy and hold", f"{run_ret - bh_ret:+,.2f} percentage points"),
    ]


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _pct_cell(value: float) -> str:
    if not np.isfinite(value):
        return "<td></td>"
    cls = "pos" if value > 0 else "neg" if value < 0 else ""
    return f'<td class="num {cls}">{value:+.2f}</td>'


def monthly_table(m: MonthlyReturns, table_id: str = "monthly-returns") -> str:
    """Month x year table of returns in percent, the year's compounded return last."""
    head = "".join(f"<th>{x}</th>" for x in ("Year", *_MONTHS, "Year %"))
    body = "".join(
        f"<tr><th>{year}</th>"
        + "".join(_pct_cell(v) for v in m.pct[row])
        + _pct_cell(m.year_pct[row])
        + "</tr>"
        for row, year in enumerate(m.years)
    )
    table = f'<table id="{table_id}" class="grid">'
    return f"{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _utc_minutes(ms: list[Any]) -> list[str]:
    """Epoch ms as 'YYYY-MM-DD HH:MM' (UTC); None stays empty."""
    known = [t for t in ms if t is not None]
    text = np.datetime_as_string(np.array(known, dtype="datetime64[ms]"), unit="m").tolist() if known else []
    it = iter(t.replace("T", " ") for t in text)
    return ["" if t is None else next(it) for t in ms]


def round_trip_table(trips: dict[str, list[Any]], price_decimals: int) -> str:
    """Every round trip as a table row (a count and the totals above it); prices with at least
    ``price_decimals`` decimals (the market's own), more only for a fill off the ticks."""
    n = len(trips["side"])
    closed = [i for i in range(n) if trips["exit_kind"][i] != "open"]
    pnl = [trips["pnl"][i] for i in closed]
    won = sum(p > 0 for p in pnl)
    summary = (
        f"{len(closed):,} round trips closed ({won:,} won, {len(closed) - won:,} lost or even), "
        f"PnL after fees {sum(pnl):,.4f} USDT, fees {sum(trips['fees'][i] for i in closed):,.4f} USDT; "
        f"{n - len(closed):,} lots still open at the end."
    )
    entry_t, exit_t = _utc_minutes(trips["entry_ts"]), _utc_minutes(trips["exit_ts"])

    def num(v: Any, digits: int) -> str:
        return "" if v is None else f"{v:,.{digits}f}"

    def qty(v: float) -> str:
        return f"{v:,.8f}".rstrip("0").rstrip(".")

    def price(v: Any) -> str:
        """At the tick's decimals; off the ticks (a stop with slippage) up to 8, no trailing zeros."""
        if v is None:
            return ""
        text = f"{v:,.8f}".rstrip("0")
        head, _, tail = text.partition(".")
        return f"{head}.{tail.ljust(price_decimals, '0')}" if price_decimals or tail else head

    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "#",
            "Side",
            "Entry (UTC)",
            "Entry price",
            "Exit (UTC)",
            "Exit price",
            "Exit",
            "Qty",
            "PnL",
            "Fees",
            "Bars held",
        )
    )
    rows = []
    for i in range(n):
        pnl_i, held = trips["pnl"][i], trips["bars_held"][i]
        cls = "" if pnl_i is None else "pos" if pnl_i > 0 else "neg" if pnl_i < 0 else ""
        cells = (
            f"<td>{i + 1}</td><td>{trips['side'][i]}</td><td>{entry_t[i]}</td>",
            f"<td class=num>{price(trips['entry_price'][i])}</td><td>{exit_t[i]}</td>",
            f"<td class=num>{price(trips['exit_price'][i])}</td><td>{trips['exit_kind'][i]}</td>",
            f'<td class=num>{qty(trips["qty"][i])}</td><td class="num {cls}">{num(pnl_i, 4)}</td>',
            f"<td class=num>{num(trips['fees'][i], 4)}</td><td class=num>{'' if held is None else held}</td>",
        )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<p class="note">{html.escape(summary)}</p><div class="scroll"><table id="round-trips" class="grid">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:20px;color:#222}"
    "table{border-collapse:collapse;margin:0 24px 16px 0;display:inline-table;vertical-align:top}"
    "th,td{border-bottom:1px solid #ddd;padding:3px 10px;text-align:left;font-size:13px}"
    "th{color:#555;font-weight:normal}p.note{color:#555;font-size:13px}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}td.pos{color:#1b5e20;background:#e8f5e9}"
    "td.neg{color:#b71c1c;background:#ffebee}table.grid thead th{position:sticky;top:0;background:#fff}"
    "div.scroll{max-height:520px;overflow:auto;display:inline-block;border:1px solid #ddd}"
)
DATA_ID = "backtest-data"


def zoomable_chart(d: ReportData, fig: go.Figure, div_id: str, data_id: str, include_plotlyjs: bool) -> str:
    """``fig`` (``backtest_figure(d)``) as HTML with its packed full-resolution data (``page_data``) in a
    JSON block ``data_id`` and the zoom script that redraws it from that data; plotly.js inline once,
    with the page's first chart (``include_plotlyjs``)."""
    data = json.dumps(page_data(d), separators=(",", ":"))
    chart = fig.to_html(
        full_html=False,
        include_plotlyjs=include_plotlyjs,
        config=PLOT_CONFIG,
        div_id=div_id,
        default_width="100%",
        post_script=_ZOOM_SCRIPT.replace("{data_id}", data_id),
    )
    return f'<script type="application/json" id="{data_id}">{data}</script>\n{chart}'


def render_report(
    d: ReportData,
    headline: Sequence[tuple[str, str]],
    assumptions: Sequence[tuple[str, str]],
    gates: Sequence[tuple[str, str]],
) -> str:
    """The whole report as one HTML string; plotly.js is inline, so it loads nothing from anywhere."""
    title = html.escape(d.title)
    chart = zoomable_chart(d, backtest_figure(d), CHART_DIV_ID, DATA_ID, include_plotlyjs=True)
    note = (
        "Drag to zoom (all panels share the time axis), double-click to zoom out, scroll to zoom, "
        f"click a legend entry to hide it. Every fill is drawn ({len(d.fills['ts']):,}). Candles and lines "
        f"redraw for the range shown: at most {MAX_CANDLES:,} candles (one day of 1m bars is 1m candles) "
        f"and {MAX_CURVE_POINTS:,} points per line (first, lowest, highest and last per bucket)."
    )
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>',
        f"<style>{_CSS}</style></head><body><h1>{title}</h1>",
        f'<p class="note">{html.escape(note)}</p>',
        chart,
        "<h2>Results</h2>",
        _table(headline),
        _table(benchmark_rows(d), "benchmark"),
        _table(gates),
        "<h2>Monthly returns (%, equity at each UTC month's last bar over the previous month's)</h2>",
        monthly_table(monthly_returns(d.equity_ts, d.equity, d.initial)),
        "<h2>Round trips (each lot's entry and exit; PnL after both fees)</h2>",
        round_trip_table(d.trips, exact_decimals(d.close)),
        "<h2>What this run assumed</h2>",
        _table(assumptions),
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
        ("Calmar (CAGR / max bar-close drawdown)", _fmt(s["calmar"])),
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
    if b is not None and "pnl" in b["worst"]:
        rows += symbol_path_rows(b)
    elif b is not None:
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
                f"{stats['same_bar_round_trips']:,}, PnL after fees "
                + _fmt(stats["same_bar_round_trip_pnl"], " USDT"),
            )
        )
    return rows


def gate_status_rows(stats: dict[str, Any], gates: tuple[Gate, ...] = GATES) -> list[tuple[str, str]]:
    """One row per gate of the gate table: off (its switch named), how often it acted, or "on" for a gate
    with no event of its own.

    A gate that ends the run (``ends_run``: drawdown halt, liquidation) acts once at most; a basket's
    account records its one stop in every symbol's ledger, so its event rows (the ``event:`` row) count
    the symbols, not the times it acted."""
    off = set(stats["assumptions"]["gates_disabled"])
    rows = []
    for g in gates:
        switch = f"{SECTION}.{g.switch}" if g.switch else None
        if switch in off:
            rows.append((f"gate: {g.title}", f"off ({switch})"))
        elif not g.trips:  # acts without an event of its own (validation: the "rejected:" rows)
            rows.append((f"gate: {g.title}", "on"))
        else:
            n = sum(stats["events"].get(e.lower(), 0) for e in g.trips)
            if g.ends_run:
                n = min(n, 1)
            rows.append((f"gate: {g.title}", f"acted {n:,} times" if n != 1 else "acted once"))
    return rows


def gate_rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """Gate trips, each gate's status, rejections and other event counts of a run."""
    tripped = [k for k in GATE_EVENTS if stats["events"].get(k)]
    rows = [("Gates tripped", ", ".join(tripped) or "none"), *gate_status_rows(stats)]
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
    """What the charts and tables of one run (``engine.run.RunOutput``) on its market show."""
    eq = run.equity
    ladder_ts, ladder_long, ladder_short = ladder_history(run, market)
    stops = run.events[np.isin(run.events["kind"], [getattr(EventKind, e.upper()) for e in stop_events()])]
    ladder_end = float(stops["ts"][0] + market.bar_ms) if len(stops) else float(market.ts[-1] + market.bar_ms)
    f, fu, ev = run.fills, run.funding, run.events
    return ReportData(
        title=f"gridctl backtest: {stats['strategy']} on {stats['symbol']} {stats['timeframe']}",
        bar_ms=int(market.bar_ms),
        initial=float(stats["initial_balance"]),
        ts=market.ts,
        open=market.open,
        high=market.high,
        low=market.low,
        close=market.close,
        equity_ts=eq["ts"],
        equity=eq["equity"],
        long_qty=eq["long_qty"],
        short_qty=eq["short_qty"],
        # The regime labels straight from the codes (no Python string per bar of a year of 1m bars).
        regime=np.array(_labels_of(Regime), dtype=object)[eq["regime"]],
        ladder_ts=ladder_ts,
        ladder_long=ladder_long,
        ladder_short=ladder_short,
        ladder_end=ladder_end,
        fills={c: np.ascontiguousarray(f[c]) for c in ("ts", "price", "qty", "level", "fee", "realized_pnl")}
        | {"side": _decode(f["side"], Side), "kind": _decode(f["kind"], FillKind)},
        funding={c: np.ascontiguousarray(fu[c]) for c in ("ts", "amount", "rate")},
        events={c: np.ascontiguousarray(ev[c]) for c in ("ts", "value")}
        | {"kind": _decode(ev["kind"], EventKind), "reason": _decode(ev["reason"], Reason)},
        trips=round_trips(f, int(market.bar_ms)),
    )


def _decode(codes: np.ndarray, enum: Any) -> list[str]:
    """Enum codes as their lowercase labels ("" for a code outside the enum, such as side -1)."""
    names = _labels_of(enum)
    return [names[c] if 0 <= c < len(names) else "" for c in codes.tolist()]


def build_report(run: Any, market: Any, stats: dict[str, Any]) -> str:
    """The report of one run (``engine.run.RunOutput``) on its market, with its stats."""
    d = report_data(run, market, stats)
    return render_report(d, headline_rows(stats), assumption_rows(stats), gate_rows(stats))


# ----------------------------------------------------------------------------------------------------
# Basket report: the account first, then one section per symbol
# ----------------------------------------------------------------------------------------------------

BASKET_CHART_ID = "basket-account-chart"


def symbol_path_rows(b: dict[str, Any]) -> list[tuple[str, str]]:
    """A basket symbol's path bracket (``research.basket.symbol_bracket``): its PnL in the account run
    under each rule, and its own worst and best with the rules that give them."""
    worst, best = b["worst"], b["best"]
    rows = [
        (
            "PnL in the account run, worst / best path",
            f"{_fmt(worst['pnl'], ' USDT')} ({_rule_names(worst['rules'])}) / "
            f"{_fmt(best['pnl'], ' USDT')} ({_rule_names(best['rules'])}); ran: {b['rule']}",
        )
    ]
    for rule in INTRABAR_PATHS:
        e = b[rule]
        rows.append(
            (f"PnL, {rule.replace('_', ' ')} (fills)", f"{_fmt(e['pnl'], ' USDT')} ({e['n_fills']:,})")
        )
    rows.append(("Path bracket of a symbol", b["meaning"]))
    return rows


def _rule_names(rules: list[str]) -> str:
    return "every rule" if len(rules) == len(INTRABAR_PATHS) else ", ".join(rules)


def _bracket_cell(side: dict[str, Any]) -> str:
    return f"{_fmt(side['pnl'])} ({_rule_names(side['rules'])})"


def basket_symbol_rows(stats: dict[str, Any]) -> list[tuple[str, ...]]:
    """A header and one row per symbol: the symbol's PnL and what made it, and its PnL under its worst and
    best intrabar rule in the account runs, naming the rules (CLI summary and report)."""
    rows: list[tuple[str, ...]] = [
        (
            "symbol", "PnL", "return", "realized", "fees", "funding", "fills", "DD bar close", "liquidated",
            "PnL worst path (rules)", "PnL best path (rules)",
        )
    ]  # fmt: skip
    for symbol, s in stats["symbols"].items():
        funding = s["funding_received"] - s["funding_paid"]
        b = s["path_bracket"]
        rows.append(
            (
                symbol,
                _fmt(s["pnl"], " USDT"),
                _fmt(s["total_return_pct"], " %"),
                _fmt(s["realized_pnl"]),
                _fmt(s["fees_paid"]),
                _fmt(funding),
                f"{s['n_fills']:,}",
                _fmt(s["max_drawdown_bar_close_pct"], " %"),
                "yes" if s["liquidated"] else "no",
                _bracket_cell(b["worst"]),
                _bracket_cell(b["best"]),
            )
        )
    return rows


def basket_bracket_note(stats: dict[str, Any]) -> str:
    """What the per-symbol path bracket columns mean, with the account's worst / best return rules."""
    b = stats["account"]["path_bracket"]
    worst, best = b["worst"], b["best"]
    stops = [
        f"{rule}: {what} at {b[rule][key]}"
        for rule in INTRABAR_PATHS
        for key, what in (("liquidated_at", "liquidated"), ("halted_at", "drawdown halt"))
        if b[rule].get(key)
    ]
    stopped = f" The account stopped every symbol under {'; '.join(stops)}." if stops else ""
    return (
        f"Path bracket per symbol: {SYMBOL_BRACKET_MEANING}. The account's return is worst under "
        f"{_rule_names(worst['return_rules'])} ({_fmt(worst['total_return_pct'], ' %')}) and best under "
        f"{_rule_names(best['return_rules'])} ({_fmt(best['total_return_pct'], ' %')}).{stopped}"
    )


def _grid_table(rows: Sequence[Sequence[str]]) -> str:
    head, *body = rows
    out = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    for row in body:
        out += "</tr><tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row)
    return f"<table><tr>{out}</tr></table>"


#: What the basket's buy-and-hold line is (the account chart's legend and the benchmark table say it).
BASKET_BUY_AND_HOLD = (
    "buy and hold: the initial balance split equally across the symbols, each share bought at the "
    "symbol's close of the first bar every symbol has, held (a missing close keeps the last one)"
)


def basket_buy_and_hold(ts: np.ndarray, markets: Sequence[Any], initial: float) -> np.ndarray:
    """Value at each time of ``ts`` of ``initial`` split equally across ``markets`` (each with ``ts``
    and ``close``), each share bought at its close of the first time in ``ts`` where every market
    has a finite close: sum over symbols of ``initial / N * close / first close``. A market without a
    bar (or with a NaN close) at a later time counts at its last close; NaN before the common start
    (and everywhere without one)."""
    ts = np.asarray(ts, dtype=np.int64)
    closes = np.full((len(markets), len(ts)), np.nan)
    for row, m in enumerate(markets):
        idx = np.searchsorted(m.ts, ts)
        inside = idx < len(m.ts)
        hit = np.zeros(len(ts), dtype=bool)
        hit[inside] = m.ts[idx[inside]] == ts[inside]
        closes[row, hit] = np.asarray(m.close, dtype=np.float64)[idx[hit]]
    common = np.flatnonzero(np.isfinite(closes).all(axis=0))
    out = np.full(len(ts), np.nan)
    if len(markets) == 0 or len(common) == 0 or (closes[:, common[0]] <= 0).any():
        return out
    start = int(common[0])
    held = closes[:, start:]
    for row in range(len(markets)):  # carry the last close over a missing one
        known = np.where(np.isfinite(held[row]), np.arange(held.shape[1]), 0)
        held[row] = held[row, np.maximum.accumulate(known)]
    out[start:] = (initial / len(markets) * held / closes[:, start : start + 1]).sum(axis=0)
    return out


def basket_benchmark_rows(equity: np.ndarray, bh: np.ndarray, initial: float) -> list[tuple[str, str]]:
    """The account against the basket's buy-and-hold (``basket_buy_and_hold``) at the last row."""
    finite = bh[np.isfinite(bh)]
    if len(finite) == 0 or len(equity) == 0:
        return [("Basket buy and hold", "n/a (no bar where every symbol has a close)")]
    bh_ret = (finite[-1] / initial - 1.0) * 100.0
    run_ret = (float(equity[-1]) / initial - 1.0) * 100.0
    return [
        ("Basket buy and hold", BASKET_BUY_AND_HOLD),
        ("Basket buy and hold, final value", _fmt(float(finite[-1]), " USDT")),
        ("Basket buy and hold, return", _fmt(float(bh_ret), " %")),
        ("Account minus buy and hold", f"{run_ret - bh_ret:+,.2f} percentage points"),
    ]


def account_buy_and_hold(basket: Any) -> np.ndarray:
    """The basket's buy-and-hold at each account equity row (``basket_buy_and_hold``)."""
    acc = basket.output.account_equity
    markets = [basket.markets[s] for s in basket.output.per_symbol]
    return basket_buy_and_hold(acc["ts"], markets, float(basket.stats["account"]["initial_balance"]))


def basket_figure(basket: Any) -> go.Figure:
    """Account equity with the basket's buy-and-hold, drawdown, and each symbol's contribution (its PnL)
    over time; every line WebGL, at most ``MAX_CURVE_POINTS`` per line (``minmax_indices``)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from gridctl.research.basket import contribution_curve

    acc = basket.output.account_equity
    initial = float(basket.stats["account"]["initial_balance"])
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.05,
        subplot_titles=(
            "Account equity and the basket's buy-and-hold (USDT, bar close, every symbol marked)",
            "Account drawdown from peak (%)",
            "Each symbol's PnL: realized - fees + funding + unrealized (USDT)",
        ),
    )
    keep = minmax_indices(acc["equity"])
    t = _ms(acc["ts"][keep])
    fig.add_trace(go.Scattergl(x=t, y=acc["equity"][keep], name="account equity", mode="lines"), row=1, col=1)
    bh = account_buy_and_hold(basket)
    sel = minmax_indices(bh)
    fig.add_trace(
        go.Scattergl(
            x=_ms(acc["ts"][sel]),
            y=bh[sel],
            name=BASKET_BUY_AND_HOLD,
            mode="lines",
            line={"color": "#9e9e9e"},
        ),
        row=1,
        col=1,
    )
    dd = drawdown_pct(np.concatenate(([initial], acc["equity"])))[1:]
    fig.add_trace(go.Scattergl(x=t, y=dd[keep], name="drawdown", mode="lines"), row=2, col=1)
    for symbol, run in basket.output.per_symbol.items():
        curve = contribution_curve(run, basket.markets[symbol].bar_ms, initial)
        sel = minmax_indices(curve["equity"])
        fig.add_trace(
            go.Scattergl(
                x=_ms(curve["ts"][sel]), y=curve["equity"][sel] - initial, name=symbol, mode="lines"
            ),
            row=3,
            col=1,
        )
    fig.update_xaxes(type="date")  # epoch ms as UTC dates, as the symbols' charts show them
    fig.update_layout(
        height=900,
        margin={"l": 60, "r": 20, "t": 40, "b": 30},
        hovermode="x unified",
        legend={"orientation": "h", "y": -0.05, "yanchor": "top"},
    )
    return fig


def symbol_report_data(run: Any, market: Any, stats: dict[str, Any]) -> ReportData:
    """A basket symbol's ``ReportData``: its own candles, fills, ladder, inventory, funding and events,
    its equity line the symbol's contribution curve (``research.basket.contribution_curve``: the
    initial balance plus what the symbol added), against buy-and-hold of the initial balance in it."""
    import dataclasses

    from gridctl.research.basket import contribution_curve

    d = report_data(run, market, stats)
    curve = contribution_curve(run, int(market.bar_ms), d.initial)
    return dataclasses.replace(d, equity=curve["equity"])


_SYMBOL_EQUITY_TITLE = (
    "Contribution (initial balance + this symbol's PnL) and buy-and-hold of the initial balance in it (USDT)"
)


def symbol_section(index: int, symbol: str, s: dict[str, Any], run: Any, market: Any) -> list[str]:
    """One basket symbol's part of the report: the single report's figure (candles, ladder, fills, both
    sides' inventory, contribution with buy-and-hold, drawdown, funding, events) with its zoom script,
    then its numbers, monthly returns and round trips."""
    d = symbol_report_data(run, market, s)
    fig = backtest_figure(d)
    fig.layout.annotations[ROW_EQUITY - 1].text = _SYMBOL_EQUITY_TITLE
    chart = zoomable_chart(d, fig, f"basket-symbol-{index}", f"basket-symbol-data-{index}", False)
    name = html.escape(symbol)
    return [
        f'<h2 id="symbol-{name}">{name}</h2>',
        chart,
        _table(headline_rows(s)),
        _table(benchmark_rows(d)),
        _table(gate_rows(s)),
        _table(assumption_rows(s)),
        f"<h3>{name}: monthly returns of its contribution curve (%)</h3>",
        monthly_table(monthly_returns(d.equity_ts, d.equity, d.initial), f"monthly-returns-{index}"),
        "<h3>Round trips (each lot's entry and exit; PnL after both fees)</h3>",
        round_trip_table(d.trips, exact_decimals(market.close)),
    ]


def build_basket_report(basket: Any) -> str:
    """The report of a basket run (``research.basket.BasketBacktest``): the account's chart (with the
    basket's buy-and-hold), key numbers and monthly returns, a per-symbol table, then each symbol's
    section (``symbol_section``)."""
    stats = basket.stats
    a = stats["account"]
    acc = basket.output.account_equity
    initial = float(a["initial_balance"])
    title = html.escape(
        f"gridctl basket backtest: {stats['strategy']} on {', '.join(stats['basket'])} {stats['timeframe']}"
    )
    chart = basket_figure(basket).to_html(
        full_html=False,
        include_plotlyjs=True,
        config=PLOT_CONFIG,
        div_id=BASKET_CHART_ID,
        default_width="100%",
    )
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>',
        f"<style>{_CSS}</style></head><body><h1>{title}</h1>",
        '<h2 id="account">Account (one cross-margin wallet)</h2>',
        chart,
        _table(headline_rows(a)),
        _table(basket_benchmark_rows(acc["equity"], account_buy_and_hold(basket), initial), "benchmark"),
        _table(gate_rows(a)),
        "<h2>Per symbol (PnL = what the symbol added to the account)</h2>",
        _grid_table(basket_symbol_rows(stats)),
        f'<p id="symbol-bracket-note">{html.escape(basket_bracket_note(stats))}</p>',
        "<h2>Monthly returns of the account (%)</h2>",
        monthly_table(monthly_returns(acc["ts"], acc["equity"], initial)),
        "<h2>What this run assumed</h2>",
        _table(assumption_rows(a)),
    ]
    for index, (symbol, s) in enumerate(stats["symbols"].items()):
        run = basket.output.per_symbol[symbol]
        parts += symbol_section(index, symbol, s, run, basket.markets[symbol])
    parts.append("</body></html>")
    return "\n".join(parts)
