"""research.report: one self-contained HTML file: plotly charts of candles, ladder, fills, regime, inventory,
equity next to buy-and-hold, drawdown, funding and gates, then key numbers, monthly returns and round
trips (the browser test opens it in Chromium). The data functions are checked on hand-built input."""

from __future__ import annotations

import itertools
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from report_builders import EXPECTED_TRIPS, round_trip_market

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.data.market import load_market
from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, write_sample
from gridctl.engine.enums import EventKind
from gridctl.engine.records import FILL_DTYPE
from gridctl.engine.run import run_single
from gridctl.research.report import (
    MAX_CANDLES,
    MAX_CURVE_POINTS,
    backtest_figure,
    build_report,
    buy_and_hold,
    candle_period,
    candles,
    exact_decimals,
    ladder_history,
    minmax_indices,
    monthly_returns,
    pack,
    pack_ohlc,
    report_data,
    round_trip_table,
    round_trips,
)
from gridctl.research.stats import closed_lot_pnl, compute_stats, same_bar_round_trips

from effects import effect
from market_builders import venue as isolated_venue

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
    (bars,) = _traces(fig, "funding")
    assert bars.type == "scattergl" and bars.mode == "markers"
    settle = np.unique(run.funding["ts"])
    assert len(bars.x) == len(settle) > 0
    assert float(np.sum(bars.y)) == pytest.approx(float(run.funding["amount"].sum()))
    # One events lane per kind with its count; the drawdown halt is one of them.
    lanes = {t.name: len(t.x) for t in fig.data if t.yaxis == "y7"}
    assert lanes == {f"{kind} ({count:,})": count for kind, count in stats["events"].items()}
    assert "drawdown_halt" in stats["events"]
    halt = run.events[run.events["kind"] == EventKind.DRAWDOWN_HALT]["ts"][0]
    assert [s.x0 for s in fig.layout.shapes] == [halt]
    tripped = re.search(r"<th>Gates tripped</th><td>([^<]*)</td>", report[3]).group(1)
    assert "drawdown_halt" in tripped and "circuit_breaker_trip" in tripped and "recenter" not in tripped


def test_long_curves_are_downsampled_but_keep_their_extremes(report) -> None:
    run, market, stats, _ = report
    fig = backtest_figure(report_data(run, market, stats))
    (equity,) = _traces(fig, "equity")
    assert len(market.ts) > MAX_CURVE_POINTS >= len(equity.x) > 1000
    assert max(equity.y) == run.equity["equity"].max() and min(equity.y) == run.equity["equity"].min()
    # Inventory: both sides' sizes, extremes kept (the largest position of each side is on the chart).
    for side in ("long", "short"):
        (line,) = _traces(fig, f"{side} size")
        assert max(line.y) == run.equity[f"{side}_qty"].max() > 0
    # 14,400 1m bars: 14,400 / 1,500 is over 5 bars a candle, so the whole run shows 15m candles (960).
    (candle,) = [t for t in fig.data if t.type == "candlestick"]
    assert candle.name == "candles 15m" and len(candle.x) == 960
    assert candle.open[0] == market.open[0] and candle.close[-1] == market.close[-1]
    assert max(candle.high) == market.high.max() and min(candle.low) == market.low.min()
    assert candle.high[0] == market.high[:15].max() and candle.x[1] == market.ts[15]


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


def test_a_long_run_shows_coarser_candles_but_every_fill() -> None:
    from gridctl.research.bench import bench_configs, bench_market

    market = bench_market(60_000)  # 60,000 1m bars: 1,000 hourly candles fit the budget, 30m (2,000) do not
    strategy, venue = bench_configs()
    run = run_single(market, strategy, venue, curves=True)
    stats = compute_stats(run, market, strategy, venue)
    fig = backtest_figure(report_data(run, market, stats))
    (candle,) = [t for t in fig.data if t.type == "candlestick"]
    assert candle.name == "candles 1h" and len(candle.x) == 1000
    assert max(candle.high) == market.high.max() and min(candle.low) == market.low.min()
    assert candle.x[0] == market.ts[0] and candle.x[-1] == market.ts[-60]
    assert sum(len(t.x) for t in fig.data if t.legendgroup == "fills") == len(run.fills) > 100
    (equity,) = _traces(fig, "equity")
    assert len(equity.x) <= MAX_CURVE_POINTS < len(run.equity)


