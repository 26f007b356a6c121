"""research.report: one self-contained HTML file: key numbers, ladder, fills, regime, funding, gates."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from effects import effect
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.loader import load_strategy, load_venue
from data.market import load_market
from data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, write_sample
from engine.enums import EventKind
from engine.run import run_single
from research.report import MAX_CURVE_POINTS, build_report, ladder_history, minmax_indices
from research.stats import compute_stats


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("sample")
    write_sample(data_dir, days=10)
    market = load_market(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME)
    # Big rungs and a 2 % drawdown limit: the run has fills, re-centres, rejections and a halt to show.
    strategy = load_strategy(
        "default", ["strategy.name=report_probe", "grid.base_qty=0.05", "risk_management.max_drawdown_pct=2"]
    )
    venue = load_venue("binance_futures", ["trading.leverage=20"])
    run = run_single(market, strategy, venue, curves=True)
    stats = compute_stats(run, market, strategy, venue)
    return run, market, stats, build_report(run, market, stats)


class _Loads(HTMLParser):
    """Collects every src/href attribute of every element (what a browser would fetch or link)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]


def test_report_loads_nothing_from_the_network(report) -> None:
    html = report[3]
    parser = _Loads()
    parser.feed(html)
    assert not [u for u in parser.urls if re.match(r"\s*(https?:)?//", u)]
    assert "http://" not in html and "https://" not in html
    assert not {"script", "link", "img", "iframe"} & parser.tags
    assert len(html) < 5_000_000


@effect("strategy.name")
def test_key_numbers_and_the_strategy_name_appear(report) -> None:
    run, market, stats, html = report
    assert stats["strategy"] == "report_probe"
    assert "report_probe" in html
    # B: the same run under another strategy name shows that name instead.
    other = load_strategy(
        "default", ["strategy.name=other_probe", "grid.base_qty=0.05", "risk_management.max_drawdown_pct=2"]
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


def test_charts_show_fills_ladder_regime_funding_and_gates(report) -> None:
    run, market, stats, html = report
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(svgs) == 5  # price, equity, drawdown, funding, events
    price, equity, _, funding, events = svgs
    # Every fill is a marker with a tooltip: entries as triangles, exits as circles.
    assert price.count("<polygon") == stats["n_entries"]
    assert price.count("<circle") == stats["n_exits"]
    # Regime bands exist for the trending stretches of the run.
    labels = set(run.equity["regime"].tolist())
    assert ("regime up" in price) == (1 in labels) and ("regime down" in price) == (2 in labels)
    # One funding bar per settlement paid in the run.
    assert funding.count("USDT</title>") == len(np.unique(run.funding["ts"])) > 0
    # One lane per event kind, its count beside it; the drawdown halt is there.
    for kind, count in stats["events"].items():
        assert f">{kind}</text>" in events and f">{count}</text>" in events
    assert "drawdown_halt" in stats["events"]
    tripped = re.search(r"<th>Gates tripped</th><td>([^<]*)</td>", html).group(1)
    assert "drawdown_halt" in tripped and "circuit_breaker_trip" in tripped and "recenter" not in tripped
    # Long curves are downsampled: the equity path has at most MAX_CURVE_POINTS vertices.
    vertices = len(re.findall(r"[ML]-?\d", re.search(r'<path d="([^"]*)"', equity).group(1)))
    assert len(market.ts) > MAX_CURVE_POINTS >= vertices > 1000


def test_ladder_follows_the_centre_through_recentres(report) -> None:
    run, market, _, _ = report
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
    # The run halts: no rung is drawn past the bar of the halt. Plot x = 80 + (t - t0) / span * 1100 px.
    halt = run.events[run.events["kind"] == EventKind.DRAWDOWN_HALT]["ts"][0] + 60_000
    t0, span = market.ts[0], market.ts[-1] + 60_000 - market.ts[0]
    x_halt = 80 + (halt - t0) / span * 1100
    rungs = re.findall(r'<line x1="[\d.]+" x2="([\d.]+)"[^>]*stroke-dasharray', report[3])
    assert rungs and max(float(x) for x in rungs) <= x_halt + 0.05 < 1180
    assert longs[1][0] == pytest.approx(math.floor(c1 * 0.996 / 0.1 + 1e-9) * 0.1)


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
