"""Hand-computed ladder decisions: re-centre, policy by regime, throttle, precision guard, order-size
validation reasons and rate-limit pacing.

Numbers as in test_scenarios_fills (C = 10000, s = 0.01, rungs 9900/9800/9700 and 10100/10200/10300,
qty 0.01, tick 0.1, step 0.001). A "sweep" bar runs through every rung so the entry fills show exactly
which orders rested.
"""

from __future__ import annotations

import pytest

from gridctl.engine.enums import EventKind, Reason

from effects import effect
from market_builders import IMPLS, bar_ts, entries, flat, kinds, make_market, run, strategy, venue

SWEEP = (10000, 10350, 9650, 10000)  # high first (350 <= 350): every short rung, then every long rung


@effect("rebalance.recenter_trigger_bps")
@pytest.mark.parametrize("impl", IMPLS)
def test_recenter_moves_the_ladder(impl):
    # step 300 bps: rungs 9700 / 10300. Bar 1 closes at 10200: 200 bps from C > 150 -> RECENTER to 10200,
    # long rung = floor_tick(10200*0.97) = 9894, short = ceil_tick(10200*1.03) = 10506.
    # Bar 2 dips to 9850: the re-centred rung 9894 fills (close 10100 is 98 bps from 10200: no re-centre).
    # Trigger 250 bps: no re-centre, 9700 not reached.
    bars = [*flat(10000, 1), *flat(10200, 1), (10200, 10200, 9850, 10100)]
    s = strategy(grid__grid_step_bps=300.0, rebalance__recenter_trigger_bps=150.0)
    led = run(impl, make_market(bars), s, venue())
    assert kinds(led) == ["RECENTER"]
    assert led.events[0]["ts"] == bar_ts(1)
    assert entries(led) == [(bar_ts(2), 0, 1, 9894.0, 0.01)]
    led250 = run(
        impl,
        make_market(bars),
        strategy(grid__grid_step_bps=300.0, rebalance__recenter_trigger_bps=250.0),
        venue(),
    )
    assert kinds(led250) == []
    assert entries(led250) == []


REGIME = dict(
    grid__grid_levels_long=3,
    grid__grid_levels_short=3,
    exit__sl_steps=10,
    regime__ema_fast=5,
    regime__ema_slow=10,
    regime__adx_len=5,
    regime__atr_len=5,
    regime__hysteresis_bps=0.0,
    policy__counter_levels=1,
    policy__counter_qty_scale=0.5,
)
# 11 trend bars j=0..10 with h = c+1, l = c-1: +DM = 1, -DM = 0 each bar (or the mirror), so +DI > 0 = -DI,
# DX = 100 and ADX = 100 >= 20. warmup = max(ema_slow 10, 2*adx_len 10, atr_len+1 6) = 10 bars: the regime
# is UP (or DOWN) from bar 9 on, because EMA5 - EMA10 of a rising series is > 0 (hysteresis 0).
UPTREND = [(10000 + j, 10001 + j, 9999 + j, 10000 + j) for j in range(11)]
DOWNTREND = [(10000 - j, 10001 - j, 9999 - j, 10000 - j) for j in range(11)]


def entry_slots(led):
    return sorted((e[1], e[2], e[4]) for e in entries(led))


@effect("policy.counter_levels", "policy.counter_qty_scale", "regime.hysteresis_bps")
@pytest.mark.parametrize("impl", IMPLS)
def test_throttled_counter_in_an_uptrend(impl):
    # UP: counter side = short keeps min(1, 3) = 1 rung at 0.01*0.5 = 0.005; long (trend) side full.
    # The sweep (10010,10400,9600,10000), high first (390 <= 410), fills what rests.
    bars = [*UPTREND, (10010, 10400, 9600, 10000)]
    led = run(impl, make_market(bars), strategy(**REGIME), venue())
    assert [r["regime"] for r in led.equity][8:11] == [0, 1, 1]
    assert entry_slots(led) == [(0, 1, 0.01), (0, 2, 0.01), (0, 3, 0.01), (1, 1, 0.005)]
    # Hysteresis 1000 bps: the spread never leaves the band, the regime stays SIDEWAYS: all 6 rungs full.
    side = run(impl, make_market(bars), strategy(**{**REGIME, "regime__hysteresis_bps": 1000.0}), venue())
    assert {r["regime"] for r in side.equity} == {0}
    assert entry_slots(side) == [(s, i, 0.01) for s in (0, 1) for i in (1, 2, 3)]
    # counter_levels 2: short rungs 1-2 at 0.005; counter_qty_scale 0.3: short rung 1 at 0.003.
    led2 = run(impl, make_market(bars), strategy(**{**REGIME, "policy__counter_levels": 2}), venue())
    assert entry_slots(led2) == [(0, 1, 0.01), (0, 2, 0.01), (0, 3, 0.01), (1, 1, 0.005), (1, 2, 0.005)]
    led3 = run(impl, make_market(bars), strategy(**{**REGIME, "policy__counter_qty_scale": 0.3}), venue())
    assert entry_slots(led3) == [(0, 1, 0.01), (0, 2, 0.01), (0, 3, 0.01), (1, 1, 0.003)]


