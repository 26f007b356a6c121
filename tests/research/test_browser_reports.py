"""The HTML reports open in a real headless Chromium with no network and their charts render.

Each page must load with no console error, no uncaught exception, no failed request and no request at
all besides the file itself; plotly must have built its chart elements at a real size, with the
traces the figure builders made, and WebGL must have painted the fills. Under CI=true a missing
Chromium fails these tests (tests/browser.py); .ci/run installs it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from report_builders import round_trip_market

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.engine.enums import EventKind
from gridctl.engine.run import run_single
from gridctl.research.report import (
    CHART_DIV_ID,
    assumption_rows,
    backtest_figure,
    gate_rows,
    headline_rows,
    ladder_history,
    render_report,
    report_data,
)
from gridctl.research.results import write_results
from gridctl.research.stats import compute_stats
from gridctl.research.study_report import render_study_report, study_figures

from browser import Browser, PageLog
from market_builders import venue as isolated_venue
from study_builders import build_study, sample_market

DAY_MS = 86_400_000
_PLOT = f"document.getElementById('{CHART_DIV_ID}')"


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


def _assert_clean(log, path: Path) -> None:
    assert log.requests == [path.resolve().as_uri()]  # the file itself, nothing else
    assert log.failed == []
    assert log.errors == []


@pytest.fixture(scope="module")
def backtest(tmp_path_factory: pytest.TempPathFactory):
    market = sample_market(tmp_path_factory.mktemp("sample"), days=10)
    # A 2 % drawdown limit: the run has fills, re-centres and a halt to draw.
    strategy = load_strategy("default", ["grid.base_qty=0.03", "risk_management.max_drawdown_pct=2"])
    venue = load_venue("binance_futures", ["trading.leverage=20"])
    run = run_single(market, strategy, venue, curves=True)
    stats = compute_stats(run, market, strategy, venue)
    out = tmp_path_factory.mktemp("results")
    write_results(out, run, market, stats)
    return run, market, stats, out / "report.html"


@pytest.fixture(scope="module")
def backtest_page(browser: Browser, backtest) -> tuple[str, PageLog]:
    """The backtest report loaded once in a tab, its chart built: (session, what the load logged).

    Loading it takes seconds of plotly work in a software-rendered headless browser, so the tests of
    this file share one load: the rendering test only reads the page, then the zoom test drives it
    (and zooms back out at the end).
    """
    session, log = browser.open_page(backtest[3])
    browser.wait_for(session, f"{_PLOT} && {_PLOT}._fullLayout && {_PLOT}.querySelector('.main-svg')")
    browser.wait_for(session, _READY)
    return session, log


# The page has decoded its full-resolution data and wired the zoom script.
_READY = f"{_PLOT} && {_PLOT}.getAttribute('data-refine') === 'ready'"
_VIEWS = f"+({_PLOT}.getAttribute('data-views') || 0)"


def _relayout(browser: Browser, session: str, update: str) -> None:
    """Apply a layout update (a zoom) and wait until the page has redrawn and refitted for it."""
    before = browser.evaluate(session, _VIEWS)
    browser.evaluate(session, f"Plotly.relayout({_PLOT}, {update}).then(() => 1)")
    browser.wait_for(session, f"{_VIEWS} > {before}")


def _trace(browser: Browser, session: str, uid: str, *keys: str) -> dict:
    """Arrays of the page's trace ``uid`` as it is drawn now."""
    return browser.evaluate(
        session,
        f"(() => {{ const t = {_PLOT}._fullData.find(d => d.uid === '{uid}');"
        f" return {{name: t.name, {', '.join(f'{k}: Array.from(t.{k})' for k in keys)}}}; }})()",
    )


