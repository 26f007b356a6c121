"""Hand-computed fills: the intrabar path, several rungs per bar, TP/SL, gaps, post-only and retries.

Common numbers (market_builders.ISOLATED): centre C = 10000 (close of bar 0), s = 100 bps = 0.01,
tick 0.1, qty 0.01, maker fee 0.0002, taker fee 0.0005, no slippage unless a test sets it.
Long rung i = floor_tick(10000*(1 - i*0.01)): 9900, 9800, 9700; short rung 1 = ceil_tick(10100) = 10100.
Every scenario runs on the reference and on the kernel.
"""

from __future__ import annotations

import pytest

from gridctl.engine.enums import Reason

from effects import effect
from market_builders import IMPLS, bar_ts, entries, flat, kinds, make_market, run, strategy, venue

APPROX = {"rel": 1e-12, "abs": 1e-9}


def fills_of(led, kind=None):
    """(ts, side, kind, level, price, qty, fee, liquidity, realized) tuples, optionally one kind."""
    return [
        (
            f["ts"],
            f["side"],
            f["kind"],
            f["level"],
            f["price"],
            f["qty"],
            f["fee"],
            f["liquidity"],
            f["realized_pnl"],
        )
        for f in led.fills
        if kind is None or f["kind"] == kind
    ]


def assert_fill(got, ts, side, kind, level, price, qty, fee, liquidity, realized):
    assert got[:4] == (ts, side, kind, level)
    assert got[4] == pytest.approx(price, **APPROX)
    assert got[5] == pytest.approx(qty, **APPROX)
    assert got[6] == pytest.approx(fee, **APPROX)
    assert got[7] == liquidity
    assert got[8] == pytest.approx(realized, **APPROX)


@effect("grid.grid_levels_long", "exit.tp_steps", "fees.maker")
@pytest.mark.parametrize("impl", IMPLS)
def test_several_rungs_and_same_bar_take_profits(impl):
    # Bar 1: o=10000 h=10090 l=9790 c=10000. high-open = 90 <= open-low = 210, so the path is
    # 10000 -> 10090 -> 9790 -> 10000. Short rung 10100 is never reached.
    # Down-leg: long rung 1 (9900) then rung 2 (9800) fill (9790 < p <= cur); rung 3 (9700) does not.
    #   lot 1: TP = ceil_tick(9900*1.01) = 9999, lot 2: TP = ceil_tick(9800*1.01) = 9898.
    # Up-leg 9790 -> 10000: the TPs created on the down-leg are active: 9898 first (nearest), then 9999.
    # avg after both entries = (9900 + 9800)/2 = 9850, so realized = 0.01*(9898-9850) = 0.48 and
    # 0.01*(9999-9850) = 1.49 (sum 1.97 = 0.98 + 0.99, each lot's own gain).
    # Maker fees: 9900*0.01*0.0002 = 0.0198, 0.0196, 0.019796, 0.019998.
    s = strategy(grid__grid_levels_long=3)
    led = run(impl, make_market([*flat(10000, 1), (10000, 10090, 9790, 10000)]), s, venue())
    t = bar_ts(1)
    f = fills_of(led)
    assert len(f) == 4
    assert_fill(f[0], t, 0, 0, 1, 9900, 0.01, 0.0198, 0, 0.0)
    assert_fill(f[1], t, 0, 0, 2, 9800, 0.01, 0.0196, 0, 0.0)
    assert_fill(f[2], t, 0, 1, 2, 9898, 0.01, 0.019796, 0, 0.48)
    assert_fill(f[3], t, 0, 1, 1, 9999, 0.01, 0.019998, 0, 1.49)
    # equity = 10000 + 1.97 - 0.079194
    assert led.equity[-1]["equity"] == pytest.approx(10001.890806, rel=1e-12)
    # Maker fee 0: the same fills cost nothing.
    led0 = run(impl, make_market([*flat(10000, 1), (10000, 10090, 9790, 10000)]), s, venue(fees__maker=0.0))
    assert [x[6] for x in fills_of(led0)] == [0.0] * 4
    # One rung (levels 1): only rung 1 and its TP.
    led_one = run(impl, make_market([*flat(10000, 1), (10000, 10090, 9790, 10000)]), strategy(), venue())
    assert [x[2:4] for x in fills_of(led_one)] == [(0, 1), (1, 1)]
    # One rung with tp_steps=2: TP = ceil_tick(9900*1.02) = 10098 is not reached (close 10000).
    led1 = run(
        impl, make_market([*flat(10000, 1), (10000, 10090, 9790, 10000)]), strategy(exit__tp_steps=2), venue()
    )
    assert [x[2:4] for x in fills_of(led1)] == [(0, 1)]


