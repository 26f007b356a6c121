"""The self-contained HTML report of one backtest: tables of the stats plus hand-made SVG charts.

Why SVG and not a plotting library: the file must open with no network and stay small, so every
chart is drawn here as inline SVG (hover a point for its `<title>` tooltip). Long curves are
downsampled per bucket keeping the first, lowest, highest and last point, so extremes such as the
deepest drawdown survive. The charts share one time axis: price with the entry ladder, fills and
regime bands; equity; drawdown; funding payments; gate trips and rejections.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from engine.enums import EventKind, Side
from engine.ladder import rung_price_nb
from engine.params import P_LEVELS_LONG, P_LEVELS_SHORT

MAX_CURVE_POINTS = 5000
MAX_MARKERS = 4000
WIDTH = 1200
PLOT_LEFT = 80
PLOT_RIGHT = 20

# Event kinds that mean a risk gate acted (the rest are bookkeeping: re-centres, data gaps, ...).
GATE_EVENTS = (
    "drawdown_halt",
    "circuit_breaker_trip",
    "reducing_on",
    "funding_unknown",
    "input_missing",
    "liquidation",
)
_REGIME_COLOURS = {"up": "#2e7d32", "down": "#c62828"}
_KIND_COLOURS = {
    "entry": "#1565c0",
    "tp": "#2e7d32",
    "sl": "#c62828",
    "flatten": "#6a1b9a",
    "liquidation": "#000000",
}


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
    keep: list[int] = []
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        chunk = values[lo:hi]
        finite = np.isfinite(chunk)
        picks = [lo, hi - 1]
        if finite.any():
            masked_lo = np.where(finite, chunk, np.inf)
            masked_hi = np.where(finite, chunk, -np.inf)
            picks += [lo + int(np.argmin(masked_lo)), lo + int(np.argmax(masked_hi))]
        keep.extend(picks)
    return np.unique(np.asarray(keep, dtype=np.int64))


@dataclass(frozen=True)
class _Axis:
    """Maps data coordinates of one chart panel to SVG pixels."""

    t0: float
    t1: float
    y0: float
    y1: float
    height: int
    top: int = 10
    bottom: int = 28

    def x(self, t: np.ndarray | float) -> np.ndarray | float:
        span = self.t1 - self.t0 or 1.0
        return PLOT_LEFT + (np.asarray(t, dtype=np.float64) - self.t0) / span * (
            WIDTH - PLOT_LEFT - PLOT_RIGHT
        )

    def y(self, v: np.ndarray | float) -> np.ndarray | float:
        span = self.y1 - self.y0 or 1.0
        inner = self.height - self.top - self.bottom
        return self.top + (self.y1 - np.asarray(v, dtype=np.float64)) / span * inner


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round-numbered ticks covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


_TIME_STEPS_MS = [
    m * 60_000 for m in (1, 5, 15, 30, 60, 120, 240, 360, 720, 1440, 2880, 7 * 1440, 14 * 1440, 30 * 1440)
]


def _time_ticks(t0: float, t1: float, count: int = 8) -> list[tuple[float, str]]:
    """UTC-aligned time ticks with labels; dates for day steps, times for shorter steps."""
    span = max(t1 - t0, 1.0)
    step = next((s for s in _TIME_STEPS_MS if span / s <= count), _TIME_STEPS_MS[-1])
    first = math.ceil(t0 / step) * step
    fmt = "%Y-%m-%d" if step >= 86_400_000 else "%m-%d %H:%M"
    ticks = []
    t = first
    while t <= t1:
        ticks.append((t, datetime.fromtimestamp(t / 1000, tz=UTC).strftime(fmt)))
        t += step
    return ticks


def _fmt_num(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def _path(xs: np.ndarray, ys: np.ndarray) -> str:
    """SVG path data through the finite points; a non-finite point breaks the line."""
    parts: list[str] = []
    pen_down = False
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        if not (math.isfinite(x) and math.isfinite(y)):
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{x:.1f} {y:.1f}")
        pen_down = True
    return "".join(parts)


def _frame(ax: _Axis, title: str, y_fmt: Any = _fmt_num) -> list[str]:
    """Panel border, y grid with labels, time axis and title."""
    out = [
        f'<rect x="{PLOT_LEFT}" y="{ax.top}" width="{WIDTH - PLOT_LEFT - PLOT_RIGHT}" '
        f'height="{ax.height - ax.top - ax.bottom}" fill="none" stroke="#bbb"/>',
        f'<text x="{PLOT_LEFT + 4}" y="{ax.top + 12}" class="t">{html.escape(title)}</text>',
    ]
    for v in _nice_ticks(ax.y0, ax.y1):
        yy = float(ax.y(v))
        out.append(
            f'<line x1="{PLOT_LEFT}" x2="{WIDTH - PLOT_RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" class="g"/>'
        )
        out.append(f'<text x="{PLOT_LEFT - 4}" y="{yy + 4:.1f}" text-anchor="end">{y_fmt(v)}</text>')
    base = ax.height - ax.bottom
    for t, label in _time_ticks(ax.t0, ax.t1):
        xx = float(ax.x(t))
        out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{ax.top}" y2="{base}" class="g"/>')
        out.append(f'<text x="{xx:.1f}" y="{base + 16}" text-anchor="middle">{label}</text>')
    return out


def _svg(height: int, body: list[str]) -> str:
    return (
        f'<svg width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">' + "".join(body) + "</svg>"
    )


def _y_range(*arrays: np.ndarray, pad: float = 0.05) -> tuple[float, float]:
    finite = [a[np.isfinite(a)] for a in arrays if len(a)]
    finite = [a for a in finite if len(a)]
    if not finite:
        return 0.0, 1.0
    lo = float(min(a.min() for a in finite))
    hi = float(max(a.max() for a in finite))
    if hi == lo:
        lo, hi = lo - 1.0, hi + 1.0
    margin = (hi - lo) * pad
    return lo - margin, hi + margin


def _spaced(n: int, limit: int) -> np.ndarray:
    """At most ``limit`` evenly spaced indices out of ``n``."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).astype(np.int64))