def test_backtest_report_renders_every_fill_offline(browser: Browser, backtest, backtest_page) -> None:
    run, market, stats, path = backtest
    session, log = backtest_page
    fig = backtest_figure(report_data(run, market, stats))
    page = browser.evaluate(
        session,
        f"""(() => {{
          const g = {_PLOT}, r = g.getBoundingClientRect();
          return {{
            names: g._fullData.map(d => d.name),
            types: g._fullData.map(d => d.type),
            lengths: g._fullData.map(d => d._length),
            groups: g._fullData.map(d => d.legendgroup),
            width: r.width, height: r.height,
            svgs: g.querySelectorAll('.main-svg').length,
            subplots: g.querySelectorAll('.subplot').length,
          }};
        }})()""",
    )
    assert page["names"] == [t.name for t in fig.data]
    assert page["types"] == [t.type for t in fig.data]
    assert page["width"] > 800 and page["height"] > 1000 and page["svgs"] >= 1
    assert page["subplots"] >= 6  # price (+ regime overlay), inventory, equity, drawdown, funding, events
    # Every fill reached the browser.
    fills = sum(n for n, g in zip(page["lengths"], page["groups"], strict=True) if g == "fills")
    assert fills == stats["n_fills"] == len(run.fills) > 20
    # WebGL painted: the scattergl canvas has drawn pixels.
    painted = browser.evaluate(
        session,
        f"""(() => {{
          const c = {_PLOT}.querySelector('.gl-canvas-context');
          const gl = c && (c.getContext('webgl') || c.getContext('experimental-webgl'));
          if (!gl) return -1;
          const w = gl.drawingBufferWidth, h = gl.drawingBufferHeight, px = new Uint8Array(w * h * 4);
          gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
          let n = 0;
          for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
          return n;
        }})()""",
    )
    assert painted > 1000
    _assert_clean(log, path)


def test_zooming_into_one_day_shows_every_bar_and_refits(browser: Browser, backtest, backtest_page) -> None:
    run, market, _, path = backtest
    session, _ = backtest_page
    full = browser.evaluate(session, f"{_PLOT}._fullLayout.yaxis.range")
    whole = _trace(browser, session, "candles", "x")
    assert whole["name"] == "candles 15m" and len(whole["x"]) == 960  # 14,400 bars in 15m candles
    lo, hi = int(market.ts[0]) + 3 * DAY_MS, int(market.ts[0]) + 4 * DAY_MS
    _relayout(browser, session, f"{{'xaxis.range': [{lo}, {hi}]}}")
    span_js = f"({_PLOT}._fullLayout.yaxis.range[1] - {_PLOT}._fullLayout.yaxis.range[0])"
    assert browser.evaluate(session, span_js) < full[1] - full[0]
    # One day of 1m bars: 1m candles, every bar of the day plus one candle before and two after (the
    # ones reaching into the view), each the bar's own OHLC.
    c = _trace(browser, session, "candles", "x", "open", "high", "low", "close")
    day = (market.ts >= lo - 60_000) & (market.ts < hi + 2 * 60_000)
    assert c["name"] == "candles 1m" and len(c["x"]) == int(day.sum()) == 1443
    assert c["x"] == market.ts[day].tolist()
    for k in ("open", "high", "low", "close"):
        assert c[k] == getattr(market, k)[day].tolist(), k
    # The lines at full resolution too: every equity row and inventory row of the day (and one each side).
    close_t = run.equity["ts"] + market.bar_ms
    rows = np.flatnonzero((close_t >= lo) & (close_t < hi))
    rows = np.arange(rows[0] - 1, rows[-1] + 2)
    eq = _trace(browser, session, "equity", "x", "y")
    assert eq["x"] == close_t[rows].tolist()
    assert eq["y"] == pytest.approx(run.equity["equity"][rows].tolist(), abs=5e-5)  # packed to 1e-4 USDT
    for side in ("long", "short"):
        inv = _trace(browser, session, f"{side}_qty", "x", "y")
        # Sizes are sums of fill quantities (0.052000000000000005): packed to at most 8 decimals.
        assert inv["y"] == pytest.approx(run.equity[f"{side}_qty"][rows].tolist(), abs=5e-9)
    y0, y1 = browser.evaluate(session, f"{_PLOT}._fullLayout.yaxis.range")
    # What is visible that day: its candles' highs and lows, its fills and the rungs resting in it.
    in_view = (market.ts >= lo) & (market.ts <= hi)
    seen = [market.low[in_view], market.high[in_view]]
    seen.append(run.fills["price"][(run.fills["ts"] >= lo) & (run.fills["ts"] <= hi)])
    starts, longs, shorts = ladder_history(run, market)
    ends = np.append(starts[1:], close_t[-1])
    halt = run.events[run.events["kind"] == EventKind.DRAWDOWN_HALT]["ts"]
    if len(halt):
        ends = np.minimum(ends, halt[0] + market.bar_ms)
    resting = (starts < hi) & (ends > lo) & (starts < ends)
    seen += [longs[resting].ravel(), shorts[resting].ravel()]
    want_lo, want_hi = min(a.min() for a in seen if len(a)), max(a.max() for a in seen if len(a))
    pad = (want_hi - want_lo) * 0.05
    assert y0 == pytest.approx(want_lo - pad, rel=1e-9)
    assert y1 == pytest.approx(want_hi + pad, rel=1e-9)
    # Every panel follows the shared time axis.
    ranges = browser.evaluate(
        session,
        f"[2, 3, 4, 5, 6].map(i => {_PLOT}._fullLayout['xaxis' + i].range.map(v => Date.parse(v + 'Z')))",
    )
    for r in ranges:
        assert r == pytest.approx([lo, hi], abs=1)
    # A box zoom on the price panel keeps the value range the trader drew; the equity panel refits.
    box = [want_lo, want_lo + 50.0]
    lo2 = lo + DAY_MS // 2
    _relayout(
        browser,
        session,
        f"{{'xaxis.range[0]': {lo2}, 'xaxis.range[1]': {hi}, "
        f"'yaxis.range[0]': {box[0]}, 'yaxis.range[1]': {box[1]}}}",
    )
    # Equity and buy-and-hold of the half day, with the line segments entering and leaving it.
    bh_t = market.ts + market.bar_ms
    bh = 10_000.0 * market.close / market.close[0]
    near = []
    for t, v in ((close_t, run.equity["equity"]), (bh_t, bh)):
        inside = np.flatnonzero((t >= lo2) & (t <= hi))
        near.append(v[inside[0] - 1 : inside[-1] + 2])
    e_lo, e_hi = min(v.min() for v in near), max(v.max() for v in near)
    e_pad = (e_hi - e_lo) * 0.05
    eq_after = browser.evaluate(session, f"{_PLOT}._fullLayout.yaxis4.range")
    assert eq_after == pytest.approx([e_lo - e_pad, e_hi + e_pad], rel=1e-6)
    assert browser.evaluate(session, f"{_PLOT}._fullLayout.yaxis.range") == pytest.approx(box)
    # Double-click (autorange) zooms back out: the whole run in 15m candles again.
    _relayout(browser, session, "{'xaxis.autorange': true}")
    assert browser.evaluate(session, span_js) >= (full[1] - full[0]) * 0.99
    whole = _trace(browser, session, "candles", "x")
    assert whole["name"] == "candles 15m" and len(whole["x"]) == 960
    _assert_clean(browser.more_log(session), path)


