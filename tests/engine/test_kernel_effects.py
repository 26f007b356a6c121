"""Config fields change kernel behaviour: each test runs a small scenario twice, changing one field.

Base: the shipped default strategy and venue with the isolating settings of ``market_builders``
(step 100 bps = 1 %, one rung per side, base_qty 0.01, tp 1 / sl 2 steps, no re-centring, regime
indicators too long to warm up, funding rate 0). Markets are 1 h bars around 10 000 (tick 0.1), so
the first close C = 10000 puts long rung 1 at 9900 and short rung 1 at 10100.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.configs.schema import VenueConfig
from gridctl.engine.enums import EventKind, FillKind, Reason, Regime, Side
from gridctl.engine.run import RunOutput, run_single

from effects import effect
from market_builders import T0, legacy_venue, make_market, strategy, venue

HOUR = 3_600_000
P0 = 10_000.0
FLAT = (P0, P0, P0, P0)
DIP = (P0, P0, 9850.0, 9950.0)  # trades through long rung 1 (9900), not rung 2 (9800)
DEEP = (P0, P0, 9650.0, 9950.0)  # trades through long rungs 1-3 (9900, 9800, 9700)
POP = (P0, 10150.0, P0, 10050.0)  # trades through short rung 1 (10100) only


def run(bars: list, funding: list | None = None, s: dict | None = None, v: Any = None) -> RunOutput:
    ven = v if isinstance(v, VenueConfig) else venue(**(v or {}))
    return run_single(make_market(bars, funding=funding), strategy(**(s or {})), ven)


def entries(out: RunOutput, side: int | None = None) -> list[tuple[int, float, float]]:
    """(level, price, qty) of each entry fill (optionally of one side)."""
    f = out.fills[out.fills["kind"] == FillKind.ENTRY]
    if side is not None:
        f = f[f["side"] == side]
    return [(int(r["level"]), round(float(r["price"]), 6), round(float(r["qty"]), 9)) for r in f]


def rejections(out: RunOutput) -> list[int]:
    ev = out.events[out.events["kind"] == EventKind.ORDER_REJECTED]
    return [int(r) for r in ev["reason"]]


# ------------------------------------------------------------------------------------------ ladder


@effect("grid.grid_levels_short")
def test_levels_short_adds_short_rungs() -> None:
    bars = [FLAT, (P0, 10250.0, P0, 10250.0)]  # up through 10100 and 10200 (SL of rung 1: 10302.0)
    assert entries(run(bars, s={"grid.grid_levels_short": 1}), Side.SHORT) == [(1, 10100.0, 0.01)]
    assert entries(run(bars, s={"grid.grid_levels_short": 2}), Side.SHORT) == [
        (1, 10100.0, 0.01),
        (2, 10200.0, 0.01),
    ]


@effect("rebalance.recenter_trigger_bps")
def test_recenter_trigger_moves_the_ladder() -> None:
    # Close 10050 is 50 bps from C: a 40 bps trigger re-centres (long 1 -> 10050*0.99 = 9949.5), a
    # 10000 bps trigger keeps 9900. The next bar's low 9940 reaches only the re-centred rung; its close
    # 10020 is 29.9 bps from 10050, inside the trigger.
    bars = [FLAT, (P0, 10050.0, P0, 10050.0), (10050.0, 10050.0, 9940.0, 10020.0)]
    moved = run(bars, s={"rebalance.recenter_trigger_bps": 40.0})
    kept = run(bars, s={"rebalance.recenter_trigger_bps": 10000.0})
    assert [int(k) for k in moved.events["kind"]] == [EventKind.RECENTER]
    assert moved.events["price"][0] == 10050.0 and moved.events["value"][0] == P0
    assert entries(moved, Side.LONG) == [(1, 9949.5, 0.01)]
    assert len(kept.events) == 0 and entries(kept) == []


# ------------------------------------------------------------------------------------------ sizing


@pytest.mark.parametrize(
    ("field", "limit", "reason"),
    [
        # Q*price = 0.01 * 9900 = 99 USDT > 50
        ("rebalance.max_inventory_quote", 50.0, Reason.SIZE_INVENTORY),
        # Q = 0.01 > 0.005
        ("position.max_position_size", 0.005, Reason.SIZE_QTY),
    ],
)
@effect("rebalance.max_inventory_quote", "position.max_position_size")
def test_position_limits_refuse_entries(field: str, limit: float, reason: int) -> None:
    tight = run([FLAT, DIP], s={field: limit})
    loose = run([FLAT, DIP])
    # Both rungs are refused at the first close (long 9900, short 10100); nothing fills.
    assert rejections(tight) == [reason, reason] and entries(tight) == []
    assert rejections(loose) == [] and entries(loose) == [(1, 9900.0, 0.01)]
    assert tight.summary["errors"] == 2 and loose.summary["errors"] == 0


@effect("position.max_position_pct", "trading.leverage", "backtest.initial_balance")
def test_margin_share_of_equity_refuses_entries() -> None:
    # Long rung: 0.01 * 9900 = 99 notional. Equity 50: at leverage 10 the margin 9.9 <= 1.0 * 50 passes
    # and fills; at max_position_pct 0.1 (5 USDT) it is refused; at leverage 1 (99 > 50) it is refused.
    s = {"backtest.initial_balance": 50.0}
    ok = run([FLAT, DIP], s=s, v={"trading.leverage": 10})
    pct = run([FLAT, DIP], s={**s, "position.max_position_pct": 0.1}, v={"trading.leverage": 10})
    lev = run([FLAT, DIP], s=s, v={"trading.leverage": 1})
    assert entries(ok) == [(1, 9900.0, 0.01)]
    assert rejections(pct)[:1] == [Reason.SIZE_PCT] and entries(pct) == []
    assert rejections(lev)[:1] == [Reason.SIZE_PCT] and entries(lev) == []


@effect("risk.min_order_size_usdt", "risk.max_order_size_usdt")
def test_order_notional_bounds() -> None:
    # Order notional 99 (long) / 101 (short).
    low = run([FLAT, DIP], v={"risk.min_order_size_usdt": 200.0})
    high = run([FLAT, DIP], v={"risk.max_order_size_usdt": 50.0})
    ok = run([FLAT, DIP], v={"risk.min_order_size_usdt": 5.0, "risk.max_order_size_usdt": 1000.0})
    assert rejections(low) == [Reason.SIZE_ORDER] * 2 and entries(low) == []
    assert rejections(high) == [Reason.SIZE_ORDER] * 2 and entries(high) == []
    assert entries(ok) == [(1, 9900.0, 0.01)]


@effect("risk_management.enable_position_validation")
def test_validation_switch() -> None:
    s = {"position.max_position_size": 0.005}
    on = run([FLAT, DIP], s=s)
    off = run([FLAT, DIP], s={**s, "risk_management.enable_position_validation": False})
    assert rejections(on) == [Reason.SIZE_QTY] * 2 and entries(on) == []
    assert rejections(off) == [] and entries(off) == [(1, 9900.0, 0.01)]
    assert off.meta["gates_disabled"] == ["risk_management.enable_position_validation"]


def test_validation_off_keeps_the_exchange_rules() -> None:
    # Long rung 0.01 * 9900 = 99 notional at leverage 1 needs 99 USDT of initial margin; equity is 50.
    # With validation on the bot's own SIZE_PCT (99 > 1.0 * 50) refuses it first; off, the exchange's
    # initial-margin rule still refuses it (SIZE_MARGIN): no setting trades beyond the account.
    s = {"backtest.initial_balance": 50.0}
    on = run([FLAT, DIP], s=s, v={"trading.leverage": 1})
    off_s = {**s, "risk_management.enable_position_validation": False}
    off = run([FLAT, DIP], s=off_s, v={"trading.leverage": 1})
    assert rejections(on)[:1] == [Reason.SIZE_PCT] and entries(on) == []
    assert rejections(off)[:1] == [Reason.SIZE_MARGIN] and entries(off) == []


@pytest.mark.parametrize(
    ("venue_changes", "skipped"),
    [
        ({"min_notional": 200.0}, True),  # 99 < 200
        ({"min_qty": 0.02}, True),  # 0.01 < 0.02
        ({"max_qty": 0.005}, True),  # 0.01 > 0.005
        ({}, False),
    ],
)
@effect("precision.min_notional", "precision.min_qty", "precision.max_qty")
def test_precision_guard_skips_without_errors(venue_changes: dict, skipped: bool) -> None:
    # The legacy precision block of a one-symbol venue is that symbol's rules.
    out = run([FLAT, DIP], v=legacy_venue(**venue_changes))
    if skipped:
        # Two rungs skipped at each of the two closes: 4, and no error / rejection.
        assert out.summary["skipped_precision"] == 4 and entries(out) == []
        assert out.summary["errors"] == 0 and len(out.events) == 0
    else:
        assert out.summary["skipped_precision"] == 0 and entries(out) == [(1, 9900.0, 0.01)]


def venue_without(*keys: str, **changes: Any) -> VenueConfig:
    """The legacy test venue with precision keys removed (so the *_precision defaults apply) and changes."""
    return legacy_venue(drop=keys, **changes)


@effect("precision.price_precision")
def test_price_precision_sets_the_tick() -> None:
    # C = 10003.7: long rung 1 = 10003.7 * 0.99 = 9903.663 -> 9903.6 at tick 0.1, 9903 at tick 1.
    bars = [(10003.7,) * 4, (10003.7, 10003.7, 9850.0, 9950.0)]
    one = run(bars, v=venue_without("tick_size", price_precision=1))
    zero = run(bars, v=venue_without("tick_size", price_precision=0))
    assert entries(one, Side.LONG) == [(1, 9903.6, 0.01)]
    assert entries(zero, Side.LONG) == [(1, 9903.0, 0.01)]


@effect("precision.quantity_precision")
def test_quantity_precision_sets_the_step() -> None:
    # base_qty 0.0155 floors to 0.015 at step 0.001 and to 0.01 at step 0.01.
    s = {"grid.base_qty": 0.0155}
    three = run([FLAT, DIP], s=s, v=venue_without("step_size", quantity_precision=3))
    two = run([FLAT, DIP], s=s, v=venue_without("step_size", quantity_precision=2))
    assert entries(three) == [(1, 9900.0, 0.015)]
    assert entries(two) == [(1, 9900.0, 0.01)]


@effect("policy.throttle")
def test_throttle_scales_entries() -> None:
    assert entries(run([FLAT, DIP], s={"policy.throttle": 0.5})) == [(1, 9900.0, 0.005)]
    assert entries(run([FLAT, DIP], s={"policy.throttle": 1.0})) == [(1, 9900.0, 0.01)]
    # Throttle 0: 0.0 qty fails the precision guard, nothing is placed.
    assert entries(run([FLAT, DIP], s={"policy.throttle": 0.0})) == []


# ------------------------------------------------------------------------------------------ pacing


@effect("rate_limits.orders_per_second", "rate_limits.orders_per_minute")
@pytest.mark.parametrize("field", ["rate_limits.orders_per_second", "rate_limits.orders_per_minute"])
def test_rate_limits_defer_entries(field: str) -> None:
    # Three rungs per side: 6 entries wanted at the first close. With 2 per bar (or per 60 s, and 1 h
    # bars) only long 1 and short 1 go out (nearest first); the deep dip then fills one rung, not three.
    s = {"grid.grid_levels_long": 3, "grid.grid_levels_short": 3}
    paced = run([FLAT, DEEP], s=s, v={field: 2})
    free = run([FLAT, DEEP], s=s)
    assert entries(paced) == [(1, 9900.0, 0.01)]
    assert entries(free) == [(1, 9900.0, 0.01), (2, 9800.0, 0.01), (3, 9700.0, 0.01)]
    # Deferred: 4 at the first close. In the dip long 1's stop (9900*0.98 = 9702) fills too, so at the
    # second close long 1, long 2/3 and short 2/3 are wanted (short 1 still rests): 2 go out, 3 wait.
    assert paced.summary["orders_deferred"] == 7 and free.summary["orders_deferred"] == 0


# ------------------------------------------------------------------------------------------ funding guard


@effect("funding.funding_window_minutes", "funding.funding_max_cost_bps")
def test_funding_guard_shrinks_the_paying_side() -> None:
    # Settlements at T0 (rate 0.002) and T0 + 8 h. First close at T0 + 1 h: 7 h = 420 min before T1.
    # Window 480 min: cost 0.002*1e4 * 480/480 = 20 bps > 12 -> longs (payers) x 420/480 = 0.875,
    # qty floor(0.00875) = 0.008. A 60 min window or a 100 bps limit leaves 0.01. Shorts stay 0.01.
    funding = [(T0, 0.002, P0), (T0 + 8 * HOUR, 0.002, P0)]
    bars = [FLAT, DIP]
    guarded = run(
        bars, funding, s={"funding.funding_max_cost_bps": 12.0, "funding.funding_window_minutes": 480}
    )
    narrow = run(
        bars, funding, s={"funding.funding_max_cost_bps": 12.0, "funding.funding_window_minutes": 60}
    )
    cheap = run(
        bars, funding, s={"funding.funding_max_cost_bps": 100.0, "funding.funding_window_minutes": 480}
    )
    assert entries(guarded) == [(1, 9900.0, 0.008)]
    assert entries(narrow) == [(1, 9900.0, 0.01)]
    assert entries(cheap) == [(1, 9900.0, 0.01)]
    pop = run([FLAT, POP], funding, s={"funding.funding_max_cost_bps": 12.0})
    assert entries(pop) == [(1, 10100.0, 0.01)]


# ------------------------------------------------------------------------------------------ regime / policy


def trend(n: int, dip: float = 0.995) -> list[tuple[float, float, float, float]]:
    """Closes rising 0.4 % per bar; every other bar's low sits ``dip`` x its open."""
    bars = []
    prev = P0
    for k in range(n):
        c = P0 * 1.004 ** (k + 1)
        lo = prev * (dip if k % 2 else 0.999)
        bars.append((prev, c * 1.001, lo, c))
        prev = c
    return bars