def _ts_label(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


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
    fills: dict[str, np.ndarray | list[str]]  # ts, price, qty, side, kind
    funding: dict[str, np.ndarray]  # ts, amount, rate
    events: dict[str, np.ndarray | list[str]]  # ts, kind, reason, value


def _price_chart(d: ReportData) -> str:
    height = 420
    t0 = float(d.ts[0]) if len(d.ts) else 0.0
    t1 = float(d.ts[-1] + d.bar_ms) if len(d.ts) else 1.0
    idx = minmax_indices(d.close)
    fill_price = np.asarray(d.fills["price"], dtype=np.float64)
    y0, y1 = _y_range(d.close, fill_price, d.ladder_long.ravel(), d.ladder_short.ravel())
    ax = _Axis(t0, t1, y0, y1, height)
    body: list[str] = []
    # Regime bands: the regime per pixel column, merged into runs.
    if len(d.regime):
        reg = np.asarray(d.regime, dtype=object)
        cols = _spaced(len(reg), WIDTH - PLOT_LEFT - PLOT_RIGHT)
        sampled = reg[cols]
        for a, b in _runs(sampled):
            label = str(sampled[a])
            if label not in _REGIME_COLOURS:
                continue
            xa = float(ax.x(d.equity_ts[cols[a]]))
            xb = float(ax.x(d.equity_ts[cols[b - 1]] + d.bar_ms)) if b < len(cols) else WIDTH - PLOT_RIGHT
            body.append(
                f'<rect x="{xa:.1f}" y="{ax.top}" width="{max(xb - xa, 0.5):.1f}" '
                f'height="{height - ax.top - ax.bottom}" fill="{_REGIME_COLOURS[label]}" '
                f'fill-opacity="0.08"><title>regime {label}</title></rect>'
            )
    body += _frame(
        ax,
        "Price (close); dashed: every ladder rung (the policy may rest fewer); fills; "
        "shaded: regime up (green) / down (red)",
    )
    # Ladder: each rung price as a step line from one centre to the next.
    ends = np.minimum(np.concatenate((d.ladder_ts[1:], [t1])), d.ladder_end) if len(d.ladder_ts) else []
    for prices, colour in ((d.ladder_long, "#1565c0"), (d.ladder_short, "#ef6c00")):
        for j in range(len(d.ladder_ts)):
            if d.ladder_ts[j] >= ends[j]:
                continue
            for p in prices[j]:
                if not math.isfinite(p):
                    continue
                yy = float(ax.y(p))
                body.append(
                    f'<line x1="{float(ax.x(d.ladder_ts[j])):.1f}" x2="{float(ax.x(ends[j])):.1f}" '
                    f'y1="{yy:.1f}" y2="{yy:.1f}" stroke="{colour}" stroke-opacity="0.35" '
                    f'stroke-dasharray="3 3"/>'
                )
    xs = ax.x(d.ts[idx] + d.bar_ms)
    body.append(f'<path d="{_path(xs, ax.y(d.close[idx]))}" fill="none" stroke="#333" stroke-width="1"/>')
    n_fills = len(fill_price)
    show = _spaced(n_fills, MAX_MARKERS)
    fts = np.asarray(d.fills["ts"])
    for i in show.tolist():
        kind = str(d.fills["kind"][i])
        side = str(d.fills["side"][i])
        xx, yy = float(ax.x(fts[i])), float(ax.y(fill_price[i]))
        tip = html.escape(
            f"{_ts_label(int(fts[i]))} {side} {kind} {float(d.fills['qty'][i]):g} @ {fill_price[i]:g}"
        )
        colour = _KIND_COLOURS.get(kind, "#555")
        if kind == "entry":
            # Triangle up for a long entry (buy), down for a short entry (sell).
            dy = -5 if side == "long" else 5
            pts = f"{xx - 4:.1f},{yy - dy:.1f} {xx + 4:.1f},{yy - dy:.1f} {xx:.1f},{yy + dy:.1f}"
            body.append(f'<polygon points="{pts}" fill="{colour}"><title>{tip}</title></polygon>')
        else:
            body.append(
                f'<circle cx="{xx:.1f}" cy="{yy:.1f}" r="3" fill="{colour}"><title>{tip}</title></circle>'
            )
    note = f"{n_fills} fills" if len(show) == n_fills else f"showing {len(show)} of {n_fills} fills"
    body.append(f'<text x="{WIDTH - PLOT_RIGHT - 4}" y="{ax.top + 12}" text-anchor="end">{note}</text>')
    return _svg(height, body)


def _line_chart(title: str, ts: np.ndarray, values: np.ndarray, t0: float, t1: float, colour: str) -> str:
    height = 220
    idx = minmax_indices(values)
    y0, y1 = _y_range(values)
    ax = _Axis(t0, t1, y0, y1, height)
    body = _frame(ax, title)
    body.append(
        f'<path d="{_path(ax.x(ts[idx]), ax.y(values[idx]))}" fill="none" '
        f'stroke="{colour}" stroke-width="1.2"/>'
    )
    return _svg(height, body)


def _funding_chart(d: ReportData, t0: float, t1: float) -> str:
    height = 200
    ts = np.asarray(d.funding["ts"], dtype=np.int64)
    amount = np.asarray(d.funding["amount"], dtype=np.float64)
    settle, first, inverse = np.unique(ts, return_index=True, return_inverse=True)
    total = np.zeros(len(settle))
    np.add.at(total, inverse, amount)
    rate = np.asarray(d.funding["rate"], dtype=np.float64)[first]  # one rate per settlement
    y0, y1 = _y_range(np.concatenate((total, [0.0])))
    ax = _Axis(t0, t1, y0, y1, height)
    body = _frame(ax, "Funding payments per settlement (USDT; + received, - paid)")
    zero = float(ax.y(0.0))
    for t, v, r in zip(settle.tolist(), total.tolist(), rate.tolist(), strict=True):
        xx, yy = float(ax.x(t)), float(ax.y(v))
        colour = "#2e7d32" if v >= 0 else "#c62828"
        body.append(
            f'<rect x="{xx - 1:.1f}" y="{min(yy, zero):.1f}" width="2" '
            f'height="{max(abs(zero - yy), 0.5):.1f}" '
            f'fill="{colour}"><title>{_ts_label(t)} rate {r * 100:+.4f} %: {v:+.4f} USDT</title></rect>'
        )
    return _svg(height, body)


def _events_chart(d: ReportData, t0: float, t1: float) -> str:
    kinds = sorted(set(map(str, d.events["kind"])))
    lane_h = 22
    height = 60 + lane_h * max(len(kinds), 1)
    ax = _Axis(t0, t1, 0.0, 1.0, height)
    body = [
        f'<text x="{PLOT_LEFT + 4}" y="{ax.top + 12}" class="t">'
        "Gate trips, rejections and other events</text>"
    ]
    base = height - ax.bottom
    for t, label in _time_ticks(t0, t1):
        xx = float(ax.x(t))
        body.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{ax.top + 16}" y2="{base}" class="g"/>')
        body.append(f'<text x="{xx:.1f}" y="{base + 16}" text-anchor="middle">{label}</text>')
    if not kinds:
        body.append(f'<text x="{PLOT_LEFT + 4}" y="{ax.top + 34}">no events</text>')
    ets = np.asarray(d.events["ts"], dtype=np.int64)
    kind_arr = np.asarray(d.events["kind"], dtype=object)
    for lane, kind in enumerate(kinds):
        yy = ax.top + 28 + lane * lane_h
        body.append(f'<text x="{PLOT_LEFT - 4}" y="{yy + 4}" text-anchor="end">{html.escape(kind)}</text>')
        rows = np.flatnonzero(kind_arr == kind)
        for i in rows[_spaced(len(rows), MAX_MARKERS)].tolist():
            xx = float(ax.x(ets[i]))
            tip = html.escape(
                f"{_ts_label(int(ets[i]))} {kind} {d.events['reason'][i]} "
                f"value={float(d.events['value'][i]):g}"
            )
            body.append(f'<circle cx="{xx:.1f}" cy="{yy}" r="3" fill="#c62828"><title>{tip}</title></circle>')
        body.append(f'<text x="{WIDTH - PLOT_RIGHT - 4}" y="{yy + 4}" text-anchor="end">{len(rows)}</text>')
    return _svg(height, body)


def _table(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:20px;color:#222}"
    "table{border-collapse:collapse;margin:0 24px 16px 0;display:inline-table;vertical-align:top}"
    "th,td{border-bottom:1px solid #ddd;padding:3px 10px;text-align:left;font-size:13px}"
    "th{color:#555;font-weight:normal}svg{display:block;margin:6px 0}"
    "svg text{font-size:11px;fill:#444}svg text.t{font-size:12px;fill:#111;font-weight:bold}"
    "svg line.g{stroke:#eee}"
)


def render_report(
    d: ReportData,
    headline: Sequence[tuple[str, str]],
    assumptions: Sequence[tuple[str, str]],
    gates: Sequence[tuple[str, str]],
) -> str:
    """The whole report as one HTML string; it loads nothing from anywhere."""
    t0 = float(d.ts[0]) if len(d.ts) else 0.0
    t1 = float(d.ts[-1] + d.bar_ms) if len(d.ts) else 1.0
    peak = (
        np.maximum.accumulate(np.where(np.isfinite(d.equity), d.equity, -np.inf))
        if len(d.equity)
        else d.equity
    )
    drawdown = np.where(peak > 0, (d.equity - peak) / np.where(peak > 0, peak, 1.0) * 100.0, 0.0)
    title = html.escape(d.title)
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>',
        f"<style>{_CSS}</style></head><body><h1>{title}</h1>",
        "<h2>Results</h2>",
        _table(headline),
        _table(gates),
        "<h2>What this run assumed</h2>",
        _table(assumptions),
        "<h2>Charts</h2>",
        _price_chart(d),
        _line_chart("Equity (USDT, bar close)", d.equity_ts + d.bar_ms, d.equity, t0, t1, "#1565c0"),
        _line_chart("Drawdown from peak (%)", d.equity_ts + d.bar_ms, drawdown, t0, t1, "#c62828"),
        _funding_chart(d, t0, t1),
        _events_chart(d, t0, t1),
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
    ]


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
        ("Funding mark price", marks),
        ("Gates disabled", ", ".join(a["gates_disabled"]) or "none"),
        ("Intrabar path", a["intrabar_path"]),
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


