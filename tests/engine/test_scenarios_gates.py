"""Hand-computed risk gates: drawdown halt, circuit breaker, REDUCING, liquidation, fail-closed inputs.

Numbers as in test_scenarios_fills (C = 10000, s = 0.01, long rung 9900, short rung 10100, maker 2 bps,
taker 5 bps, no slippage); tests that need a real position use base_qty 1.0 (9900 USDT notional).
"""

from __future__ import annotations

import math

import pytest

from gridctl.configs.schema import Bracket, MarginSection
from gridctl.engine.enums import Reason, RiskState

from effects import effect
from market_builders import (
    IMPLS,
    bar_ts,
    entries,
    flat,
    kinds,
    make_market,
    run,
    strategy,
    venue,
)

# Bar 1 fills the long rung: 1.0 @ 9900, maker fee 1.98; close 9950 -> unrealized +50.
FILL_BAR = (10000, 10000, 9890, 9950)


def states(led):
    return [row["state"] for row in led.equity]


@effect("risk_management.max_drawdown_pct", "risk_management.enable_drawdown_protection")
@pytest.mark.parametrize("impl", IMPLS)
def test_drawdown_flattens_and_halts(impl):
    # Bar 1: equity = 10000 - 1.98 + 50 = 10048.02 = peak.
    # Bar 2 closes 9840: equity = 10000 - 1.98 - 60 = 9938.02; drawdown = 110/10048.02*100 = 1.0947% >= 1
    # -> flatten 1.0 at the close 9840 (taker fee 4.92, realized -60), HALTED; equity 9933.10.
    # Bar 3 sweeps through both rungs: nothing may fill any more.
    bars = [*flat(10000, 1), FILL_BAR, (9950, 9950, 9840, 9840), (9840, 10200, 9800, 9890)]
    s = strategy(grid__base_qty=1.0, risk_management__max_drawdown_pct=1.0)
    led = run(impl, make_market(bars), s, venue())
    flat_fills = [f for f in led.fills if f["kind"] == 3]
    assert len(flat_fills) == 1
    f = flat_fills[0]
    assert (f["ts"], f["side"], f["level"], f["liquidity"]) == (bar_ts(2), 0, 0, 1)
    assert f["price"] == pytest.approx(9840.0)
    assert f["fee"] == pytest.approx(4.92)
    assert f["realized_pnl"] == pytest.approx(-60.0)
    assert kinds(led) == ["DRAWDOWN_HALT"]
    assert led.events[0]["ts"] == bar_ts(2)
    assert states(led) == [0, 0, RiskState.HALTED, RiskState.HALTED]
    assert led.equity[-1]["equity"] == pytest.approx(9933.10)
    assert len(led.fills) == 2  # the entry and the flatten
    # 2% is not reached (1.0947%): no halt, and bar 3 fills the short rung and the long TP.
    for s2 in (
        strategy(grid__base_qty=1.0, risk_management__max_drawdown_pct=2.0),
        strategy(
            grid__base_qty=1.0,
            risk_management__max_drawdown_pct=1.0,
            risk_management__enable_drawdown_protection=False,
        ),
    ):
        led2 = run(impl, make_market(bars), s2, venue())
        assert "DRAWDOWN_HALT" not in kinds(led2)
        assert all(f["kind"] != 3 for f in led2.fills)
        assert RiskState.HALTED not in states(led2)