@effect("exit.sl_steps", "backtest.slippage_bps", "fees.taker")
@pytest.mark.parametrize("impl", IMPLS)
def test_stop_loss_inside_the_bar_with_slippage(impl):
    # Bar 1 (10000,10000,9890,9895): long 0.01 fills at 9900; SL = floor_tick(9900*0.98) = 9702.
    # Bar 2 (9895,9895,9650,9660): path 9895 -> 9895 -> 9650: sell stop 9702 hit (9650 <= 9702 <= 9895).
    # slippage 10 bps: fill 9702*(1-0.001) = 9692.298; taker fee 9692.298*0.01*0.0005 = 0.04846149;
    # realized 0.01*(9692.298-9900) = -2.07702.
    bars = [*flat(10000, 1), (10000, 10000, 9890, 9895), (9895, 9895, 9650, 9660)]
    led = run(impl, make_market(bars), strategy(backtest__slippage_bps=10.0), venue())
    sl = fills_of(led, kind=2)
    assert len(sl) == 1
    assert_fill(sl[0], bar_ts(2), 0, 2, 1, 9692.298, 0.01, 0.04846149, 1, -2.07702)
    # No slippage: the stop fills at its price 9702; taker fee 0.001: 9702*0.01*0.001 = 0.09702.
    led0 = run(impl, make_market(bars), strategy(), venue(fees__taker=0.001))
    assert_fill(fills_of(led0, kind=2)[0], bar_ts(2), 0, 2, 1, 9702.0, 0.01, 0.09702, 1, -1.98)
    # sl_steps=4: SL = floor_tick(9900*0.96) = 9504 is below the low 9650: no stop.
    led4 = run(impl, make_market(bars), strategy(exit__sl_steps=4, backtest__slippage_bps=10.0), venue())
    assert fills_of(led4, kind=2) == []


@pytest.mark.parametrize("impl", IMPLS)
def test_stop_after_a_gap_fills_at_the_worse_open(impl):
    # Bar 2 opens at 9600, below the SL 9702: the stop fills at the open (the worse price), moved by
    # slippage 10 bps: 9600*0.999 = 9590.4; fee 9590.4*0.01*0.0005 = 0.047952; realized
    # 0.01*(9590.4-9900) = -3.096.
    bars = [*flat(10000, 1), (10000, 10000, 9890, 9895), (9600, 9650, 9590, 9640)]
    led = run(impl, make_market(bars), strategy(backtest__slippage_bps=10.0), venue())
    sl = fills_of(led, kind=2)
    assert len(sl) == 1
    assert_fill(sl[0], bar_ts(2), 0, 2, 1, 9590.4, 0.01, 0.047952, 1, -3.096)


@pytest.mark.parametrize("impl", IMPLS)
def test_take_profit_gapped_through_fills_at_its_own_price(impl):
    # Bar 2 opens at 10050, above the TP 9999: the limit fills at 9999 (maker), not at the open.
    # realized 0.01*(9999-9900) = 0.99, fee 9999*0.01*0.0002 = 0.019998.
    bars = [*flat(10000, 1), (10000, 10000, 9890, 9895), (10050, 10060, 10040, 10050)]
    led = run(impl, make_market(bars), strategy(), venue())
    tp = fills_of(led, kind=1)
    assert len(tp) == 1
    assert_fill(tp[0], bar_ts(2), 0, 1, 1, 9999, 0.01, 0.019998, 0, 0.99)


@effect("backtest.fill_on_touch")
@pytest.mark.parametrize("impl", IMPLS)
def test_limit_fills_on_touch_only_when_configured(impl):
    # Bar 1 low is exactly the rung 9900: a buy limit needs b < p without fill_on_touch, b <= p with it.
    bars = [*flat(10000, 1), (10000, 10000, 9900, 9950)]
    assert entries(run(impl, make_market(bars), strategy(), venue())) == []
    touched = entries(run(impl, make_market(bars), strategy(backtest__fill_on_touch=True), venue()))
    assert touched == [(bar_ts(1), 0, 1, 9900, 0.01)]