def build_report(run: Any, market: Any, stats: dict[str, Any]) -> str:
    """The report of one run (``engine.run.RunOutput``) on its market, with its stats."""
    from research.results import result_frames  # results imports this module

    frames = result_frames(run)
    eq = run.equity
    ladder_ts, ladder_long, ladder_short = ladder_history(run, market)
    fills, funding, events = frames["fills"], frames["funding"], frames["events"]
    stops = run.events[np.isin(run.events["kind"], [EventKind.DRAWDOWN_HALT, EventKind.LIQUIDATION])]
    ladder_end = float(stops["ts"][0] + market.bar_ms) if len(stops) else float(market.ts[-1] + market.bar_ms)
    d = ReportData(
        title=f"gridctl backtest: {stats['strategy']} on {stats['symbol']} {stats['timeframe']}",
        bar_ms=int(market.bar_ms),
        ts=market.ts,
        close=market.close,
        equity_ts=eq["ts"],
        equity=eq["equity"],
        regime=frames["equity"]["regime"].to_list(),
        ladder_ts=ladder_ts,
        ladder_long=ladder_long,
        ladder_short=ladder_short,
        ladder_end=ladder_end,
        fills={c: fills[c].to_numpy() for c in ("ts", "price", "qty")}
        | {c: fills[c].to_list() for c in ("side", "kind")},
        funding={c: funding[c].to_numpy() for c in ("ts", "amount", "rate")},
        events={c: events[c].to_numpy() for c in ("ts", "value")}
        | {c: events[c].to_list() for c in ("kind", "reason")},
    )
    return render_report(d, headline_rows(stats), assumption_rows(stats), gate_rows(stats))