def _rows(browser: Browser, session: str, table: str) -> list[list[str]]:
    return browser.evaluate(
        session,
        f"[...document.querySelectorAll('#{table} tbody tr')]"
        ".map(tr => [...tr.cells].map(c => c.textContent))",
    )


def test_round_trips_and_buy_and_hold_of_a_hand_built_market(browser: Browser, tmp_path: Path) -> None:
    market, strategy = round_trip_market()
    venue = isolated_venue()
    run = run_single(market, strategy, venue, curves=True)
    stats = compute_stats(run, market, strategy, venue)
    write_results(tmp_path / "out", run, market, stats)
    path = tmp_path / "out" / "report.html"
    session, log = browser.open_page(path)
    browser.wait_for(session, _READY)
    # The round trips derived by hand in tests/report_builders.py, as the trader reads them (UTC).
    assert _rows(browser, session, "round-trips") == [
        [
            "1",
            "long",
            "2024-01-01 01:00",
            "9,800",
            "2024-01-01 01:00",
            "9,898",
            "tp",
            "0.01",
            "0.9406",
            "0.0394",
            "0",
        ],
        [
            "2",
            "long",
            "2024-01-01 01:00",
            "9,900",
            "2024-01-01 01:00",
            "9,999",
            "tp",
            "0.01",
            "0.9502",
            "0.0398",
            "0",
        ],
        [
            "3",
            "short",
            "2024-01-01 02:00",
            "10,100",
            "2024-01-01 03:00",
            "9,999",
            "tp",
            "0.01",
            "0.9698",
            "0.0402",
            "1",
        ],
        ["4", "long", "2024-01-01 04:00", "9,900", "", "", "open", "0.01", "", "0.0198", ""],
    ]
    # Buy and hold: 10,000 USDT at the first close (10000) is worth 10000 * 9950 / 10000 at the last;
    # the run ends at 10003.340808 (+0.0334 %), 0.5334 points above it.
    bench = browser.evaluate(
        session,
        "[...document.querySelectorAll('#benchmark tr')].map(tr => [...tr.cells].map(c => c.textContent))",
    )
    assert bench == [
        ["Buy and hold, final value", "9,950.00 USDT"],
        ["Buy and hold, return", "-0.50 %"],
        ["Run minus buy and hold", "+0.53 percentage points"],
    ]

    bh = _trace(browser, session, "buyhold", "x", "y")
    assert bh["y"] == [10000.0, 10000.0, 10100.0, 9960.0, 9950.0]  # 10000 * close / 10000
    assert bh["y"][-1] == 10000.0 * 9950.0 / 10000.0 and bh["x"][-1] == market.ts[-1] + market.bar_ms
    # The page's own zoom script derives the same line from the packed closes.
    _relayout(browser, session, "{'xaxis.autorange': true}")
    assert _trace(browser, session, "buyhold", "y")["y"][-1] == 9950.0
    # Hiding buy-and-hold from the legend refits the equity panel to the equity curve alone.
    before = browser.evaluate(session, _VIEWS)
    browser.evaluate(
        session,
        f"Plotly.restyle({_PLOT}, {{visible: 'legendonly'}}, "
        f"[{_PLOT}.data.findIndex(d => d.uid === 'buyhold')]).then(() => 1)",
    )
    browser.wait_for(session, f"{_VIEWS} > {before}")
    # The page's line is the packed curve (to 1e-4 USDT): 10000 .. 10003.3408.
    eq = np.round(run.equity["equity"], 4)
    pad = (eq.max() - eq.min()) * 0.05
    got = browser.evaluate(session, f"{_PLOT}._fullLayout.yaxis4.range")
    assert got == pytest.approx([eq.min() - pad, eq.max() + pad], rel=1e-12)
    _assert_clean(log, path)
    _assert_clean(browser.more_log(session), path)


