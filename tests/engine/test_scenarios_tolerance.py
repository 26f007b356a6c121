"""Hand-computed order tolerance in the backtest: a resting entry within
``execution.order_qty_tolerance_pct`` / ``order_price_tolerance_bps`` of the wanted one rests on
(DESIGN "Ladder": kept as it rests, else cancelled and a new one submitted), as the live bridge's order
diff keeps it. Every scenario runs on the reference and on the kernel; the submission count is the
kernel's (``orders_submitted``; the reference reports no such number).
"""

from __future__ import annotations

import math

import pytest

from effects import effect
from market_builders import HOUR, IMPLS, T0, entries, flat, make_market, run, strategy, venue

MIN = 60_000

# One rung a side, 10 bps step, 0.5 BTC rungs, the funding guard at its defaults (480 min window,
# 12 bps cost), room for the sizes (balance 100,000, max position 10 BTC).
GUARDED = dict(
    grid__grid_step_bps=10.0,
    grid__base_qty=0.5,
    funding__funding_window_minutes=480,
    funding__funding_max_cost_bps=12.0,
    backtest__initial_balance=100_000.0,
    position__max_position_size=10.0,
)


def _guarded_market():
    # 1m bars from T0 - 1 min: bar k closes at T0 + k min. Settled rate +0.002 at T0 - 4 h (20 bps > 12:
    # the long side pays), next settlement T0 + 4 h: at bar k's close T1 - close = 240 - k minutes.
    # Bars 0-3 flat at 60000; bar 4 (60000, 60000, 59900, 59950) trades down through the long rung.
    bars = [*flat(60000.0, 4), (60000.0, 60000.0, 59900.0, 59950.0)]
    funding = [(T0 - 4 * HOUR, 0.002, math.nan), (T0 + 4 * HOUR, 0.0001, math.nan)]
    return make_market(bars, timeframe="1m", start=T0 - MIN, funding=funding)


@effect("execution.order_qty_tolerance_pct")
@pytest.mark.parametrize("impl", IMPLS)
def test_an_entry_within_the_qty_tolerance_rests_on(impl):
    # Centre 60000 (bar 0's close): long rung floor_tick(60000 * 0.999) = 59940.0, short rung
    # ceil_tick(60000 * 1.001) = 60060.0 (never reached; its 0.5 is unscaled and never changes).
    # Wanted long qty at bar k's close: floor_step(0.5 * (240 - k) / 480, 0.001):
    #   k=0: 0.25 -> 0.250; k=1: 0.2489583 -> 0.248; k=2: 0.2479167 -> 0.247; k=3: 0.246875 -> 0.246.
    # Tolerance 0 (exact): the entry is replaced at every close: 0.250, 0.248, 0.247, 0.246; bar 4's dip
    #   through 59940 fills 0.246. Submissions: 2 at bar 0 (long, short) + 3 replacements = 5.
    # Tolerance 1 % (the default), relative to the wanted qty:
    #   k=1: |0.250 - 0.248| / 0.248 = 0.806 % <= 1 -> 0.250 rests on;
    #   k=2: |0.250 - 0.247| / 0.247 = 1.215 % > 1  -> replaced by 0.247;
    #   k=3: |0.247 - 0.246| / 0.246 = 0.407 % <= 1 -> 0.247 rests on; bar 4 fills 0.247.
    #   Submissions: 2 + 1 = 3.
    # Tolerance 0.5 %: k=1 0.806 % > 0.5 -> 0.248; k=2 |0.248 - 0.247| / 0.247 = 0.405 % -> 0.248 rests;
    #   k=3 |0.248 - 0.246| / 0.246 = 0.813 % > 0.5 -> 0.246; fills 0.246. Submissions 2 + 2 = 4.
    market = _guarded_market()
    cases = [(0.0, 0.246, 5), (1.0, 0.247, 3), (0.5, 0.246, 4)]
    for tol, filled, submitted in cases:
        led = run(impl, market, strategy(**GUARDED, execution__order_qty_tolerance_pct=tol), venue())
        ent = entries(led)
        assert len(ent) == 1, (tol, ent)
        ts, side, level, price, qty = ent[0]
        assert (ts, side, level, price) == (T0 + 3 * MIN, 0, 1, 59940.0), tol
        assert qty == pytest.approx(filled, abs=1e-12), tol
        if impl == "kernel":
            assert led.summary["orders_submitted"] == submitted, tol


@effect("execution.order_price_tolerance_bps")
@pytest.mark.parametrize("impl", IMPLS)
def test_a_retried_entry_within_the_price_tolerance_rests_on(impl):
    # The engine changes a resting entry's price only through a post-only retry (a re-centre cancels
    # the entries first): the retry rests a tick or more away from its rung's price, and the next
    # decision compares it with the rung price.
    # Isolated numbers: centre 10000, long rung 9900.0, qty 0.01, tick 0.1; retries on, 2 attempts.
    # Bar 1 opens at 9899.85: 9900 and retry 1 (9899.9) cross it (POST_ONLY_REJECT twice); retry 2 at
    # 9899.8 < open rests. The bar never trades below its open (no fill) and closes at 9950 > 9900, so
    # the rung wants its entry at 9900 again; the rejection marked the ladder for a re-plan.
    # Resting 9899.8 vs wanted 9900: 0.2 / 9900 * 1e4 = 0.20202 bps.
    #   Tolerance 1 bps (default) or 0.3: kept at 9899.8; bar 2 (9950, 9950, 9895, 9950) fills it at 9899.8.
    #   Tolerance 0 or 0.2 (< 0.20202): replaced by 9900 (does not cross bar 2's open 9950); fills at 9900.
    # Submissions (kernel): bar 0 long + short = 2, the two retries = 4, the replacement = 5.
    bars = [*flat(10000.0, 1), (9899.85, 9950.0, 9899.85, 9950.0), (9950.0, 9950.0, 9895.0, 9950.0)]
    market = make_market(bars)
    cases = [(1.0, 9899.8, 4), (0.3, 9899.8, 4), (0.2, 9900.0, 5), (0.0, 9900.0, 5)]
    for tol, filled, submitted in cases:
        s = strategy(
            execution__use_post_only_retries=True,
            execution__retry_attempts=2,
            execution__order_price_tolerance_bps=tol,
        )
        led = run(impl, market, s, venue())
        ent = entries(led)
        assert len(ent) == 1, (tol, ent)
        ts, side, level, price, qty = ent[0]
        assert (ts, side, level, qty) == (T0 + 2 * HOUR, 0, 1, 0.01), tol
        assert price == pytest.approx(filled, abs=1e-9), tol
        if impl == "kernel":
            assert led.summary["orders_submitted"] == submitted, tol