@effect(
    "risk_management.max_errors_per_minute",
    "risk_management.circuit_breaker_cooldown_seconds",
    "risk_management.enable_circuit_breaker",
)
@pytest.mark.parametrize("impl", IMPLS)
def test_circuit_breaker_trips_blocks_and_resets(impl):
    # 1m bars. Bar 1 opens at 9850 below the new entry 9900: reject 9900, retry 9899.9, retry 9899.8
    # -> 3 errors at ts1 >= max 3 -> trip at ts1, until ts1 + 180 s = T0 + 240 s.
    # Decisions at the close of bars 1 and 2 (close times T0+120 s, T0+180 s) are blocked (COOLDOWN),
    # so the dips of bars 2 and 3 below 9900 fill nothing. Bar 3's close time T0+240 s reaches the end
    # of the cooldown: reset, the entry is placed again and fills in bar 4.
    dip = (9950, 9950, 9880, 9950)
    bars = [*flat(10000, 1), (9850, 9960, 9850, 9950), dip, dip, dip]
    common = dict(
        execution__use_post_only_retries=True,
        execution__retry_attempts=3,
        risk_management__circuit_breaker_window_seconds=60,
    )
    s = strategy(
        risk_management__max_errors_per_minute=3,
        risk_management__circuit_breaker_cooldown_seconds=180,
        **common,
    )
    m = make_market(bars, timeframe="1m")
    led = run(impl, m, s, venue())
    assert kinds(led) == ["POST_ONLY_REJECT"] * 3 + ["CIRCUIT_BREAKER_TRIP", "CIRCUIT_BREAKER_RESET"]
    trip, reset = led.events[3], led.events[4]
    assert trip["ts"] == bar_ts(1, "1m")
    assert reset["ts"] == bar_ts(3, "1m")
    assert states(led) == [0, RiskState.COOLDOWN, RiskState.COOLDOWN, 0, 0]
    assert entries(led) == [(bar_ts(4, "1m"), 0, 1, 9900.0, 0.01)]
    # Cooldown 60 s: until T0+120 s = close of bar 1 -> reset at bar 1, entry fills in bar 2 already.
    s60 = strategy(
        risk_management__max_errors_per_minute=3,
        risk_management__circuit_breaker_cooldown_seconds=60,
        **common,
    )
    led60 = run(impl, m, s60, venue())
    assert [e[0] for e in entries(led60)][:1] == [bar_ts(2, "1m")]
    # 10 errors needed: 4 rejections + RETRY_LIMIT, no trip, and the entry fills in bar 2.
    s10 = strategy(
        risk_management__max_errors_per_minute=10,
        risk_management__circuit_breaker_cooldown_seconds=180,
        **common,
    )
    led10 = run(impl, m, s10, venue())
    assert "CIRCUIT_BREAKER_TRIP" not in kinds(led10)
    assert [e[0] for e in entries(led10)][:1] == [bar_ts(2, "1m")]
    # Breaker switched off: same as never tripping.
    soff = strategy(
        risk_management__max_errors_per_minute=3,
        risk_management__circuit_breaker_cooldown_seconds=180,
        risk_management__enable_circuit_breaker=False,
        **common,
    )
    assert "CIRCUIT_BREAKER_TRIP" not in kinds(run(impl, m, soff, venue()))


@effect("risk_management.circuit_breaker_window_seconds")
@pytest.mark.parametrize("impl", IMPLS)
def test_circuit_breaker_window(impl):
    # One error per minute (bars 1, 2 and 3 each open below a fresh 9900 entry: a single rejection
    # each, no retries). With max 3 errors: a 60 s window never holds more than 1 (t-60 s, t], a 180 s
    # window holds all three at bar 3 -> trip.
    gap_down = (9850, 9960, 9850, 9950)
    bars = [*flat(10000, 1), gap_down, gap_down, gap_down]
    m = make_market(bars, timeframe="1m")
    base = dict(risk_management__max_errors_per_minute=3)
    led60 = run(impl, m, strategy(risk_management__circuit_breaker_window_seconds=60, **base), venue())
    assert kinds(led60) == ["POST_ONLY_REJECT"] * 3
    led180 = run(impl, m, strategy(risk_management__circuit_breaker_window_seconds=180, **base), venue())
    assert kinds(led180) == ["POST_ONLY_REJECT"] * 3 + ["CIRCUIT_BREAKER_TRIP"]
    assert led180.events[-1]["ts"] == bar_ts(3, "1m")


@effect("position.max_leverage_used")
@pytest.mark.parametrize("impl", IMPLS)
def test_reducing_on_leverage_keeps_exits_blocks_entries(impl):
    # Bar 1: long 1.0 @ 9900, equity 10048.02; leverage = 1.0*9950/10048.02 = 0.99024 > 0.5 -> REDUCING
    # (reason LEVERAGE), entries cancelled. Bar 2 (path 9950 -> 9950 -> 10150 -> 10120): the TP 9999 still
    # fills (exits stay) but the short rung 10100 does not; flat again at the close -> REDUCING off.
    bars = [*flat(10000, 1), FILL_BAR, (9950, 10150, 9950, 10120)]
    led = run(impl, make_market(bars), strategy(grid__base_qty=1.0, position__max_leverage_used=0.5), venue())
    assert kinds(led) == ["REDUCING_ON", "REDUCING_OFF"]
    on = led.events[0]
    assert (on["ts"], on["reason"]) == (bar_ts(1), Reason.LEVERAGE)
    assert states(led) == [0, RiskState.REDUCING, 0]
    assert [(f["kind"], f["side"], f["price"]) for f in led.fills] == [(0, 0, 9900.0), (1, 0, 9999.0)]
    # Limit 5: the short rung fills in bar 2 as well.
    led5 = run(
        impl, make_market(bars), strategy(grid__base_qty=1.0, position__max_leverage_used=5.0), venue()
    )
    assert (0, 1, 10100.0) in [(f["kind"], f["side"], f["price"]) for f in led5.fills]
    assert kinds(led5) == []