def _fills(rows: list[tuple]) -> np.ndarray:
    """A fills ledger from (ts offset in bars, side, kind, level, price, qty, fee) rows, 1m bars."""
    out = np.zeros(len(rows), FILL_DTYPE)
    for r, (k, side, kind, level, price, qty, fee) in zip(out, rows, strict=True):
        r["ts"], r["side"], r["kind"], r["level"] = T0 + k * 60_000, side, kind, level
        r["price"], r["qty"], r["fee"] = price, qty, fee
    return out


T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
L, S = 0, 1
ENTRY, TP, SL, FLATTEN, LIQ = 0, 1, 2, 3, 4


def test_round_trips_pair_each_lot_with_its_exit() -> None:
    fills = _fills(
        [
            (0, L, ENTRY, 1, 100.0, 2.0, 0.04),
            (0, L, ENTRY, 2, 90.0, 1.0, 0.018),
            (1, S, ENTRY, 1, 110.0, 1.0, 0.022),
            (3, L, TP, 2, 95.0, 1.0, 0.019),
            (4, S, SL, 1, 120.0, 1.0, 0.06),
            (5, L, ENTRY, 2, 91.0, 1.0, 0.0182),
            (6, L, FLATTEN, 0, 80.0, 3.0, 0.3),  # closes both open longs: fee shared 2:1
            (7, S, ENTRY, 1, 105.0, 0.5, 0.0105),
            (8, S, LIQ, 0, 130.0, 0.5, 0.1),
            (9, L, ENTRY, 1, 85.0, 1.0, 0.017),
        ]
    )
    t = round_trips(fills, 60_000)
    got = list(zip(*(t[c] for c in t), strict=True))
    m = 60_000
    want = [
        # long lot 2: 1 * (95 - 90) - 0.018 - 0.019
        ("long", T0, 90.0, T0 + 3 * m, 95.0, "tp", 1.0, 4.963, 0.037, 3),
        # short lot 1: 1 * (110 - 120) - 0.022 - 0.06
        ("short", T0 + m, 110.0, T0 + 4 * m, 120.0, "sl", 1.0, -10.082, 0.082, 3),
        # flatten at 80: lot 1 (qty 2, fee share 0.2): 2 * (80 - 100) - 0.04 - 0.2
        ("long", T0, 100.0, T0 + 6 * m, 80.0, "flatten", 2.0, -40.24, 0.24, 6),
        # lot 2 again (qty 1, fee share 0.1): 80 - 91 - 0.0182 - 0.1
        ("long", T0 + 5 * m, 91.0, T0 + 6 * m, 80.0, "flatten", 1.0, -11.1182, 0.1182, 1),
        # liquidated short: 0.5 * (105 - 130) - 0.0105 - 0.1
        ("short", T0 + 7 * m, 105.0, T0 + 8 * m, 130.0, "liquidation", 0.5, -12.6105, 0.1105, 1),
        ("long", T0 + 9 * m, 85.0, None, None, "open", 1.0, None, 0.017, None),
    ]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-12), (g, w)
    # The closed lots' PnL is the stats' closed-lot PnL (profit factor and win rate count the same lots).
    from gridctl.research.stats import closed_lot_pnl

    assert sorted(closed_lot_pnl(fills)) == pytest.approx(sorted(p for p in t["pnl"] if p is not None))