FAST = {
    "regime.ema_fast": 5,
    "regime.ema_slow": 10,
    "regime.adx_len": 5,
    "regime.atr_len": 5,
    "regime.hysteresis_bps": 0.0,
    "regime.adx_threshold": 0.0,
}


def regimes(bars: list, **changes: float) -> np.ndarray:
    return run(bars, s={**FAST, **changes}).equity["regime"]


def first_up(reg: np.ndarray) -> int | None:
    hit = np.flatnonzero(reg == Regime.UP)
    return int(hit[0]) if hit.size else None


@effect("regime.ema_slow", "regime.adx_len", "regime.atr_len")
def test_indicator_lengths_set_the_warmup() -> None:
    # warmup = max(ema_slow, 2*adx_len, atr_len + 1) bars; in a steady uptrend (spread > 0, threshold 0)
    # the first UP bar is bar warmup - 1.
    bars = trend(30)
    assert first_up(regimes(bars)) == 9  # max(10, 10, 6) = 10
    assert first_up(regimes(bars, **{"regime.ema_slow": 20})) == 19  # max(20, 10, 6)
    assert first_up(regimes(bars, **{"regime.adx_len": 8})) == 15  # max(10, 16, 6)
    assert first_up(regimes(bars, **{"regime.atr_len": 15})) == 15  # max(10, 10, 16)