@effect("position.emergency_liquidation_buffer")
@pytest.mark.parametrize("impl", IMPLS)
def test_reducing_near_the_liquidation_price(impl):
    # initial 1100, long 1.0 @ 9900 (fee 1.98): WB = 1098.02, bracket 1 (mmr 0.004, cum 0).
    # LP = (WB + cum - L*avgL)/(L*mmr - L) = (1098.02 - 9900)/(0.004 - 1) = 8801.98/0.996 = 8837.3293.
    # At the close 9950: |9950 - LP|/9950 = 0.111826 -> REDUCING (LIQUIDATION_BUFFER) with a buffer of
    # 0.1119, not with 0.1118: the flip pins LP to the formula within 1 USDT.
    # (Leverage 9950/1148.02 = 8.7 stays below the isolated limit 125. Venue leverage 20 lets both rungs
    # rest: (1 + 1)*10100/20 = 1010 <= 1100 passes SIZE_MARGIN.)
    assert 0.1118 < (9950 - 8801.98 / 0.996) / 9950 < 0.1119
    bars = [*flat(10000, 1), FILL_BAR, flat(9950, 1)[0]]
    common = dict(grid__base_qty=1.0, backtest__initial_balance=1100.0, exit__sl_steps=20)
    near = strategy(position__emergency_liquidation_buffer=0.1119, **common)
    led = run(impl, make_market(bars), near, venue(trading__leverage=20))
    assert kinds(led) == ["REDUCING_ON"]
    on = led.events[0]
    assert (on["ts"], on["reason"]) == (bar_ts(1), Reason.LIQUIDATION_BUFFER)
    assert states(led) == [0, RiskState.REDUCING, RiskState.REDUCING]
    far = strategy(position__emergency_liquidation_buffer=0.1118, **common)
    assert kinds(run(impl, make_market(bars), far, venue(trading__leverage=20))) == []


# Liquidation with bracket 2: initial 7000, long 6.0 @ 9900 (notional 59400 > 50000: mmr 0.005, cum 50),
# fee 59400*0.0002 = 11.88, WB = 6988.12.
# LP = (6988.12 + 50 - 6*9900)/(6*0.005 - 6) = -52361.88/-5.97 = 8770.83417...; at LP the notional
# 6*8770.8 = 52625 is still bracket 2, so the formula's bracket is consistent.
LP2 = 52361.88 / 5.97