def test_round_trips_count_bars_held_by_bar_not_by_elapsed_time_on_detail_fills() -> None:
    # With detail bars a fill carries its 1m detail bar's ts; the run's bars are 1h. Long lot 1 enters
    # at 00:55 and takes profit at 01:05 (10 minutes, but the 00:00 bar to the 01:00 bar: 1 bar held);
    # short lot 1 enters at 01:10 and stops at 01:50 (inside the 01:00 bar: 0).
    fills = _fills(
        [
            (55, L, ENTRY, 1, 100.0, 1.0, 0.0),
            (65, L, TP, 1, 101.0, 1.0, 0.0),
            (70, S, ENTRY, 1, 101.0, 1.0, 0.0),
            (110, S, SL, 1, 102.0, 1.0, 0.0),
        ]
    )
    assert round_trips(fills, 3_600_000)["bars_held"] == [1, 0]


def test_every_reading_of_lots_skips_an_exit_with_no_lot_open_on_its_rung() -> None:
    # A stop that fills while its side is being flattened (live: the flatten's market close and the
    # stop's trigger race) arrives after the flatten closed its lot: it closes nothing. Long lot 1:
    # 100 -> flatten at 97 (fee 0.03): -3.03; the later SL at 96 on rung 1 has no lot. Long lot 2:
    # 98 -> TP 99 in the same bar, fees 0.01 + 0.01: +0.98. The profit factor's lots, the same-bar
    # count and the report's round trips read the same two lots (the report used to raise KeyError).
    fills = _fills(
        [
            (1, L, ENTRY, 1, 100.0, 1.0, 0.0),
            (2, L, FLATTEN, 0, 97.0, 1.0, 0.03),
            (2, L, SL, 1, 96.0, 1.0, 0.0),
            (3, L, ENTRY, 2, 98.0, 1.0, 0.01),
            (3, L, TP, 2, 99.0, 1.0, 0.01),
        ]
    )
    assert closed_lot_pnl(fills).tolist() == pytest.approx([-3.03, 0.98], abs=1e-12)
    assert same_bar_round_trips(fills) == (1, pytest.approx(0.98, abs=1e-12))
    t = round_trips(fills, 60_000)
    assert t["exit_kind"] == ["flatten", "tp"]
    assert t["pnl"] == pytest.approx([-3.03, 0.98], abs=1e-12)
    assert t["bars_held"] == [1, 0]


def test_round_trips_of_a_hand_built_market_run() -> None:
    market, strategy = round_trip_market()
    run = run_single(market, strategy, isolated_venue(), curves=True)
    t = round_trips(run.fills, market.bar_ms)
    got = list(zip(*(t[c] for c in t), strict=True))
    assert len(got) == len(EXPECTED_TRIPS)
    for g, w in zip(got, EXPECTED_TRIPS, strict=True):
        assert g == pytest.approx(w, rel=1e-9), (g, w)


def _ms(text: str) -> int:
    return int(np.datetime64(text, "ms").astype(np.int64))


def test_monthly_returns_chain_month_end_equity() -> None:
    ts = [
        "2024-01-01T00:00",
        "2024-01-31T23:00",
        "2024-02-01T00:00",
        "2024-02-29T23:00",
        "2024-04-15T12:00",
        "2025-01-10T00:00",
    ]
    equity = np.array([10100.0, 10500.0, 10400.0, 9975.0, 10374.0, 11411.4])
    m = monthly_returns(np.array([_ms(t) for t in ts]), equity, 10000.0)
    assert m.years == [2024, 2025]
    want_2024 = np.full(12, np.nan)
    want_2024[0] = 5.0  # 10500 / 10000 - 1
    want_2024[1] = -5.0  # 9975 / 10500 - 1
    want_2024[3] = 4.0  # 10374 / 9975 - 1 (no March: against February's close)
    want_2025 = np.full(12, np.nan)
    want_2025[0] = 10.0  # 11411.4 / 10374 - 1
    np.testing.assert_allclose(m.pct, [want_2024, want_2025], rtol=1e-12)
    np.testing.assert_allclose(m.year_pct, [3.74, 10.0], rtol=1e-12)  # 10374 / 10000, 11411.4 / 10374
    # A bar opening 23:59 on the 31st counts for its month (open time), as the daily stats do.
    late = monthly_returns(
        np.array([_ms("2024-01-31T23:59"), _ms("2024-02-01T00:00")]), [11000.0, 9900.0], 1e4
    )
    np.testing.assert_allclose(late.pct[0, :2], [10.0, -10.0], rtol=1e-12)
    assert monthly_returns(np.zeros(0, np.int64), np.zeros(0), 1e4).years == []


