"""research.report: one self-contained HTML file: key numbers, and plotly charts of ladder, fills, regime,
funding, equity, drawdown and gates (the browser test opens it in Chromium)."""

from __future__ import annotations

import itertools
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.data.market import load_market
from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, write_sample
from gridctl.engine.enums import EventKind
from gridctl.engine.run import run_single
from gridctl.research.report import (
    MAX_CURVE_POINTS,
    MAX_PRICE_POINTS,
    backtest_figure,
    build_report,
    ladder_history,
    minmax_indices,
    report_data,
)
from gridctl.research.stats import compute_stats

from effects import effect

# The probe: 6 + 6 rungs against a 0.1 BTC per-side cap make 10 SIZE_QTY rejections, which trip the
# circuit breaker (the shipped default has 5 + 5 rungs and no base-unit cap).
PROBE = ["position.max_position_size=0.1", "grid.grid_levels_long=6", "grid.grid_levels_short=6"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("sample")
    write_sample(data_dir, days=10)
    market = load_market(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME)
    # Big rungs and a 2 % drawdown limit: the run has fills, re-centres, rejections and a halt to show.
    strategy = load_strategy(
        "default",
        ["strategy.name=report_probe", "grid.base_qty=0.05", "risk_management.max_drawdown_pct=2", *PROBE],
    )
    venue = load_venue("binance_futures", ["trading.leverage=20"])
    run = run_single(market, strategy, venue, curves=True)
    stats = compute_stats(run, market, strategy, venue)
    return run, market, stats, build_report(run, market, stats)


class _Loads(HTMLParser):
    """Collects every src/href attribute and every tag (what a browser would fetch or link)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]


def test_report_embeds_plotly_and_links_nothing(report) -> None:
    html = report[3]
    parser = _Loads()
    parser.feed(html)
    # No element points anywhere: plotly.js is inline (its own source text), not a <script src>.
    assert parser.urls == []
    assert not {"link", "img", "iframe"} & set(parser.tags)
    assert html.count("<script") >= 2  # plotly.js itself, then the figure
    assert "plotly.js v" in html  # the library's own header: it is inline
    assert html.count("Plotly.newPlot(") == 1
    assert len(html) < 8_000_000  # plotly.js (~4.8 MB) once, plus the figure's data


@effect("strategy.name")
def test_key_numbers_and_the_strategy_name_appear(report) -> None:
    run, market, stats, html = report
    assert stats["strategy"] == "report_probe"
    assert "report_probe" in html
    # B: the same run under another strategy name shows that name instead.
    other = load_strategy(
        "default",
        ["strategy.name=other_probe", "grid.base_qty=0.05", "risk_management.max_drawdown_pct=2", *PROBE],
    )
    venue = load_venue("binance_futures", ["trading.leverage=20"])
    html_b = build_report(run, market, compute_stats(run, market, other, venue))
    assert "other_probe" in html_b and "report_probe" not in html_b
    for key in ("final_equity", "fees_paid", "realized_pnl"):
        assert f"{stats[key]:,.2f} USDT" in html, key
    for key in ("total_return_pct", "max_drawdown_daily_close_pct", "max_drawdown_intrabar_pct", "cagr_pct"):
        assert f"{stats[key]:,.2f} %" in html, key
    assert f"{stats['sharpe']:,.2f}" in html
    assert f"{stats['n_fills']:,} ({stats['n_entries']:,} / {stats['n_exits']:,})" in html
    # What was assumed: fees and their source, the data range.
    assert "maker 0.0002 / taker 0.0005 (venue config)" in html
    assert f"{stats['data_start']} -&gt; {stats['data_end']}" in html


def _traces(fig, prefix: str) -> list:
    return [t for t in fig.data if (t.name or "").startswith(prefix)]


def test_every_fill_is_a_marker_with_its_ledger_values(report) -> None:
    run, market, stats, _ = report
    fig = backtest_figure(report_data(run, market, stats))
    fill_traces = [t for t in fig.data if t.legendgroup == "fills"]
    assert {t.type for t in fill_traces} == {"scattergl"}  # WebGL: thousands of markers stay fast
    drawn = sorted(
        (int(x), float(y), float(c[0]))
        for t in fill_traces
        for x, y, c in zip(t.x, t.y, t.customdata, strict=True)
    )
    ledger = sorted((int(r["ts"]), float(r["price"]), float(r["qty"])) for r in run.fills)
    assert drawn == ledger and len(drawn) == stats["n_fills"] > 20
    entries = sum(len(t.x) for t in fill_traces if " entry " in t.name)
    assert entries == stats["n_entries"]
    # The trace name says how many fills it holds.
    for t in fill_traces:
        assert t.name.endswith(f"({len(t.x):,})")


def test_charts_show_regime_funding_events_and_the_halt(report) -> None:
    run, market, stats, _ = report
    d = report_data(run, market, stats)
    fig = backtest_figure(d)
    # Regime bands exist exactly for the regimes the run was in (1 = up, 2 = down).
    labels = set(run.equity["regime"].tolist())
    assert bool(_traces(fig, "regime up")) == (1 in labels)
    assert bool(_traces(fig, "regime down")) == (2 in labels)
    up = _traces(fig, "regime up")[0]
    # The band is 1 over the up bars: the first up bar's time starts a step to 1.
    first_up = run.equity["ts"][np.flatnonzero(run.equity["regime"] == 1)[0]]
    assert up.y[list(up.x).index(first_up)] == 1.0
    # One funding bar per settlement, summed over both sides.
    (bars,) = [t for t in fig.data if t.type == "bar"]
    settle = np.unique(run.funding["ts"])
    assert len(bars.x) == len(settle) > 0
    assert float(np.sum(bars.y)) == pytest.approx(float(run.funding["amount"].sum()))
    # One events lane per kind with its count; the drawdown halt is one of them.
    lanes = {t.name: len(t.x) for t in fig.data if t.yaxis == "y6"}
    assert lanes == {f"{kind} ({count:,})": count for kind, count in stats["events"].items()}
    assert "drawdown_halt" in stats["events"]
    halt = run.events[run.events["kind"] == EventKind.DRAWDOWN_HALT]["ts"][0]
    assert [s.x0 for s in fig.layout.shapes] == [halt]
    tripped = re.search(r"<th>Gates tripped</th><td>([^<]*)</td>", report[3]).group(1)
    assert "drawdown_halt" in tripped and "circuit_breaker_trip" in tripped and "recenter" not in tripped


def test_long_curves_are_downsampled_but_keep_their_extremes(report) -> None:
    run, market, stats, _ = report
    fig = backtest_figure(report_data(run, market, stats))
    (close,) = _traces(fig, "close")
    (equity,) = _traces(fig, "equity")
    assert len(market.ts) > MAX_CURVE_POINTS >= len(equity.x) > 1000
    assert max(equity.y) == run.equity["equity"].max() and min(equity.y) == run.equity["equity"].min()
    # 14,400 bars fit in the price budget: the close line is complete.
    assert len(market.ts) <= MAX_PRICE_POINTS and close.name == "close"
    assert list(close.y) == market.close.tolist()


def test_ladder_follows_the_centre_through_recentres(report) -> None:
    run, market, stats, _ = report
    starts, longs, shorts = ladder_history(run, market)
    rec = run.events[run.events["kind"] == EventKind.RECENTER]
    assert len(starts) == len(rec) + 1 > 1
    # First centre: the first close; rungs 1..6 at 40 bps steps rounded away from it to the 0.1 tick.
    c = market.close[0]
    want_long = [math.floor(c * (1 - i * 0.004) / 0.1 + 1e-9) * 0.1 for i in range(1, 7)]
    want_short = [math.ceil(c * (1 + i * 0.004) / 0.1 - 1e-9) * 0.1 for i in range(1, 7)]
    assert np.allclose(longs[0], want_long) and np.allclose(shorts[0], want_short)
    # Each ladder rests from the bar after the decision; a re-centre moves it to the event's price.
    assert starts[0] == market.ts[0] + 60_000 and starts[1] == rec["ts"][0] + 60_000
    c1 = rec["price"][0]
    assert longs[1][0] == pytest.approx(math.floor(c1 * 0.996 / 0.1 + 1e-9) * 0.1)
    # Drawn as (start, end, gap) segments: the first long rung spans the first centre's time.
    fig = backtest_figure(report_data(run, market, stats))
    (long_rungs,) = _traces(fig, "long rungs")
    x = np.asarray(long_rungs.x, dtype=float)
    y = np.asarray(long_rungs.y, dtype=float)
    assert (x[0], x[1], y[0], y[1]) == (starts[0], starts[1], longs[0][0], longs[0][0])
    assert np.isnan(x[2]) and len(x) == 3 * np.isfinite(longs).sum() - 3 * _after_halt(run, starts, longs)
    # The run halts: no rung is drawn past the bar of the halt.
    halt = run.events[run.events["kind"] == EventKind.DRAWDOWN_HALT]["ts"][0] + 60_000
    assert np.nanmax(x) == halt


def _after_halt(run, starts: np.ndarray, longs: np.ndarray) -> int:
    """Rungs of centres that start at or after the halt (never drawn)."""
    halt = run.events[run.events["kind"] == EventKind.DRAWDOWN_HALT]["ts"][0] + 60_000
    return int(np.isfinite(longs[starts >= halt]).sum())


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(-1e6, 1e6) | st.just(float("nan")), min_size=1, max_size=400),
    st.integers(4, 60),
)
def test_downsampling_keeps_ends_and_extremes(values: list[float], limit: int) -> None:
    y = np.array(values)
    idx = minmax_indices(y, limit)
    assert np.all(np.diff(idx) > 0) and idx[0] == 0 and idx[-1] == len(y) - 1
    assert len(idx) <= limit
    finite = np.isfinite(y)
    if finite.any():
        kept = y[idx]
        assert np.nanmax(kept) == y[finite].max() and np.nanmin(kept) == y[finite].min()
    if len(y) <= limit:
        assert idx.tolist() == list(range(len(y)))
        return
    # Per bucket (limit // 4 equal slices): its first and last point and its lowest and highest finite
    # value, at the first place each occurs, are kept, and nothing else in it.
    edges = np.linspace(0, len(y), limit // 4 + 1).astype(np.int64)
    for lo, hi in itertools.pairwise(edges):
        inside = idx[(idx >= lo) & (idx < hi)]
        chunk = y[lo:hi]
        want = {int(lo), int(hi) - 1}
        if np.isfinite(chunk).any():
            want |= {int(lo) + int(np.nanargmin(chunk)), int(lo) + int(np.nanargmax(chunk))}
        assert set(inside.tolist()) == want


def test_a_long_run_thins_the_price_line_but_never_the_fills() -> None:
    from gridctl.research.bench import bench_configs, bench_market

    market = bench_market(3 * MAX_PRICE_POINTS // 2)  # 60,000 1m bars: more than the price budget
    strategy, venue = bench_configs()
    run = run_single(market, strategy, venue, curves=True)
    stats = compute_stats(run, market, strategy, venue)
    fig = backtest_figure(report_data(run, market, stats))
    (close,) = [t for t in fig.data if (t.name or "").startswith("close")]
    assert len(close.x) <= MAX_PRICE_POINTS < len(market.close)
    assert close.name == f"close ({len(close.x):,} of {len(market.close):,} bars)"
    # The extremes and both ends survive; x is each kept bar's close time.
    assert max(close.y) == market.close.max() and min(close.y) == market.close.min()
    assert close.x[0] == market.ts[0] + 60_000 and close.x[-1] == market.ts[-1] + 60_000
    assert sum(len(t.x) for t in fig.data if t.legendgroup == "fills") == len(run.fills) > 100