@effect("backtest.initial_balance")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("low", "liquidated"), [(8772.0, False), (8770.0, True)])
def test_liquidation_at_the_binance_price(impl, low, liquidated):
    # Bar 2 path: 9950 -> 9950 -> low -> 9000. At the low:
    #   8772: equity = 6988.12 + 6*(8772-9900) = 220.12 > MM = 6*8772*0.005 - 50 = 213.16 -> alive.
    #   8770: equity = 208.12 <= MM = 213.10 -> liquidated. The exchange closes at LP2 = 8770.834 (the
    #   path crossed it between x1 = 9950 and 8770), realized 6*(8770.834 - 9900) = -6774.995; no
    #   trading fee, the remaining maintenance margin 6*8770.834*0.005 - 50 = 213.125 is lost instead.
    # (The short rung 6 @ 10100 is refused: both sides (6 + 6)*10100/10 = 12120 > equity 7000, SIZE_MARGIN.)
    assert 8770.0 < LP2 < 8772.0
    bars = [*flat(10000, 1), FILL_BAR, (9950, 9950, low, 9000), flat(9000, 1)[0]]
    s = strategy(
        grid__base_qty=6.0,
        backtest__initial_balance=7000.0,
        exit__sl_steps=20,
        risk_management__max_drawdown_pct=50.0,
    )
    led = run(impl, make_market(bars), s, venue())
    liq = [f for f in led.fills if f["kind"] == 4]
    if not liquidated:
        assert liq == []
        assert led.equity[-1]["state"] != RiskState.LIQUIDATED
        return
    assert len(liq) == 1
    f = liq[0]
    assert (f["ts"], f["side"], f["liquidity"]) == (bar_ts(2), 0, 1)
    assert f["price"] == pytest.approx(LP2, rel=1e-12)
    assert f["qty"] == pytest.approx(6.0)
    assert f["fee"] == pytest.approx(6 * LP2 * 0.005 - 50.0, rel=1e-12)
    assert led.summary["final_equity"] == pytest.approx(0.0, abs=1e-9)
    assert f["realized_pnl"] == pytest.approx(6 * (LP2 - 9900), rel=1e-12)
    assert "LIQUIDATION" in kinds(led)
    assert led.equity[-1]["state"] == RiskState.LIQUIDATED
    assert led.equity[-1]["ts"] == bar_ts(2)  # the run stops
    # More starting money moves LP away: with 7100 the same bar does not liquidate.
    rich = strategy(
        grid__base_qty=6.0,
        backtest__initial_balance=7100.0,
        exit__sl_steps=20,
        risk_management__max_drawdown_pct=50.0,
    )
    assert all(f["kind"] != 4 for f in run(impl, make_market(bars), rich, venue()).fills)


@pytest.mark.parametrize("impl", IMPLS)
def test_nan_bar_fails_closed(impl):
    # Bar 1 is NaN: INPUT_MISSING, resting entries cancelled, no new ones, equity carried, REDUCING.
    # Bar 2 dips below 9900 but nothing rests; bar 2's close places the rung again; bar 3 fills it.
    nan = (math.nan,) * 4
    dip = (10000, 10000, 9850, 9950)
    led = run(impl, make_market([*flat(10000, 1), nan, dip, dip]), strategy(), venue())
    assert kinds(led) == ["INPUT_MISSING"]
    assert led.events[0]["ts"] == bar_ts(1)
    assert entries(led) == [(bar_ts(3), 0, 1, 9900.0, 0.01)]
    assert states(led)[1] == RiskState.REDUCING
    assert led.equity[1]["equity"] == led.equity[0]["equity"] == 10000.0


@pytest.mark.parametrize("impl", IMPLS)
def test_nan_bar_keeps_exits(impl):
    # Lot opened in bar 1 (TP 9999); bar 2 NaN; bar 3 rises through the TP: it still fills.
    nan = (math.nan,) * 4
    bars = [*flat(10000, 1), (10000, 10000, 9890, 9950), nan, (9950, 10050, 9950, 10040)]
    led = run(impl, make_market(bars), strategy(), venue())
    assert [(f["ts"], f["kind"], f["price"]) for f in led.fills] == [
        (bar_ts(1), 0, 9900.0),
        (bar_ts(3), 1, 9999.0),
    ]


@pytest.mark.parametrize("impl", IMPLS)
def test_data_gap_cancels_resting_entries(impl):
    # Bar 1 starts 2 h after bar 0 (1h bars): DATA_GAP, the 9900 entry placed at bar 0's close is
    # cancelled before the path, so the dip fills nothing; bar 2 (contiguous) fills the re-placed rung.
    dip = (10000, 10000, 9850, 9950)
    m = make_market([*flat(10000, 1), dip, dip], ts=[bar_ts(0), bar_ts(2), bar_ts(3)])
    led = run(impl, m, strategy(), venue())
    assert kinds(led) == ["DATA_GAP"]
    assert led.events[0]["ts"] == bar_ts(2)
    assert entries(led) == [(bar_ts(3), 0, 1, 9900.0, 0.01)]


@pytest.mark.parametrize("impl", IMPLS)
def test_unknown_funding_blocks_entries(impl):
    # No settlement at all: the rate is unknown, every decision is blocked (one FUNDING_UNKNOWN event
    # when the blocked stretch starts), nothing fills although the bars sweep through both rungs.
    sweep = (10000, 10200, 9800, 10000)
    m = make_market([*flat(10000, 1), sweep, sweep], funding=[])
    led = run(impl, m, strategy(), venue())
    assert led.fills == []
    assert kinds(led) == ["FUNDING_UNKNOWN"]
    assert led.events[0]["ts"] == bar_ts(0)