@effect("regime.hysteresis_bps", "regime.ema_fast")
def test_spread_band_and_fast_ema() -> None:
    # In a trend of g = 0.4 %/bar an EMA(n) lags (n-1)/2 bars, so the spread of EMA(5) over EMA(10)
    # settles near (4.5 - 2) * 40 = 100 bps and that of EMA(9) over EMA(10) near (4.5 - 4) * 40 = 20 bps.
    bars = trend(40)
    assert first_up(regimes(bars, **{"regime.hysteresis_bps": 0.0})) == 9
    assert first_up(regimes(bars, **{"regime.hysteresis_bps": 1000.0})) is None
    assert first_up(regimes(bars, **{"regime.hysteresis_bps": 60.0})) is not None  # EMA(5): ~100 > 60
    assert first_up(regimes(bars, **{"regime.hysteresis_bps": 60.0, "regime.ema_fast": 9})) is None


@effect("regime.adx_threshold")
def test_adx_threshold_keeps_sideways() -> None:
    # Lows 2 % under the open every other bar: the low falls 0.999 - 0.98*1.004 = 1.5 % below the
    # previous low while the high rises 0.4 %, so -DM > 0 there, DX < 100 and ADX < 100: a threshold
    # of 100 is never reached, 0 always is.
    bars = trend(30, dip=0.98)
    assert first_up(regimes(bars, **{"regime.adx_threshold": 0.0})) == 9
    assert first_up(regimes(bars, **{"regime.adx_threshold": 100.0})) is None


