"""The HTML reports open in a real headless Chromium with no network and their charts render.

Each page must load with no console error, no uncaught exception, no failed request and no request at
all besides the file itself; plotly must have built its chart elements at a real size, with the
traces the figure builders made, and WebGL must have painted the fills. Under CI=true a missing
Chromium fails these tests (tests/browser.py); .ci/run installs it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.engine.enums import EventKind
from gridctl.engine.run import run_single
from gridctl.research.report import CHART_DIV_ID, backtest_figure, ladder_history, report_data
from gridctl.research.results import write_results
from gridctl.research.stats import compute_stats
from gridctl.research.study_report import render_study_report, study_figures

from browser import Browser, PageLog
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
    strategy = load_strategy("default", ["grid.base_qty=0.05", "risk_management.max_drawdown_pct=2"])
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
    return session, log


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
    assert page["subplots"] >= 5  # price (+ its regime overlay), equity, drawdown, funding, events
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


def test_zooming_into_one_day_refits_the_price_axis(browser: Browser, backtest, backtest_page) -> None:
    run, market, _, path = backtest
    session, _ = backtest_page
    full = browser.evaluate(session, f"{_PLOT}._fullLayout.yaxis.range")
    lo, hi = int(market.ts[0]) + 3 * DAY_MS, int(market.ts[0]) + 4 * DAY_MS
    browser.evaluate(session, f"Plotly.relayout({_PLOT}, {{'xaxis.range': [{lo}, {hi}]}}).then(() => 1)")
    span_js = f"({_PLOT}._fullLayout.yaxis.range[1] - {_PLOT}._fullLayout.yaxis.range[0])"
    browser.wait_for(session, f"{span_js} < {full[1] - full[0]}")
    y0, y1 = browser.evaluate(session, f"{_PLOT}._fullLayout.yaxis.range")
    # What is visible that day: its closes, its fills and the rungs of every ladder resting in it.
    close_t = market.ts + market.bar_ms
    seen = [market.close[(close_t >= lo) & (close_t <= hi)]]
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
    # The neighbouring closes whose line segments enter the day count too: allow 1 % of the span.
    assert y0 == pytest.approx(want_lo - pad, abs=0.01 * (want_hi - want_lo))
    assert y1 == pytest.approx(want_hi + pad, abs=0.01 * (want_hi - want_lo))
    # Every panel follows the shared time axis.
    ranges = browser.evaluate(
        session,
        f"[2, 3, 4, 5].map(i => {_PLOT}._fullLayout['xaxis' + i].range.map(v => Date.parse(v + 'Z')))",
    )
    for r in ranges:
        assert r == pytest.approx([lo, hi], abs=1)
    # A box zoom on the price panel keeps the value range the trader drew; the equity panel refits.
    eq_before = browser.evaluate(session, f"{_PLOT}._fullLayout.yaxis3.range")
    box = [want_lo, want_lo + 50.0]
    lo2 = lo + DAY_MS // 2
    browser.evaluate(
        session,
        f"Plotly.relayout({_PLOT}, {{'xaxis.range[0]': {lo2}, 'xaxis.range[1]': {hi}, "
        f"'yaxis.range[0]': {box[0]}, 'yaxis.range[1]': {box[1]}}}).then(() => 1)",
    )
    browser.wait_for(session, f"{_PLOT}._fullLayout.yaxis3.range[0] !== {eq_before[0]}")
    assert browser.evaluate(session, f"{_PLOT}._fullLayout.yaxis.range") == pytest.approx(box)
    # Double-click (autorange) zooms back out.
    browser.evaluate(session, f"Plotly.relayout({_PLOT}, {{'xaxis.autorange': true}}).then(() => 1)")
    browser.wait_for(session, f"{span_js} >= {full[1] - full[0]} * 0.99")
    _assert_clean(browser.more_log(session), path)


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
