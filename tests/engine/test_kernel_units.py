"""Unit tests of the kernel building blocks, each against numbers derived by hand in the comments."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.engine import params as pv
from gridctl.engine.accounting import apply_fill_nb, mark_to_market_nb
from gridctl.engine.enums import Liquidity, Reason, Regime, Side
from gridctl.engine.funding import funding_amount_nb, funding_guard_nb
from gridctl.engine.ladder import (
    ceil_tick_nb,
    floor_step_nb,
    floor_tick_nb,
    rung_price_nb,
    rung_qty_nb,
    sl_price_nb,
    tp_price_nb,
)
from gridctl.engine.margin import liquidation_price_nb, maint_margin_nb, max_notional_at_leverage_nb
from gridctl.engine.params import build_params
from gridctl.engine.policy import policy_shape_nb
from gridctl.engine.regime import (
    R_ADX,
    R_ATR,
    R_DX,
    R_EMA_FAST,
    R_EMA_SLOW,
    new_regime_state,
    regime_series,
    regime_update_nb,
    warmup_bars,
)
from gridctl.engine.state import (
    S_DIRTY,
    S_EQUITY,
    S_GUARD_IDX,
    S_LONG_AVG,
    S_LONG_QTY,
    S_MARGIN_RATIO,
    S_SHORT_AVG,
    S_SHORT_QTY,
    S_THROTTLE,
    S_WALLET,
    init_state,
    set_throttle,
)
from gridctl.engine.validation import precision_ok_nb, validate_entry_nb

MARKET = SimpleNamespace(symbol="BTC/USDT:USDT", bar_ms=60_000, timeframe="1m")


#: The unit tests' ladder: 6 + 6 rungs of 0.002 BTC, 0.1 BTC per side, BTC rules with a 5 USDT min notional.
UNIT_STRATEGY = [
    "grid.base_notional=null",
    "grid.base_qty=0.002",
    "grid.grid_levels_long=6",
    "grid.grid_levels_short=6",
    "position.max_position_size=0.1",
]
UNIT_VENUE = ["symbol_rules.BTC/USDT:USDT.min_notional=5"]


def default_params() -> pv.EngineParams:
    return build_params(
        load_strategy("default", UNIT_STRATEGY), load_venue("binance_futures", UNIT_VENUE), MARKET
    )


def test_quote_notional_rungs_size_by_the_ladder_centre() -> None:
    # default: base_notional 150 USDT, qty_scale 1.05. At a centre of 60,000: rung 1 = 150 / 60000 =
    # 0.0025 BTC, rung 3 = 0.0025 * 1.05**2 = 0.00275625. At 1.2 (an XRP price): rung 1 = 125, 2 = 131.25.
    p = build_params(load_strategy("default"), load_venue("binance_futures"), MARKET).vector
    assert np.isnan(p[pv.P_BASE_QTY]) and p[pv.P_BASE_NOTIONAL] == 150.0
    assert rung_qty_nb(1, 60000.0, p) == pytest.approx(0.0025)
    assert rung_qty_nb(3, 60000.0, p) == pytest.approx(0.00275625)
    assert rung_qty_nb(1, 1.2, p) == pytest.approx(125.0)
    assert rung_qty_nb(2, 1.2, p) == pytest.approx(131.25)


# ---------------------------------------------------------------------------------------------- regime

# Five bars (high, low, close) used for every regime test.
BARS = [(10.0, 8.0, 9.0), (12.0, 9.0, 11.0), (13.0, 10.0, 12.0), (12.0, 9.0, 10.0), (15.0, 11.0, 14.0)]


def feed(adx_threshold: float, hysteresis: float) -> tuple[np.ndarray, list[int]]:
    """Run the five bars with adx_len=2, ema_fast=2, ema_slow=3, atr_len=2."""
    r = new_regime_state()
    out = [regime_update_nb(r, h, lo, c, 2, 2, 3, 2, hysteresis, adx_threshold) for h, lo, c in BARS]
    return r, out


def test_regime_indicators_match_hand_computation() -> None:
    # EMA(2), a = 2/3: seed SMA(9, 11) = 10 at bar 1; bar 2: 12*2/3 + 10/3 = 11.3333;
    #   bar 3: 10*2/3 + 11.3333/3 = 10.4444; bar 4: 14*2/3 + 10.4444/3 = 12.8148.
    # EMA(3), a = 1/2: seed SMA(9, 11, 12) = 10.6667 at bar 2; bar 3: 10.3333; bar 4: 12.1667.
    # TR from bar 1: 3, 3, 3, 5 -> ATR = RMA(2): bar 2 (3+3)/2 = 3; bar 3 (3+3)/2 = 3; bar 4 (3+5)/2 = 4.
    # +DM: 2, 1, 0, 3; -DM: 0, 0, 1, 0 (Wilder: the larger move counts, if positive).
    # RMA(2): +DM 1.5, 0.75, 1.875; -DM 0, 0.5, 0.25; TR 3, 3, 4 (bars 2, 3, 4).
    # +DI/-DI/DX: bar 2 50/0/100; bar 3 25/16.667/20; bar 4 46.875/6.25/76.4706.
    # ADX = RMA(2) of DX: bar 3 (100 + 20)/2 = 60; bar 4 (60 + 76.4706)/2 = 68.2353.
    r = new_regime_state()
    expect = {
        2: dict(ema_f=11.333333333, ema_s=10.666666667, atr=3.0, dx=100.0, adx=None),
        3: dict(ema_f=10.444444444, ema_s=10.333333333, atr=3.0, dx=20.0, adx=60.0),
        4: dict(ema_f=12.814814815, ema_s=12.166666667, atr=4.0, dx=76.470588235, adx=68.235294118),
    }
    for k, (h, lo, c) in enumerate(BARS):
        regime_update_nb(r, h, lo, c, 2, 2, 3, 2, 0.0, 20.0)
        if k in expect:
            e = expect[k]
            assert r[R_EMA_FAST] == pytest.approx(e["ema_f"], abs=1e-8)
            assert r[R_EMA_SLOW] == pytest.approx(e["ema_s"], abs=1e-8)
            assert r[R_ATR] == pytest.approx(e["atr"])
            assert r[R_DX] == pytest.approx(e["dx"])
            if e["adx"] is not None:
                assert r[R_ADX] == pytest.approx(e["adx"])


def test_regime_classification_warmup_threshold_and_hysteresis() -> None:
    # warmup_bars = max(ema_slow 3, 2*adx_len 4, atr_len+1 3) = 4: bars 0-2 are SIDEWAYS.
    assert warmup_bars(2, 3, 2) == 4
    # Spread bar 3 = (10.4444 - 10.3333)/10.3333*1e4 = 107.5 bps; bar 4 = 532.7 bps; ADX 60 then 68.2.
    _, out = feed(adx_threshold=20.0, hysteresis=0.0)
    assert out == [Regime.SIDEWAYS] * 3 + [Regime.UP, Regime.UP]
    # Hysteresis 200 bps: bar 3's 107.5 bps keeps the current regime (SIDEWAYS); bar 4 switches.
    _, out = feed(adx_threshold=20.0, hysteresis=200.0)
    assert out == [Regime.SIDEWAYS] * 4 + [Regime.UP]
    # ADX threshold 65: bar 3's ADX 60 is below (SIDEWAYS), bar 4's 68.2 is above.
    _, out = feed(adx_threshold=65.0, hysteresis=0.0)
    assert out == [Regime.SIDEWAYS] * 4 + [Regime.UP]


def test_regime_series_skips_missing_bars_and_carries_the_regime() -> None:
    # A NaN bar inserted after bar 3 changes nothing for the valid bars and carries UP through itself.
    h, lo, c = (np.array(x) for x in zip(*BARS, strict=True))
    nan = np.nan
    ins = lambda a: np.insert(a, 4, nan)  # noqa: E731
    ser = regime_series(ins(c), ins(h), ins(lo), ins(c), 2, 2, 3, 2, 0.0, 20.0)
    assert list(ser) == [0, 0, 0, Regime.UP, Regime.UP, Regime.UP]


# ---------------------------------------------------------------------------------------------- ladder


def test_rounding_moves_away_from_the_centre() -> None:
    assert floor_tick_nb(59882.9562, 0.1) == pytest.approx(59882.9)
    assert ceil_tick_nb(60363.9438, 0.1) == pytest.approx(60364.0)
    # An exact tick multiple stays put despite float noise (59760 / 0.1 = 597599.99999...).
    assert floor_tick_nb(60000 * (1 - 0.004), 0.1) == pytest.approx(59760.0)
    assert floor_step_nb(0.002205, 0.001) == pytest.approx(0.002)


def test_rung_prices_quantities_and_exits() -> None:
    p = default_params().vector  # step 40 bps, tick 0.1, base 0.002, scale 1.05, tp 3, sl 6
    c = 60123.45
    # long 1: 60123.45 * 0.996 = 59882.9562 -> 59882.9; short 1: * 1.004 = 60363.9438 -> 60364.0
    assert rung_price_nb(c, Side.LONG, 1, p) == pytest.approx(59882.9)
    assert rung_price_nb(c, Side.SHORT, 1, p) == pytest.approx(60364.0)
    # long 2: * 0.992 = 59642.4624 -> 59642.4; short 3: * 1.012 = 60844.9314 -> 60845.0
    assert rung_price_nb(c, Side.LONG, 2, p) == pytest.approx(59642.4)
    assert rung_price_nb(c, Side.SHORT, 3, p) == pytest.approx(60845.0)
    # qty rung 3 = 0.002 * 1.05^2 = 0.002205 (floored to the step only when sized)
    assert rung_qty_nb(3, 60000.0, p) == pytest.approx(0.002205)
    # lot at 59882.9: TP 3 steps up 59882.9*1.012 = 60601.4948 -> ceil 60601.5;
    # SL 6 steps down 59882.9*0.976 = 58445.7104 -> floor 58445.7. Short lot at 60364: TP 60364*0.988 =
    # 59639.632 -> floor 59639.6, SL 60364*1.024 = 61812.736 -> ceil 61812.8.
    assert tp_price_nb(Side.LONG, 59882.9, p) == pytest.approx(60601.5)
    assert sl_price_nb(Side.LONG, 59882.9, p) == pytest.approx(58445.7)
    assert tp_price_nb(Side.SHORT, 60364.0, p) == pytest.approx(59639.6)
    assert sl_price_nb(Side.SHORT, 60364.0, p) == pytest.approx(61812.8)


@settings(max_examples=200, deadline=None)
@given(
    centre=st.floats(10.0, 200_000.0),
    i=st.integers(1, 50),
    step_bps=st.floats(5.0, 1000.0),
)
def test_rungs_are_on_tick_and_never_cross_the_centre(centre: float, i: int, step_bps: float) -> None:
    p = default_params().vector.copy()
    p[pv.P_GRID_STEP_BPS] = step_bps
    tick = p[pv.P_TICK]
    lo = rung_price_nb(centre, Side.LONG, i, p)
    hi = rung_price_nb(centre, Side.SHORT, i, p)
    assert lo <= centre * (1 - i * step_bps * 1e-4) + 1e-6 and hi >= centre * (1 + i * step_bps * 1e-4) - 1e-6
    for x in (lo, hi):
        assert abs(x / tick - round(x / tick)) < 1e-6


# ---------------------------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("policy", "regime", "expect_long", "expect_short"),
    [
        # levels 6/6, counter_levels 4, counter_qty_scale 0.5
        (0, Regime.SIDEWAYS, (6, 1.0), (6, 1.0)),
        (0, Regime.UP, (6, 1.0), (4, 0.5)),  # throttled-counter: only the counter (short) side is cut
        (0, Regime.DOWN, (4, 0.5), (6, 1.0)),
        (1, Regime.SIDEWAYS, (6, 1.0), (6, 1.0)),
        (1, Regime.UP, (4, 1.0), (4, 0.5)),  # core-and-scalp: both sides cut, counter side scaled
        (1, Regime.DOWN, (4, 0.5), (4, 1.0)),
    ],
)
def test_policy_shape(policy: int, regime: int, expect_long: tuple, expect_short: tuple) -> None:
    p = default_params().vector.copy()
    p[pv.P_POLICY] = policy
    assert policy_shape_nb(regime, Side.LONG, p) == expect_long
    assert policy_shape_nb(regime, Side.SHORT, p) == expect_short


# ---------------------------------------------------------------------------------------------- funding


def test_funding_amount_sign() -> None:
    # 0.5 BTC * 60000 * 0.0001 = 3 USDT: longs pay it, shorts receive it; reversed for a negative rate.
    assert funding_amount_nb(Side.LONG, 0.5, 60000.0, 0.0001) == pytest.approx(-3.0)
    assert funding_amount_nb(Side.SHORT, 0.5, 60000.0, 0.0001) == pytest.approx(3.0)
    assert funding_amount_nb(Side.LONG, 0.5, 60000.0, -0.0001) == pytest.approx(3.0)


H = 3_600_000


def guard(rate: float, close_time: float, window_min: float = 480.0, max_cost: float = 12.0):
    p = default_params().vector.copy()
    p[pv.P_FUNDING_WINDOW_MIN] = window_min
    p[pv.P_FUNDING_MAX_COST_BPS] = max_cost
    st_ = init_state(p).state
    fts = np.array([0, 8 * H], dtype=np.int64)
    return funding_guard_nb(st_, close_time, fts, np.array([rate, 0.0]), p)


def test_funding_guard_scales_the_paying_side() -> None:
    # T0 = 0, T1 = 8 h, close 6 h: 2 h = 120 min left of a 480 min window.
    # Projected cost = the whole settlement |0.002|*1e4 = 20 bps > 12 -> paying side x 120/480 = 0.25.
    assert guard(0.002, 6 * H) == (True, pytest.approx(0.25), 1.0)
    assert guard(-0.002, 6 * H) == (True, 1.0, pytest.approx(0.25))
    # 10 bps < 12: no scaling. A 60 min window does not reach 2 h before T1: no scaling.
    assert guard(0.001, 6 * H) == (True, 1.0, 1.0)
    assert guard(0.002, 6 * H, window_min=60.0) == (True, 1.0, 1.0)
    # Window 60 min, 30 min left: the settlement inside it costs the whole 20 bps (not 20 * 60/480 =
    # 2.5 bps, the audited bot's spread): above 15 -> x 30/60 = 0.5; not above 20 -> unscaled.
    assert guard(0.002, 7.5 * H, window_min=60.0, max_cost=15.0) == (True, pytest.approx(0.5), 1.0)
    assert guard(0.002, 7.5 * H, window_min=60.0, max_cost=20.0) == (True, 1.0, 1.0)
    # Outside the window the projected cost is 0: even a 0 bps limit scales nothing.
    assert guard(0.002, 6 * H, window_min=60.0, max_cost=0.0) == (True, 1.0, 1.0)


def test_funding_guard_unknown_rate_blocks() -> None:
    p = default_params().vector
    st_ = init_state(p).state
    fts = np.array([10 * H], dtype=np.int64)
    # No settlement at or before the close: rate unknown.
    assert guard_first(st_, fts, p, 5 * H)[0] is False
    assert st_[S_GUARD_IDX] == 0


def guard_first(st_, fts, p, close_time):
    return funding_guard_nb(st_, float(close_time), fts, np.array([0.0001]), p)


# ---------------------------------------------------------------------------------------------- validation


def vec_with(**changes: float) -> np.ndarray:
    p = default_params().vector.copy()
    for name, value in changes.items():
        p[getattr(pv, name)] = value
    return p


def test_validate_entry_each_reason() -> None:
    br = default_params().brackets
    # Base: leverage 10, max_position_pct 0.75, max_position_size 0.1, inventory 10000, order 5..1e5.
    p = vec_with()
    ok = validate_entry_nb(60000.0, 0.01, 0.0, 0.0, 0.0, 10000.0, p, br)
    assert ok == Reason.NONE
    # SIZE_PCT: Q = 0.05 + 0.02 + 0.01 = 0.08 -> 4800 notional / 10 = 480 > 0.75 * 600 = 450.
    assert validate_entry_nb(60000.0, 0.01, 0.05, 0.02, 0.0, 600.0, p, br) == Reason.SIZE_PCT
    # SIZE_QTY: Q = 0.09 + 0.02 = 0.11 > 0.1 (equity large enough for SIZE_PCT).
    assert validate_entry_nb(60000.0, 0.02, 0.09, 0.0, 0.0, 1e6, p, br) == Reason.SIZE_QTY
    # SIZE_INVENTORY: Q = 0.1 -> 6000 > 5000.
    assert validate_entry_nb(
        60000.0, 0.05, 0.05, 0.0, 0.0, 1e6, vec_with(P_MAX_INVENTORY_QUOTE=5000.0), br
    ) == (Reason.SIZE_INVENTORY)
    # SIZE_ORDER: 0.001 * 60000 = 60 < min 100; and > max 50.
    assert validate_entry_nb(60000.0, 0.001, 0.0, 0.0, 0.0, 1e6, vec_with(P_MIN_ORDER_USDT=100.0), br) == (
        Reason.SIZE_ORDER
    )
    assert validate_entry_nb(60000.0, 0.001, 0.0, 0.0, 0.0, 1e6, vec_with(P_MAX_ORDER_USDT=50.0), br) == (
        Reason.SIZE_ORDER
    )
    # SIZE_BRACKET: at leverage 100 only bracket 1..2 (max lev 125, 100) allow it: cap 600000.
    big = vec_with(
        P_LEVERAGE=100.0, P_MAX_POSITION_SIZE=100.0, P_MAX_INVENTORY_QUOTE=1e9, P_MAX_ORDER_USDT=1e9
    )
    assert validate_entry_nb(60000.0, 9.0, 0.0, 0.0, 0.0, 1e9, big, br) == Reason.NONE  # 540000 <= 600000
    assert validate_entry_nb(60000.0, 11.0, 0.0, 0.0, 0.0, 1e9, big, br) == Reason.SIZE_BRACKET  # 660000
    assert max_notional_at_leverage_nb(br, 100.0) == 600000.0
    # SIZE_MARGIN: the side alone passes SIZE_PCT (0.08 * 60000 / 10 = 480 <= 0.75 * 1000 = 750) but
    # with the other side's 0.1 (position + resting) the account margins (0.08 + 0.1) * 6000 = 1080 > 1000.
    assert validate_entry_nb(60000.0, 0.01, 0.05, 0.02, 0.1, 1000.0, p, br) == Reason.SIZE_MARGIN
    # 0.08 + 0.085 = 0.165 -> 990 <= 1000: accepted.
    assert validate_entry_nb(60000.0, 0.01, 0.05, 0.02, 0.085, 1000.0, p, br) == Reason.NONE
    # Validation switched off skips only the bot's own limits. 0.01 more on a 0.05 long (0.02 resting)
    # at 60000 with max_position_size 0.05 is SIZE_QTY when on; off, the venue's checks still run:
    # margin (0.08 + 0.085) * 60000 / 10 = 990 <= 1000 passes, with 0.1 on the other side 1080 does not.
    small = {"P_MAX_POSITION_SIZE": 0.05}
    on = vec_with(**small)
    assert validate_entry_nb(60000.0, 0.01, 0.05, 0.02, 0.085, 1000.0, on, br) == Reason.SIZE_QTY
    off = vec_with(P_ENABLE_VALIDATION=0.0, **small)
    assert validate_entry_nb(60000.0, 0.01, 0.05, 0.02, 0.085, 1000.0, off, br) == Reason.NONE
    assert validate_entry_nb(60000.0, 0.01, 0.05, 0.02, 0.1, 1000.0, off, br) == Reason.SIZE_MARGIN
    # ... and the order-size and bracket rules too (1.0 * 60000 > max order 50; 11 * 60000 > 600000).
    assert (
        validate_entry_nb(
            60000.0, 0.001, 0.0, 0.0, 0.0, 1e6, vec_with(P_ENABLE_VALIDATION=0.0, P_MAX_ORDER_USDT=50.0), br
        )
        == Reason.SIZE_ORDER
    )
    big_off = big.copy()
    big_off[pv.P_ENABLE_VALIDATION] = 0.0
    assert validate_entry_nb(60000.0, 11.0, 0.0, 0.0, 0.0, 1e9, big_off, br) == Reason.SIZE_BRACKET


def test_precision_guard() -> None:
    p = vec_with()  # min_qty 0.001, max_qty 1000, min_notional 5
    assert precision_ok_nb(60000.0, 0.001, p)
    assert not precision_ok_nb(60000.0, 0.0, p)
    assert not precision_ok_nb(4000.0, 0.001, p)  # 4 USDT < 5
    assert not precision_ok_nb(60000.0, 1001.0, p)


# ---------------------------------------------------------------------------------------------- margin


def test_maintenance_margin_and_liquidation_price_follow_binance() -> None:
    br = default_params().brackets
    # 60000 notional sits in bracket 2 (50k..600k, mmr 0.005, cum 50): 60000*0.005 - 50 = 250.
    assert maint_margin_nb(br, 60000.0) == pytest.approx(250.0)
    assert maint_margin_nb(br, 40000.0) == pytest.approx(160.0)  # bracket 1: 0.004, cum 0
    # Long 1 BTC at 60000, wallet 1000, marked at 60000 (bracket 2):
    # LP = (1000 + 50 - 60000) / (0.005 - 1) = 59246.2312; there equity = LP - 59000 = 246.2312 and
    # MM = LP*0.005 - 50 = 246.2312: equal, as Binance defines it.
    lp = liquidation_price_nb(br, 1000.0, 1.0, 60000.0, 0.0, 0.0, 60000.0)
    assert lp == pytest.approx(58950.0 / 0.995)
    assert (lp - 59000.0) == pytest.approx(lp * 0.005 - 50.0)
    # Short 1 BTC at 60000, wallet 1000: LP = (1000 + 50 + 60000)/(0.005 + 1) = 60746.2687.
    assert liquidation_price_nb(br, 1000.0, 0.0, 0.0, 1.0, 60000.0, 60000.0) == pytest.approx(61050.0 / 1.005)
    # No position: no liquidation price.
    assert math.isnan(liquidation_price_nb(br, 1000.0, 0.0, 0.0, 0.0, 0.0, 60000.0))


def test_margin_ratio_is_unknown_once_equity_is_gone() -> None:
    p = default_params()
    st_ = init_state(p.vector).state
    st_[S_LONG_QTY], st_[S_LONG_AVG] = 1.0, 60000.0
    # Wallet 1000 marked at 60000: equity 1000, MM 250 (bracket 2) -> 0.25.
    st_[S_WALLET] = 1000.0
    mark_to_market_nb(st_, 60000.0, p.brackets)
    assert st_[S_MARGIN_RATIO] == pytest.approx(0.25)
    # Marked at 58000: equity 1000 - 2000 = -1000: the ratio is unknown, not 0.
    mark_to_market_nb(st_, 58000.0, p.brackets)
    assert st_[S_EQUITY] == pytest.approx(-1000.0) and math.isnan(st_[S_MARGIN_RATIO])


# ---------------------------------------------------------------------------------------------- throttle


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, math.inf, "0.5", True, None, 10**400, -(10**400)])
def test_set_throttle_refuses_anything_but_0_to_1(bad: object) -> None:
    ks = init_state(default_params().vector)
    with pytest.raises(GridctlError, match="throttle"):
        set_throttle(ks.state, bad)  # type: ignore[arg-type]
    assert ks.state[S_THROTTLE] == 1.0


def test_set_throttle_writes_the_slot_and_replans() -> None:
    ks = init_state(default_params().vector)
    ks.state[S_DIRTY] = 0.0
    set_throttle(ks.state, 0.25)
    assert ks.state[S_THROTTLE] == 0.25 and ks.state[S_DIRTY] == 1.0


def test_a_side_closed_lot_by_lot_is_flat_despite_float_residue() -> None:
    # XRP-sized lots (lot step 0.1): three short entries, then their exits in another order. In floats
    # 3897.8 + 4092.7000000000003 + 4297.400000000001 - 3897.8 - 4297.400000000001 - 4092.7000000000003
    # leaves 1.36e-12 (above an absolute 1e-12): the side must still be flat (no funding on residue).
    p = default_params().vector
    st_ = init_state(p).state
    lots = (3897.8, 4092.7000000000003, 4297.400000000001)
    for q in lots:
        apply_fill_nb(st_, Side.SHORT, True, 0.52, q, Liquidity.MAKER, p)
    residue = sum(lots) - lots[0] - lots[2] - lots[1]
    assert residue > 1e-12  # the float arithmetic the test is about
    for q in (lots[0], lots[2], lots[1]):
        apply_fill_nb(st_, Side.SHORT, False, 0.51, q, Liquidity.MAKER, p)
    assert st_[S_SHORT_QTY] == 0.0 and st_[S_SHORT_AVG] == 0.0