def test_buy_and_hold_invests_the_initial_balance_at_the_first_close() -> None:
    bh = buy_and_hold(np.array([np.nan, 100.0, 110.0, np.nan, 90.0]), 1000.0)
    np.testing.assert_array_equal(bh, [np.nan, 1000.0, 1100.0, np.nan, 900.0])
    assert np.isnan(buy_and_hold(np.array([np.nan, np.nan]), 1000.0)).all()


def test_candles_merge_bars_into_utc_periods() -> None:
    nan = (np.nan,) * 4
    bars = [
        (10, 12, 9, 11),
        (11, 15, 10, 14),
        (14, 14, 8, 9),  # 00:00-00:03: open 10, high 15, low 8, close 9
        (9, 10, 7, 8),
        nan,
        (8, 11, 8, 10),  # 00:03-00:06: a missing bar inside, open 9, high 11, low 7, close 10
        nan,
        nan,
        nan,  # 00:06-00:09: no bar, no candle
        (1, 2, 0.5, 1.5),
    ]
    o, h, lo, c = (np.array(col, dtype=np.float64) for col in zip(*bars, strict=True))
    ts = T0 + 60_000 * np.arange(len(bars))
    x, co, ch, cl, cc = candles(ts, o, h, lo, c, 180_000)
    assert x.tolist() == [T0, T0 + 180_000, T0 + 540_000]
    assert co.tolist() == [10, 9, 1] and ch.tolist() == [15, 11, 2]
    assert cl.tolist() == [8, 7, 0.5] and cc.tolist() == [9, 10, 1.5]


def test_candle_period_is_the_finest_that_fits() -> None:
    m, h, d = 60_000, 3_600_000, 86_400_000
    assert MAX_CANDLES == 1500
    assert candle_period(1440, m) == m  # one day of 1m bars: 1m candles
    assert candle_period(1501, m) == 3 * m  # 1,501 > 1,500; 3m gives 501
    assert candle_period(14_400, m) == 15 * m  # 5m would give 2,880, 15m gives 960
    assert candle_period(525_600, m) == 6 * h  # a year: 4h would give 2,190, 6h gives 1,460
    assert candle_period(100, h) == h  # never finer than a bar; 1m-only periods are skipped
    assert candle_period(10 * 525_600, m) == 3 * d  # ten years: 2d gives 1,825, 3d gives 1,217
    assert candle_period(30 * 525_600, m) == 8 * d  # past a week: whole days (7d gives 1,565)


def _floats(b64: str) -> np.ndarray:
    """A packed stream's float64 values: inflate, then undo the byte shuffle (plane b = byte b)."""
    import base64
    import zlib

    planes = np.frombuffer(zlib.decompress(base64.b64decode(b64)), np.uint8).reshape(8, -1)
    return np.ascontiguousarray(planes.T).view("<f8").ravel()


def _mask(p: dict, n: int) -> np.ndarray:
    import base64
    import zlib

    if "nan" not in p:
        return np.zeros(n, bool)
    return np.frombuffer(zlib.decompress(base64.b64decode(p["nan"])), np.uint8) == 1


def _unpack(p: dict) -> np.ndarray:
    """What the page's script does with a packed series (running sum, scale, NaN mask)."""
    out = np.cumsum(_floats(p["data"])) / 10.0 ** p["decimals"]
    out[_mask(p, len(out))] = np.nan
    return out


def _unpack_ohlc(p: dict) -> tuple[np.ndarray, ...]:
    """What the page's script does with packed bars: close = last close + change, open = last close
    + gap, high = max(open, close) + upper wick, low = min(open, close) - lower wick."""
    dc, og, up, dn = (_floats(p[k]) for k in ("close", "open", "upper", "lower"))
    c = np.cumsum(dc)
    prev = np.concatenate(([0.0], c[:-1]))
    o = prev + og
    h, lo = np.maximum(o, c) + up, np.minimum(o, c) - dn
    gap = _mask(p, len(c))
    k = 10.0 ** p["decimals"]
    return tuple(np.where(gap, np.nan, x / k) for x in (o, h, lo, c))