def trend_then(last: tuple[float, float, float, float] | str, n: int = 14) -> list:
    """Uptrend bars, then one bar that dips 2.5 % ("dip") or pops 1.5 % ("pop") from the last close."""
    bars = trend(n)
    c = bars[-1][3]
    if last == "dip":
        bars.append((c, c, c * 0.975, c * 0.99))
    else:
        bars.append((c, c * 1.015, c, c * 1.005))
    return bars


POLICY = {
    **FAST,
    "rebalance.recenter_trigger_bps": 1.0,  # the ladder follows every close
    "grid.grid_levels_long": 2,
    "grid.grid_levels_short": 1,
    "policy.counter_levels": 1,
    "policy.counter_qty_scale": 0.5,
}


@effect("policy.strategy")
def test_core_and_scalp_cuts_the_trend_side_too() -> None:
    # In UP the trend side is long: throttled-counter keeps both long rungs (-1 %, -2 %), core-and-scalp
    # keeps min(counter_levels 1, 2) = 1. The 2.5 % dip reaches both rungs.
    bars = trend_then("dip")
    full = run(bars, s={**POLICY, "policy.strategy": "throttled-counter"})
    core = run(bars, s={**POLICY, "policy.strategy": "core-and-scalp"})
    assert full.equity["regime"][-2] == Regime.UP
    assert [lv for lv, _, _ in entries(full, Side.LONG)] == [1, 2]
    assert [lv for lv, _, _ in entries(core, Side.LONG)] == [1]