@effect("policy.strategy", "regime.adx_threshold")
@pytest.mark.parametrize("impl", IMPLS)
def test_policies_in_a_downtrend(impl):
    # DOWN: counter side = long. Sweep (9990,10400,9600,10000), low first (410 > 390).
    # throttled-counter: long 1 rung at 0.005, short (trend) side 3 full rungs.
    # core-and-scalp: both sides keep 1 rung; long (counter) at 0.005, short at 0.01.
    bars = [*DOWNTREND, (9990, 10400, 9600, 10000)]
    led = run(impl, make_market(bars), strategy(**REGIME), venue())
    assert [r["regime"] for r in led.equity][9] == 2
    assert entry_slots(led) == [(0, 1, 0.005), (1, 1, 0.01), (1, 2, 0.01), (1, 3, 0.01)]
    cas = run(impl, make_market(bars), strategy(**{**REGIME, "policy__strategy": "core-and-scalp"}), venue())
    assert entry_slots(cas) == [(0, 1, 0.005), (1, 1, 0.01)]
    # ADX is exactly 100 here; a threshold above it is impossible (max 100), but ADX < threshold needs
    # strictly below, so threshold 100 keeps the trend while the DX of a choppy series would not.
    # A flat market has DX 0 -> ADX 0 < 20 -> SIDEWAYS: all rungs full even with the same policy.
    chop = [*flat(10000, 11), (9990, 10400, 9600, 10000)]
    led_chop = run(impl, make_market(chop), strategy(**REGIME), venue())
    assert {r["regime"] for r in led_chop.equity} == {0}
    # adx_threshold 0 with the flat market: ADX 0 is not < 0, spread 0 is not < hysteresis 0, so the
    # regime is classified from the spread: 0 -> DOWN ("UP if spread > 0 else DOWN").
    led_thr = run(impl, make_market(chop), strategy(**{**REGIME, "regime__adx_threshold": 0.0}), venue())
    assert [r["regime"] for r in led_thr.equity][9:11] == [2, 2]


@effect("policy.throttle")
@pytest.mark.parametrize("impl", IMPLS)
def test_throttle_scales_entry_qty(impl):
    # qty = floor_step(0.01 * 0.5) = 0.005; throttle 0: qty 0 -> nothing placed.
    bars = [*flat(10000, 1), SWEEP]
    assert entry_slots(run(impl, make_market(bars), strategy(policy__throttle=0.5), venue())) == [
        (0, 1, 0.005),
        (1, 1, 0.005),
    ]
    assert entries(run(impl, make_market(bars), strategy(policy__throttle=0.0), venue())) == []


@effect("symbol_rules")
@pytest.mark.parametrize("impl", IMPLS)
def test_precision_guard_skips_small_orders(impl):
    # qty 0.001: long notional 0.001*9900 = 9.9, short 0.001*10100 = 10.1.
    # min_notional 10: the long is not placed (not an error: no event), the short is.
    # min_qty 0.002: neither is placed.
    bars = [*flat(10000, 1), SWEEP]
    s = strategy(grid__base_qty=0.001)
    v = dict(risk__min_order_size_usdt=1.0)
    led = run(impl, make_market(bars), s, venue(symbol_rules__min_notional=10.0, **v))
    assert entry_slots(led) == [(1, 1, 0.001)]
    assert kinds(led) == []
    led5 = run(impl, make_market(bars), s, venue(symbol_rules__min_notional=5.0, **v))
    assert entry_slots(led5) == [(0, 1, 0.001), (1, 1, 0.001)]
    led_q = run(
        impl, make_market(bars), s, venue(symbol_rules__min_notional=5.0, symbol_rules__min_qty=0.002, **v)
    )
    assert entries(led_q) == []
    assert kinds(led_q) == []