@effect("margin.brackets")
@pytest.mark.parametrize("impl", IMPLS)
def test_brackets_set_the_maintenance_margin(impl):
    # Same position as above (6.0 @ 9900, WB 6988.12), bar 2 low 8772: with the BTC table the account
    # survives (equity 220.12 > MM 213.16). With one flat tier of mmr 0.01 (cum 0) the maintenance margin
    # at 8772 is 6*8772*0.01 = 526.32 >= 220.12 -> liquidated; the close is at that tier's LP
    # (6988.12 - 59400)/(6*0.01 - 6) = 52411.88/5.94 = 8823.5488, inside [8772, 9950].
    bars = [*flat(10000, 1), FILL_BAR, (9950, 9950, 8772.0, 9000), flat(9000, 1)[0]]
    s = strategy(
        grid__base_qty=6.0,
        backtest__initial_balance=7000.0,
        exit__sl_steps=20,
        risk_management__max_drawdown_pct=50.0,
    )
    btc = venue()
    flat_tier = Bracket(
        notional_floor=0.0, notional_cap=1e9, maint_margin_ratio=0.01, cum=0.0, max_leverage=125
    )
    steep = btc.model_copy(update={"margin": MarginSection(brackets={"BTC/USDT:USDT": [flat_tier]})})
    assert all(f["kind"] != 4 for f in run(impl, make_market(bars), s, btc).fills)
    liq = [f for f in run(impl, make_market(bars), s, steep).fills if f["kind"] == 4]
    assert [(f["ts"], f["qty"]) for f in liq] == [(bar_ts(2), 6.0)]
    assert liq[0]["price"] == pytest.approx(52411.88 / 5.94, rel=1e-12)


# Liquidation at the liquidation price: 1000 USDT, leverage 20, long 1.0 @ 9900 (maker fee 1.98, WB 998.02),
# bracket 1 (mmr 0.004, cum 0). LP = (998.02 - 9900)/(0.004 - 1) = 8901.98/0.996 = 8937.7309...
# The short rung 1.0 @ 10100 is refused at bar 0 (SIZE_MARGIN: (1 + 1)*10100/20 = 1010 > equity 1000).
LP20 = 8901.98 / 0.996
SMALL_20X = {
    "backtest__initial_balance": 1000.0,
    "grid__base_qty": 1.0,
    "exit__sl_steps": 50,
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("crash", "price"), [((9000.0, 9000.0, 8000.0, 8000.0), LP20), ((8500.0,) * 4, 8500.0)]
)
def test_liquidation_closes_at_the_liquidation_price(impl, crash, price):
    # Wide bar 9000 -> 8000: path o = 9000 (equity 98.02 > MM 36.0), x1 = 9000 (the high: 0 <= 1000),
    # x2 = 8000: equity -901.98 <= MM 32 -> liquidated. The path crossed LP between 9000 and 8000, so
    # the close is at LP = 8937.7309 (realized 8937.7309 - 9900 = -962.2691); no trading fee, the
    # remaining maintenance margin 0.004*8937.7309 = 35.7509 is lost: wallet 998.02 - 962.2691 - 35.7509
    # = 0, instead of 998.02 - 1900 - 4 = -905.98 at the bar's low.
    # A bar that opens at 8500, below LP: the check fails at the open (a = o), LP clamped into
    # [8500, 8500] -> closed at the open 8500; equity there is 998.02 - 1400 = -401.98 < 0, so there is
    # no margin left to lose (clearance 0) and the wallet stays at -401.98.
    bars = [*flat(10000, 1), FILL_BAR, crash, flat(8000, 1)[0]]
    led = run(impl, make_market(bars), strategy(**SMALL_20X), venue(trading__leverage=20))
    liq = [f for f in led.fills if f["kind"] == 4]
    assert [(f["ts"], f["side"], f["qty"], f["liquidity"]) for f in liq] == [(bar_ts(2), 0, 1.0, 1)]
    assert liq[0]["price"] == pytest.approx(price, rel=1e-12)
    assert liq[0]["fee"] == (pytest.approx(0.004 * price, rel=1e-12) if price == LP20 else 0.0)
    assert liq[0]["realized_pnl"] == pytest.approx(price - 9900.0, rel=1e-12)
    assert kinds(led) == ["ORDER_REJECTED", "LIQUIDATION"]
    assert led.events[1]["price"] == pytest.approx(price, rel=1e-12)
    last = led.equity[-1]
    assert (last["ts"], last["state"]) == (bar_ts(2), RiskState.LIQUIDATED)
    if price == LP20:
        assert last["wallet_balance"] == pytest.approx(0.0, abs=1e-9)
    else:
        assert last["wallet_balance"] == pytest.approx(-401.98, abs=1e-9)