def test_monthly_returns_table_of_a_hand_built_equity_curve(browser: Browser, tmp_path: Path) -> None:
    market, strategy = round_trip_market()
    venue = isolated_venue()
    run = run_single(market, strategy, venue, curves=True)
    stats = compute_stats(run, market, strategy, venue)
    # The run's report data with a hand-built equity curve over three months of two years.
    times = [
        "2024-01-01T00:00",
        "2024-01-31T23:00",
        "2024-02-29T23:00",
        "2024-04-15T12:00",
        "2025-01-10T00:00",
    ]
    ts = np.array([np.datetime64(t, "ms").astype(np.int64) for t in times])
    equity = np.array([10100.0, 10500.0, 9975.0, 10374.0, 11411.4])
    d = dataclasses.replace(
        report_data(run, market, stats),
        equity_ts=ts,
        equity=equity,
        long_qty=np.zeros(5),
        short_qty=np.zeros(5),
        regime=["sideways"] * 5,
    )
    path = tmp_path / "report.html"
    html = render_report(d, headline_rows(stats), assumption_rows(stats), gate_rows(stats))
    path.write_text(html, encoding="utf-8")
    session, log = browser.open_page(path)
    browser.wait_for(session, _READY)
    # By hand: Jan 10500/10000, Feb 9975/10500, Apr 10374/9975 (no March), year 10374/10000;
    # 2025: Jan 11411.4/10374.
    blank = [""] * 8
    assert _rows(browser, session, "monthly-returns") == [
        ["2024", "+5.00", "-5.00", "", "+4.00", *blank, "+3.74"],
        ["2025", "+10.00", "", "", "", *blank, "+10.00"],
    ]
    _assert_clean(log, path)


def test_study_report_renders_every_chart_offline(browser: Browser, tmp_path: Path) -> None:
    market = sample_market(tmp_path / "sample")
    study = build_study(market, 12, name="browser", multi=True)
    path = render_study_report(study, tmp_path / "report")
    figures = study_figures(study)
    session, log = browser.open_page(path)
    ids = [f"chart-{fid}" for fid, _ in figures]
    browser.wait_for(session, f"{ids!r}.every(id => document.getElementById(id)?.querySelector('.main-svg'))")
    charts = browser.evaluate(
        session,
        f"""{ids!r}.map(id => {{
          const g = document.getElementById(id), r = g.getBoundingClientRect();
          return {{ id, traces: g.data.length, width: r.width, height: r.height,
                   plot: g.classList.contains('js-plotly-plot') }};
        }})""",
    )
    assert len(charts) == len(figures) == 7  # history x2, importances x2, parallel, Pareto, IS vs OOS
    assert browser.evaluate(session, "document.querySelectorAll('.js-plotly-plot').length") == len(figures)
    for chart, (_, fig) in zip(charts, figures, strict=True):
        assert chart["plot"] and chart["width"] > 300 and chart["height"] > 150, chart
        assert chart["traces"] == len(fig.data) > 0, chart
    _assert_clean(log, path)
    _assert_clean(browser.more_log(session), path)


def test_a_missing_chromium_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    import browser

    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(browser.shutil, "which", lambda _name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        browser.chromium_path()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        browser.chromium_path()