@effect("symbol_rules")
@pytest.mark.parametrize("impl", IMPLS)
def test_orders_above_max_qty_are_not_placed(impl):
    # qty 0.01 > max_qty 0.005: refused; max_qty 0.02 lets both rungs rest and fill.
    bars = [*flat(10000, 1), SWEEP]
    assert entries(run(impl, make_market(bars), strategy(), venue(symbol_rules__max_qty=0.005))) == []
    assert len(entries(run(impl, make_market(bars), strategy(), venue(symbol_rules__max_qty=0.02)))) == 2


# Each case: overrides that make rung 1 fail one rule, and the (side, reason) rejections expected at bar 0.
# Long 0.01 @ 9900 = 99 USDT, short 0.01 @ 10100 = 101 USDT; leverage 10.
VALIDATION_CASES = {
    # margin 9.9 and 10.1 > 1.0 * equity 5
    "pct": ({"backtest__initial_balance": 5.0}, {}, [(0, Reason.SIZE_PCT), (1, Reason.SIZE_PCT)]),
    # 0.01 > 0.005 BTC
    "qty": ({"position__max_position_size": 0.005}, {}, [(0, Reason.SIZE_QTY), (1, Reason.SIZE_QTY)]),
    # 99 and 101 > 50 USDT
    "inventory": (
        {"rebalance__max_inventory_quote": 50.0},
        {},
        [(0, Reason.SIZE_INVENTORY), (1, Reason.SIZE_INVENTORY)],
    ),
    # 99 < 100 <= 101: only the long is too small
    "order_min": ({}, {"risk__min_order_size_usdt": 100.0}, [(0, Reason.SIZE_ORDER)]),
    # 101 > 100 >= 99: only the short is too large
    "order_max": ({}, {"risk__max_order_size_usdt": 100.0}, [(1, Reason.SIZE_ORDER)]),
    # leverage 125 allows only bracket 1 (cap 50000): 6 * 9900 = 59400 and 60600 are beyond it
    # (margin 475.2 and 484.8 <= equity 20000, so SIZE_PCT passes first; the baseline at leverage 10
    # margins both sides (6 + 6)*10100/10 = 12120 <= 20000, so SIZE_MARGIN passes there).
    "bracket": (
        {"grid__base_qty": 6.0, "backtest__initial_balance": 20000.0},
        {"trading__leverage": 125, "risk__max_leverage": 125},
        [(0, Reason.SIZE_BRACKET), (1, Reason.SIZE_BRACKET)],
    ),
    # leverage 1, 0.6 per rung: each side alone fits 1.0 * equity (5940 and 6060 <= 10000), but the
    # short (submitted after the long) makes both sides (0.6 + 0.6)*10100/1 = 12120 > 10000.
    # Baseline at leverage 10: 1212 <= 10000.
    "margin": ({"grid__base_qty": 0.6}, {"trading__leverage": 1}, [(1, Reason.SIZE_MARGIN)]),
}


@effect(
    "backtest.initial_balance",
    "position.max_position_size",
    "rebalance.max_inventory_quote",
    "risk.min_order_size_usdt",
    "risk.max_order_size_usdt",
    "trading.leverage",
)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_order_size_validation_reasons(impl, case):
    strat_over, venue_over, want = VALIDATION_CASES[case]
    bars = [*flat(10000, 3), SWEEP]
    # Baseline without the case's limit (the other overrides kept): nothing is rejected.
    base = run(impl, make_market(bars), strategy(**strat_over) if venue_over else strategy(), venue())
    assert [e for e in base.events if e["kind"] == EventKind.ORDER_REJECTED] == []
    led = run(impl, make_market(bars), strategy(**strat_over), venue(**venue_over))
    rejected = [e for e in led.events if e["kind"] == EventKind.ORDER_REJECTED]
    # One rejection per slot at bar 0's close; the same (slot, price, qty, position) is never resubmitted.
    assert [(e["ts"], e["side"], e["level"], e["reason"]) for e in rejected] == [
        (bar_ts(0), side, 1, reason) for side, reason in want
    ]
    rejected_sides = {side for side, _ in want}
    assert {e[1] for e in entries(led)} == {0, 1} - rejected_sides