# Daily loss limit (1 h bars from 2024-01-01 00:00 UTC; bar 24 opens the next UTC day). Exits far away
# (TP 6 steps, SL 10 steps) so only entries trade. Day 1 opens at the initial balance 10000.
# Bar 1 fills long rung 1: 1.0 @ 9900, fee 1.98; close 9950 -> equity 10048.02 (a gain on the day).
# Bar 2 closes 9840: equity 10000 - 1.98 - 60 = 9938.02, the day's loss 61.98 / 10000 = 0.6198 %.
# Bar 3 dips to 9790 through long rung 2 (9800) and closes 9800; bars 4-24 stay at 9800; bar 25 rises
# through short rung 1 (10100).
DAILY_BARS = [
    *flat(10000, 1),
    FILL_BAR,
    (9950, 9950, 9840, 9840),
    (9840, 9850, 9790, 9800),
    *flat(9800, 21),
    (9800, 10110, 9800, 10050),
]
DAILY_EXITS = {"exit__tp_steps": 6, "exit__sl_steps": 10, "grid__base_qty": 1.0, "grid__grid_levels_long": 2}


@effect("risk_management.max_daily_loss_pct")
@pytest.mark.parametrize("impl", IMPLS)
def test_daily_loss_limit_stops_entries_until_the_next_utc_day(impl):
    # Limit 0.5 %: bar 2's 0.6198 % loss stops entries (rung 2 no longer rests, so bar 3's dip fills
    # nothing); bar 24, the next day's first bar, lifts the stop (that day opens at bar 23's equity
    # 10000 - 1.98 - 100 = 9898.02, no loss yet) and the replanned short rung fills on bar 25.
    s = strategy(**DAILY_EXITS, risk_management__max_daily_loss_pct=0.5)
    led = run(impl, make_market(DAILY_BARS), s, venue())
    assert kinds(led) == ["DAILY_LOSS_STOP", "DAILY_LOSS_RESET"]
    assert [e["ts"] for e in led.events] == [bar_ts(2), bar_ts(24)]
    assert led.events[0]["value"] == pytest.approx(0.6198)
    assert entries(led) == [(bar_ts(1), 0, 1, 9900.0, 1.0), (bar_ts(25), 1, 1, 10100.0, 1.0)]
    assert states(led) == [0, 0] + [RiskState.COOLDOWN] * 22 + [0, 0]
    assert led.equity[23]["equity"] == pytest.approx(9898.02)
    # Unset (the default): bar 3 fills rung 2 at 9800 and nothing stops.
    off = run(impl, make_market(DAILY_BARS), strategy(**DAILY_EXITS), venue())
    assert kinds(off) == [] and RiskState.COOLDOWN not in states(off)
    assert (bar_ts(3), 0, 2, 9800.0, 1.0) in entries(off)
    # 1 %: bar 2 (0.6198 %) passes, bar 3 fills rung 2 (fee 1.96) and closes at a loss of
    # (10000 - (10000 - 1.98 - 1.96 - 100)) / 10000 = 1.0394 %: stopped at bar 3, lifted at bar 24.
    one = run(
        impl,
        make_market(DAILY_BARS),
        strategy(**DAILY_EXITS, risk_management__max_daily_loss_pct=1.0),
        venue(),
    )
    assert [(e["ts"], k) for e, k in zip(one.events, kinds(one), strict=True)] == [
        (bar_ts(3), "DAILY_LOSS_STOP"),
        (bar_ts(24), "DAILY_LOSS_RESET"),
    ]
    assert one.events[0]["value"] == pytest.approx(1.0394)
    assert (bar_ts(3), 0, 2, 9800.0, 1.0) in entries(one)
    # 2 %: never reached on day 1 (at most 1.0394 %).
    two = run(
        impl,
        make_market(DAILY_BARS),
        strategy(**DAILY_EXITS, risk_management__max_daily_loss_pct=2.0),
        venue(),
    )
    assert kinds(two) == []