@effect("grid.grid_step_bps", "symbol_rules")
@pytest.mark.parametrize("impl", IMPLS)
def test_rung_price_follows_step_and_tick(impl):
    # step 37 bps: long rung = floor_tick(10000*(1-0.0037)) = floor_tick(9963) = 9963 (tick 0.1).
    # tick 7: floor(9963/7) = 1423 -> 1423*7 = 9961. Step 100 bps: rung 9900 is below the low 9950.
    bars = [*flat(10000, 1), (10000, 10000, 9950, 9990)]
    led = run(impl, make_market(bars), strategy(grid__grid_step_bps=37.0), venue())
    assert [e[3] for e in entries(led)] == [pytest.approx(9963.0)]
    led7 = run(
        impl, make_market(bars), strategy(grid__grid_step_bps=37.0), venue(symbol_rules__tick_size=7.0)
    )
    assert [e[3] for e in entries(led7)] == [pytest.approx(9961.0)]
    assert entries(run(impl, make_market(bars), strategy(), venue())) == []


@effect("grid.base_qty", "grid.qty_scale", "symbol_rules")
@pytest.mark.parametrize("impl", IMPLS)
def test_rung_qty_is_geometric_and_floored_to_the_step(impl):
    # base 0.013, scale 1.5: rung 1 = 0.013, rung 2 = floor_step(0.0195) = 0.019 (step 0.001).
    # step 0.005: rung 1 = floor_step(0.013) = 0.010, rung 2 = floor_step(0.0195) = 0.015.
    # scale 1.0: 0.013 and 0.013; base 0.02 (scale 1.5): 0.02 and 0.03.
    bars = [*flat(10000, 1), (10000, 10000, 9790, 9795)]
    s = strategy(grid__grid_levels_long=2, grid__base_qty=0.013, grid__qty_scale=1.5, exit__sl_steps=5)
    led = run(impl, make_market(bars), s, venue())
    assert [e[4] for e in entries(led)] == [pytest.approx(0.013), pytest.approx(0.019)]
    led5 = run(impl, make_market(bars), s, venue(symbol_rules__step_size=0.005, symbol_rules__min_qty=0.005))
    assert [e[4] for e in entries(led5)] == [pytest.approx(0.010), pytest.approx(0.015)]
    flat_scale = strategy(
        grid__grid_levels_long=2, grid__base_qty=0.013, grid__qty_scale=1.0, exit__sl_steps=5
    )
    assert [e[4] for e in entries(run(impl, make_market(bars), flat_scale, venue()))] == pytest.approx(
        [0.013] * 2
    )
    base2 = strategy(grid__grid_levels_long=2, grid__base_qty=0.02, grid__qty_scale=1.5, exit__sl_steps=5)
    assert [e[4] for e in entries(run(impl, make_market(bars), base2, venue()))] == pytest.approx(
        [0.02, 0.03]
    )


@effect("execution.maker_only", "execution.use_post_only_retries", "execution.retry_attempts")
@pytest.mark.parametrize("impl", IMPLS)
def test_post_only_reject_and_retries(impl):
    # Bar 1 opens at 9850, below the new long entry 9900: it crosses (buy price >= open).
    # maker_only, no retries: one POST_ONLY_REJECT, no fill.
    bars = [*flat(10000, 1), (9850, 9860, 9840, 9850)]
    led = run(impl, make_market(bars), strategy(), venue())
    assert kinds(led) == ["POST_ONLY_REJECT"]
    assert entries(led) == []
    # With 3 retries at 9899.9, 9899.8, 9899.7 (all >= 9850: each crosses again): 4 rejections, then
    # RETRY_LIMIT (attempts used up).
    s = strategy(execution__use_post_only_retries=True, execution__retry_attempts=3)
    led = run(impl, make_market(bars), s, venue())
    assert kinds(led) == ["POST_ONLY_REJECT"] * 4 + ["RETRY_LIMIT"]
    assert [e["price"] for e in led.events[:4]] == pytest.approx([9900.0, 9899.9, 9899.8, 9899.7])
    # Not maker_only: the crossing entry fills at once at the open as taker: 9850, fee
    # 9850*0.01*0.0005 = 0.04925.
    led = run(impl, make_market(bars), strategy(execution__maker_only=False), venue())
    assert kinds(led) == []
    f = fills_of(led)
    assert len(f) == 1
    assert_fill(f[0], bar_ts(1), 0, 0, 1, 9850, 0.01, 0.04925, 1, 0.0)