@effect("risk_management.enable_position_validation", "position.max_position_pct")
@pytest.mark.parametrize("impl", IMPLS)
def test_validation_switched_off(impl):
    # Same as the "qty" case with enable_position_validation false: no rejection, both rungs fill.
    # max_position_pct 0.1: margin 9.9 <= 0.1*equity 10000 -> fine; with initial 50: 9.9 > 5 -> SIZE_PCT.
    bars = [*flat(10000, 1), SWEEP]
    off = strategy(position__max_position_size=0.005, risk_management__enable_position_validation=False)
    led = run(impl, make_market(bars), off, venue())
    assert kinds(led) == []
    assert len(entries(led)) == 2
    pct = strategy(position__max_position_pct=0.1, backtest__initial_balance=50.0)
    assert [e["reason"] for e in run(impl, make_market(bars), pct, venue()).events] == [Reason.SIZE_PCT] * 2


@effect("rate_limits.orders_per_second", "rate_limits.orders_per_minute")
@pytest.mark.parametrize("impl", IMPLS)
def test_rate_limits_defer_submissions(impl):
    # 6 rungs wanted at bar 0's close. At most 2 submissions per bar close: the sweep fills 2 entries;
    # with 100 all 6. 1m bars with orders_per_minute 1: one submission per close (the window (t-60 s, t]
    # holds only the current close), so 1 entry fills.
    bars = [*flat(10000, 1), SWEEP]
    s = strategy(grid__grid_levels_long=3, grid__grid_levels_short=3, exit__sl_steps=10)
    assert len(entries(run(impl, make_market(bars), s, venue()))) == 6
    assert len(entries(run(impl, make_market(bars), s, venue(rate_limits__orders_per_second=2)))) == 2
    m1 = make_market(bars, timeframe="1m")
    assert len(entries(run(impl, m1, s, venue()))) == 6
    assert len(entries(run(impl, m1, s, venue(rate_limits__orders_per_minute=1)))) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_rejected_order_is_not_resubmitted_while_its_inputs_hold(impl):
    # DESIGN.md: a refusal is remembered with what it depended on; SIZE_ORDER reads only the order's
    # price and qty, so no position change brings the same order back.
    # min order 100 USDT: long rung 1 (0.01 @ 9900 = 99) is rejected (SIZE_ORDER); rung 2
    # (floor_step(0.015) @ 9800 = 147) is fine. tp_steps 3: rung 2's TP = ceil_tick(9800*1.03) = 10094.
    # bar 0 close 10000 -> reject (slot L1, 9900, 0.01)
    # bar 1 dips to 9790: L2 fills; close 9950, position 0.015: the refusal still holds (no event)
    # bar 2 rises to 10095: the TP 10094 fills (short rung 10100 not reached); close 9960: still holds.
    bars = [*flat(10000, 1), (10000, 10000, 9790, 9950), (9950, 10095, 9950, 9960)]
    s = strategy(grid__grid_levels_long=2, grid__qty_scale=1.5, exit__tp_steps=3)
    led = run(impl, make_market(bars), s, venue(risk__min_order_size_usdt=100.0))
    rejected = [(e["ts"], e["side"], e["level"], e["reason"], e["value"]) for e in led.events]
    assert rejected == [(bar_ts(0), 0, 1, Reason.SIZE_ORDER, 0.0)]
    assert [(f["ts"], f["kind"], f["level"]) for f in led.fills] == [(bar_ts(1), 0, 2), (bar_ts(2), 1, 2)]


@effect("regime.ema_fast", "regime.ema_slow", "regime.adx_len", "regime.atr_len")
@pytest.mark.parametrize("impl", IMPLS)
def test_regime_lengths_shift_warmup_and_spread(impl):
    # UPTREND c_k = 10000 + k. For a linear series an EMA seeded with the SMA of its first n values lags
    # by exactly (n-1)/2: EMA5 = c - 2, EMA9 = c - 4, EMA10 = c - 4.5.
    # Warm-up max(ema_slow, 2*adx_len, atr_len+1) = 10 bars -> UP from bar 9; raising any one length to
    # give 12 bars (ema_slow 12, adx_len 6, atr_len 11) keeps bars 9 and 10 SIDEWAYS.
    # Spread at bar 10 (c = 10010): fast 5 -> 2.5/10005.5*1e4 = 2.499 bps, fast 9 -> 0.4997 bps; with
    # hysteresis 1 bps the fast-9 spread never leaves the band, so the regime stays SIDEWAYS.
    def regimes(**over):
        led = run(impl, make_market(UPTREND), strategy(**{**REGIME, **over}), venue())
        return [r["regime"] for r in led.equity][8:11]

    assert regimes() == [0, 1, 1]
    assert regimes(regime__ema_slow=12) == [0, 0, 0]
    assert regimes(regime__adx_len=6) == [0, 0, 0]
    assert regimes(regime__atr_len=11) == [0, 0, 0]
    assert regimes(regime__hysteresis_bps=1.0) == [0, 1, 1]
    assert regimes(regime__hysteresis_bps=1.0, regime__ema_fast=9) == [0, 0, 0]


