"""Hand-computed funding: payment sign and amount, mark source, and the funding guard's scaling."""

from __future__ import annotations

import math

import pytest

from gridctl.engine.enums import MarkSource

from effects import effect
from market_builders import (
    EIGHT_HOURS,
    HOUR,
    IMPLS,
    T0,
    bar_ts,
    entries,
    flat,
    make_market,
    run,
    strategy,
    venue,
)


@pytest.mark.parametrize("impl", IMPLS)
def test_funding_sign_amount_and_mark_source(impl):
    # Bar 1 (10000,10150,9850,10000): high first (150 <= 150): short 0.01 @ 10100, then long 0.01 @ 9900.
    # tp_steps 3 / sl_steps 6 keep the lots open: long TP 10197, SL 9306; short TP 9797, SL 10706.
    # Settlements: T0-8h (before the data: never paid), T0+8h rate +0.0001 mark 10000 (paid at bar 8),
    # T0+16h rate -0.0003 mark unknown (paid at bar 16 with that bar's open 10020).
    #   T0+8h : long  -0.01*10000*0.0001 = -0.01,   short +0.01*10000*0.0001 = +0.01   (mark series)
    #   T0+16h: long  -0.01*10020*-0.0003 = +0.03006, short +0.01*10020*-0.0003 = -0.03006 (trade open)
    bars = [*flat(10000, 1), (10000, 10150, 9850, 10000), *flat(10000, 14), *flat(10020, 2)]
    funding = [
        (T0 - EIGHT_HOURS, 0.0005, 10000.0),
        (T0 + EIGHT_HOURS, 0.0001, 10000.0),
        (T0 + 16 * HOUR, -0.0003, math.nan),
    ]
    led = run(impl, make_market(bars, funding=funding), strategy(exit__tp_steps=3, exit__sl_steps=6), venue())
    assert sorted((e[1], e[3]) for e in entries(led)) == [(0, 9900.0), (1, 10100.0)]
    rows = [(r["ts"], r["side"], r["rate"], r["mark_price"], r["mark_source"], r["qty"]) for r in led.funding]
    assert rows == [
        (T0 + EIGHT_HOURS, 0, 0.0001, 10000.0, MarkSource.MARK_SERIES, 0.01),
        (T0 + EIGHT_HOURS, 1, 0.0001, 10000.0, MarkSource.MARK_SERIES, 0.01),
        (T0 + 16 * HOUR, 0, -0.0003, 10020.0, MarkSource.TRADE_OPEN, 0.01),
        (T0 + 16 * HOUR, 1, -0.0003, 10020.0, MarkSource.TRADE_OPEN, 0.01),
    ]
    assert [r["amount"] for r in led.funding] == pytest.approx([-0.01, 0.01, 0.03006, -0.03006], rel=1e-12)
    # The wallet moves by the funding sum (here 0): the equity row at bar 16 vs bar 15 differs only by
    # the mark move 10000 -> 10020 of the two opposite lots (0.01*20 - 0.01*20 = 0).
    assert led.equity[16]["equity"] == pytest.approx(led.equity[15]["equity"], abs=1e-9)


@effect("funding.funding_window_minutes", "funding.funding_max_cost_bps")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("rate", "bar"),
    [(0.002, (10000, 10050, 9850, 10000)), (-0.002, (10000, 10150, 9950, 9990))],
)
def test_funding_guard_scales_the_paying_side_inside_the_window(impl, rate, bar):
    # Settlements every 8 h (T0 is paid at bar 0 while flat: no row). Last T0, next T1 = T0+8h.
    # |r| = 20 bps. A position held through T1 pays all of it: projected cost 20 bps > 5 inside the
    # 240 min window. Next settlement T1 = T0+8h; at the close of bar k (close time T0+(k+1)h) T1 is
    # (7-k) h away.
    # Paying side: long for r > 0 (entries 9900), short for r < 0 (entries 10100).
    # Every bar fills that side's rung 1 and its TP (tp 1 step) inside the bar, so the next entry qty is
    # the one sized at the previous close: base 0.04 * max(0, (T1 - close)/window), floored to 0.001:
    #   decided at k=0,1,2 (7,6,5 h away, outside): 0.04; k=3 (4 h): 0.04*4/4 = 0.04;
    #   k=4 (3 h): 0.03; k=5 (2 h): 0.02; k=6 (1 h): 0.01.
    bars = [*flat(10000, 1), *[bar] * 7]
    funding = [(T0 - EIGHT_HOURS, rate, 10000.0), (T0, rate, 10000.0), (T0 + EIGHT_HOURS, rate, 10000.0)]
    s = strategy(grid__base_qty=0.04, funding__funding_window_minutes=240, funding__funding_max_cost_bps=5.0)
    led = run(impl, make_market(bars, funding=funding), s, venue())
    side = 0 if rate > 0 else 1
    got = [(e[0], e[4]) for e in entries(led) if e[1] == side]
    want = [0.04, 0.04, 0.04, 0.04, 0.03, 0.02, 0.01]
    assert [g[0] for g in got] == [bar_ts(k) for k in range(1, 8)]
    assert [g[1] for g in got] == pytest.approx(want)
    # Threshold 20 bps: cost 20 is not above it -> full size every bar.
    s20 = strategy(
        grid__base_qty=0.04, funding__funding_window_minutes=240, funding__funding_max_cost_bps=20.0
    )
    led20 = run(impl, make_market(bars, funding=funding), s20, venue())
    assert [e[4] for e in entries(led20) if e[1] == side] == pytest.approx([0.04] * 7)
    # Window 120 min, threshold 5: the cost is still the whole 20 bps (the audited bot's spread,
    # 20 * 2h/8h = 5 bps, would not be above 5 and never scale). Only closes within 2 h of T1 scale:
    # k=5 (2 h): 0.04 * 2/2 = 0.04; k=6 (1 h): 0.04 * 1/2 = 0.02.
    s2 = strategy(grid__base_qty=0.04, funding__funding_window_minutes=120, funding__funding_max_cost_bps=5.0)
    led2 = run(impl, make_market(bars, funding=funding), s2, venue())
    assert [e[4] for e in entries(led2) if e[1] == side] == pytest.approx([0.04] * 6 + [0.02])