@effect("policy.counter_levels", "policy.counter_qty_scale")
def test_counter_side_rungs_and_size() -> None:
    # In UP the counter side is short: counter_levels 0 places no short rung; 1 places rung 1 at
    # counter_qty_scale x 0.01 (0.5 -> 0.005, 1.0 -> 0.01). The 1.5 % pop reaches short rung 1 (+1 %).
    bars = trend_then("pop")
    none = run(bars, s={**POLICY, "policy.counter_levels": 0})
    half = run(bars, s={**POLICY, "policy.counter_qty_scale": 0.5})
    full = run(bars, s={**POLICY, "policy.counter_qty_scale": 1.0})
    assert entries(none, Side.SHORT) == []
    assert [q for _, _, q in entries(half, Side.SHORT)] == [0.005]
    assert [q for _, _, q in entries(full, Side.SHORT)] == [0.01]


# ------------------------------------------------------------------------------------------ venue refusals


@effect("trading.hedge_mode", "trading.margin_type")
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"trading.hedge_mode": False}, "trading.hedge_mode"),
        ({"trading.margin_type": "ISOLATED"}, "margin_type"),
    ],
)
def test_unsupported_account_modes_are_refused(change: dict, field: str) -> None:
    with pytest.raises(GridctlError, match=field):
        run([FLAT, DIP], v=change)
    assert entries(run([FLAT, DIP])) == [(1, 9900.0, 0.01)]