@effect("grid.grid_levels_short")
@pytest.mark.parametrize("impl", IMPLS)
def test_short_levels(impl):
    # The sweep runs through 10100, 10200 and 10300: 1 short rung fills by default, 3 with 3 levels.
    bars = [*flat(10000, 1), SWEEP]
    shorts = [e for e in entries(run(impl, make_market(bars), strategy(grid__grid_levels_short=3), venue()))]
    assert [(e[1], e[2]) for e in shorts if e[1] == 1] == [(1, 1), (1, 2), (1, 3)]
    one = entries(run(impl, make_market(bars), strategy(), venue()))
    assert [(e[1], e[2]) for e in one if e[1] == 1] == [(1, 1)]


@effect("grid.base_qty")
@pytest.mark.parametrize("impl", IMPLS)
def test_both_sides_together_must_fit_the_equity(impl):
    # Leverage 1, max_position_pct 1.0, equity 10000, base_qty 0.6. Bar 0's close submits long rung 1
    # first: A = 0.6 -> 0.6*9900 = 5940 <= 10000. Then short rung 1: SIZE_PCT sees its side only,
    # 0.6*10100 = 6060 <= 1.0*10000, but the account would margin A = 0.6 + 0.6 (the resting long)
    # -> 1.2*10100 = 12120 > 10000: refused with SIZE_MARGIN (value: side position 0), once.
    bars = [*flat(10000, 2), SWEEP]
    v1 = venue(trading__leverage=1)
    led = run(impl, make_market(bars), strategy(grid__base_qty=0.6), v1)
    got = [(e["ts"], e["kind"], e["reason"], e["side"], e["level"]) for e in led.events]
    assert got == [(bar_ts(0), EventKind.ORDER_REJECTED, Reason.SIZE_MARGIN, 1, 1)]
    assert (led.events[0]["price"], led.events[0]["qty"]) == (10100.0, pytest.approx(0.6))
    assert {e[1] for e in entries(led)} == {0}  # only the long rung ever rests and fills
    if impl == "kernel":  # the batch summary counts it under its own reason and in the total
        assert (led.summary["rejected_size_margin"], led.summary["rejections"]) == (1.0, 1.0)
    # 0.4 per rung: A = 0.8 -> 0.8*10100 = 8080 <= 10000: both sides rest and the sweep fills both.
    ok = run(impl, make_market(bars), strategy(grid__base_qty=0.4), v1)
    assert kinds(ok) == []
    assert {e[1] for e in entries(ok)} == {0, 1}


@effect("backtest.initial_balance")
@pytest.mark.parametrize("impl", IMPLS)
def test_retry_is_refused_by_the_account_margin(impl):
    # Leverage 1, base_qty 0.5, equity 10100.05. Bar 0's close: long 0.5 @ 9900 (A = 0.5 -> 4950) and
    # short 0.5 @ 10100 (A = 0.5 + 0.5 -> 10100 <= 10100.05) both rest. Bar 1 opens at 10150: the short
    # crosses (10100 <= 10150) -> POST_ONLY_REJECT; its retry at 10100.1 passes SIZE_PCT (5050.05) but
    # A = 1.0 -> 10100.1 > 10100.05: ORDER_REJECTED with SIZE_MARGIN. With equity 10200 the retry is
    # accepted, crosses again and the single attempt is used up (RETRY_LIMIT).
    bars = [*flat(10000, 1), (10150.0,) * 4]
    over = {
        "grid__base_qty": 0.5,
        "execution__use_post_only_retries": True,
        "execution__retry_attempts": 1,
    }
    v1 = venue(trading__leverage=1)
    led = run(impl, make_market(bars), strategy(backtest__initial_balance=10100.05, **over), v1)
    assert kinds(led) == ["POST_ONLY_REJECT", "ORDER_REJECTED"]
    e = led.events[1]
    assert (e["ts"], e["reason"], e["side"], e["level"]) == (bar_ts(1), Reason.SIZE_MARGIN, 1, 1)
    assert e["price"] == pytest.approx(10100.1)
    rich = run(impl, make_market(bars), strategy(backtest__initial_balance=10200.0, **over), v1)
    assert kinds(rich) == ["POST_ONLY_REJECT", "POST_ONLY_REJECT", "RETRY_LIMIT"]