@effect("execution.retry_attempts")
@pytest.mark.parametrize("impl", IMPLS)
def test_retry_that_stops_crossing_rests_and_fills(impl):
    # Open 9899.85: 9900 and the retry 9899.9 cross; retry 2 at 9899.8 < open rests, then fills on the
    # way down to 9890 (maker). With only one retry attempt the entry is given up.
    bars = [*flat(10000, 1), (9899.85, 9899.85, 9890, 9895)]
    s = strategy(execution__use_post_only_retries=True, execution__retry_attempts=2)
    led = run(impl, make_market(bars), s, venue())
    assert kinds(led) == ["POST_ONLY_REJECT", "POST_ONLY_REJECT"]
    assert entries(led) == [(bar_ts(1), 0, 1, pytest.approx(9899.8), 0.01)]
    one = strategy(execution__use_post_only_retries=True, execution__retry_attempts=1)
    led1 = run(impl, make_market(bars), one, venue())
    assert kinds(led1) == ["POST_ONLY_REJECT", "POST_ONLY_REJECT", "RETRY_LIMIT"]
    assert entries(led1) == []


@effect("execution.retry_max_price_deviation_bps", "execution.optimization_mode")
@pytest.mark.parametrize("impl", IMPLS)
def test_retry_price_bound_and_optimization_mode(impl):
    # Bound 0.2 bps of 9900 = 0.198: retry 1 (9899.9, 0.101 bps away) is sent and rejected; retry 2
    # (9899.8, 0.202 bps away) would be beyond the bound: RETRY_LIMIT (reason RETRY_DEVIATION).
    bars = [*flat(10000, 1), (9850, 9860, 9840, 9850)]
    s = strategy(
        execution__use_post_only_retries=True,
        execution__retry_attempts=5,
        execution__retry_max_price_deviation_bps=0.2,
    )
    led = run(impl, make_market(bars), s, venue())
    assert kinds(led) == ["POST_ONLY_REJECT", "POST_ONLY_REJECT", "RETRY_LIMIT"]
    assert led.events[-1]["reason"] == Reason.RETRY_DEVIATION
    # Bound 100 bps: all 5 retries are sent: 6 rejections, then RETRY_LIMIT (attempts).
    wide = strategy(
        execution__use_post_only_retries=True,
        execution__retry_attempts=5,
        execution__retry_max_price_deviation_bps=100.0,
    )
    assert kinds(run(impl, make_market(bars), wide, venue())) == ["POST_ONLY_REJECT"] * 6 + ["RETRY_LIMIT"]
    # optimization_mode switches the retries off: a single rejection.
    s = strategy(
        execution__use_post_only_retries=True,
        execution__retry_attempts=5,
        execution__retry_max_price_deviation_bps=100.0,
        execution__optimization_mode=True,
    )
    assert kinds(run(impl, make_market(bars), s, venue())) == ["POST_ONLY_REJECT"]


@pytest.mark.parametrize("impl", IMPLS)
def test_taker_entry_never_fills_beyond_its_limit(impl):
    # Not maker_only, slippage 5 bps. Buy limit 9900, open 9899.95 (crosses: 9900 >= 9899.95):
    # o*(1 + 0.0005) = 9904.899975 is beyond the limit -> fills at min(9900, 9904.899975) = 9900 as
    # taker, fee 9900*0.01*0.0005 = 0.0495. Open 9850: 9850*1.0005 = 9854.925 < 9900 -> slippage applies,
    # fee 9854.925*0.01*0.0005 = 0.04927462.
    # Sell limit 10100, open 10100.05: o*(1 - 0.0005) = 10094.999975 -> max(10100, ...) = 10100,
    # fee 10100*0.01*0.0005 = 0.0505.
    s = strategy(execution__maker_only=False, backtest__slippage_bps=5.0)
    cases = [(9899.95, 0, 9900.0), (9850.0, 0, 9854.925), (10100.05, 1, 10100.0)]
    for o, side, price in cases:
        led = run(impl, make_market([*flat(10000, 1), (o,) * 4]), s, venue())
        f = fills_of(led)
        assert len(f) == 1, o
        assert_fill(f[0], bar_ts(1), side, 0, 1, price, 0.01, price * 0.01 * 0.0005, 1, 0.0)