def test_packed_series_decode_exactly() -> None:
    prices = np.array([60000.1, 60000.2, np.nan, 59999.9, 61234.5])
    assert exact_decimals(prices) == 1
    np.testing.assert_array_equal(_unpack(pack(prices, 1)), prices)
    assert exact_decimals(np.array([1.5, 2.25])) == 2 and exact_decimals(np.array([3.0])) == 0
    assert exact_decimals(np.array([0.1 + 0.2])) == 8  # not a short decimal: the most allowed
    ts = T0 + 60_000 * np.array([0, 1, 2, 5])  # a gap of two bars
    np.testing.assert_array_equal(_unpack(pack(ts, 0)), ts)
    with pytest.raises(ValueError, match="too large"):
        pack(np.array([1e10]), 8)
    # Bars: a missing bar (any NaN) is NaN throughout; the bar after it gaps from the last close.
    o = np.array([100.5, 101.0, np.nan, 99.25, 99.0])
    h = np.array([101.25, 102.0, np.nan, 99.75, 99.5])
    lo = np.array([100.0, 100.75, 98.0, 98.5, 97.0])
    c = np.array([101.0, 101.5, np.nan, 99.0, 97.25])
    packed = pack_ohlc(o, h, lo, c, 2)
    for got, want in zip(_unpack_ohlc(packed), (o, h, np.where(np.isnan(c), np.nan, lo), c), strict=True):
        np.testing.assert_array_equal(got, want)
    # The streams hold small numbers: bar 4's open gaps -2.25 from bar 2's close 101.5, in 0.01 units.
    assert _floats(packed["open"]).tolist() == [10050.0, 0.0, 0.0, -225.0, 0.0]
    assert _floats(packed["upper"]).tolist() == [25.0, 50.0, 0.0, 50.0, 50.0]


def test_round_trip_table_shows_prices_at_the_tick_and_off_tick_stops_in_full() -> None:
    trips = {
        "side": ["short", "long"],
        "entry_ts": [T0, T0],
        "entry_price": [59279.2, 100.0],
        "exit_ts": [T0 + 60_000, None],
        "exit_price": [58319.06751, None],  # a stop filled with slippage, off the 0.1 tick
        "exit_kind": ["sl", "open"],
        "qty": [0.026, 1.0],
        "pnl": [-1.5, None],
        "fees": [0.25, 0.02],
        "bars_held": [1, None],
    }
    html = round_trip_table(trips, 1)
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr><td>.*?</tr>", html)]
    assert cells == [
        [
            "1",
            "short",
            "2024-01-01 00:00",
            "59,279.2",
            "2024-01-01 00:01",
            "58,319.06751",
            "sl",
            "0.026",
            "-1.5000",
            "0.2500",
            "1",
        ],
        ["2", "long", "2024-01-01 00:00", "100.0", "", "", "open", "1", "", "0.0200", ""],
    ]
    assert "1 round trips closed (0 won, 1 lost or even), PnL after fees -1.5000 USDT" in html
    assert "1 lots still open at the end" in html


def test_a_run_without_fills_still_reports_every_section() -> None:
    from market_builders import flat, make_market, strategy

    market = make_market(flat(10000, 5))
    strat, ven = strategy(), isolated_venue()
    run = run_single(market, strat, ven, curves=True)
    assert len(run.fills) == 0
    html = build_report(run, market, compute_stats(run, market, strat, ven))
    assert "0 round trips closed (0 won, 0 lost or even), PnL after fees 0.0000 USDT" in html
    assert '<table id="round-trips"' in html and '<table id="monthly-returns"' in html
    # Flat price and no trades: buy-and-hold and the run both keep the initial balance.
    assert "<th>Buy and hold, final value</th><td>10,000.00 USDT</td>" in html
    assert "<th>Run minus buy and hold</th><td>+0.00 percentage points</td>" in html
    assert "no fills" in html
