"""Baskets in one cross-margin wallet (engine/basket.py, DESIGN.md "Baskets: one cross-margin wallet").

Hand-derived numbers. BTC/USDT:USDT and ETH/USDT:USDT (XRP in the rules test) on the shipped venue's
per-symbol rules, maker 2 bps, taker 5 bps, no slippage; both symbols' first bracket is mmr 0.004,
cum 0 (notional < 50,000). Grid step 1 %: BTC rungs 9900 / 10100 around 10000, ETH 990 / 1010
around 1000. Rows and fills of bar k carry ``bar_ts(k)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gridctl.engine.basket import run_basket
from gridctl.engine.enums import EventKind, FillKind, RiskState
from gridctl.engine.run import run_single
from gridctl.research.bench import bench_configs, bench_market

from market_builders import (
    EIGHT_HOURS,
    LIMITS_OFF,
    T0,
    bar_ts,
    flat,
    make_market,
    strategy,
    venue,
)

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
XRP = "XRP/USDT:USDT"
INSTRUMENT = {BTC: "BTCUSDT-PERP.BINANCE", ETH: "ETHUSDT-PERP.BINANCE", XRP: "XRPUSDT-PERP.BINANCE"}


def strat(symbol, **overrides):
    return strategy(strategy__instrument_id=INSTRUMENT[symbol], **overrides)


def basket(markets, strategies, ven, **kw):
    return run_basket(
        {m.symbol: m for m in markets},
        dict(zip([m.symbol for m in markets], strategies, strict=True)),
        ven,
        **kw,
    )


def kinds(events):
    return [EventKind._fields[e["kind"]] for e in events]


# Long lots only matter here: the SL 50 steps away (BTC 4950, ETH 495) is never reached.
LONGS = dict(exit__sl_steps=50, **LIMITS_OFF)


def test_combined_loss_liquidates_the_account_though_neither_alone_would():
    # Initial balance 2500, leverage 20. Bar 1 fills BTC 1.0 @ 9900 and ETH 10 @ 990 (maker fee 1.98 each):
    # wallet W = 2500 - 3.96 = 2496.04. Bar 2 falls to BTC 8500 / ETH 850 (U = -1400 each).
    # BTC steps first; ETH's adverse extreme is its low 850: X_UNREAL = -1400, X_MM = 0.004*8500 = 34.
    # BTC's margin wallet = 2496.04 - 1400 - 34 = 1062.04; LP = (1062.04 - 9900)/(0.004 - 1) = 8873.45...
    # (8837.96/0.996), crossed on the way down to 8500: BTC closes there, paying its maintenance margin
    # 0.004*LP = 35.49...; ETH closes at 850 (realized -1400) paying 0.004*8500 = 34. Wallet after: 0.
    # Alone (wallet 2498.02): BTC's LP = 7401.98/0.996 = 7431.7 and ETH's 743.17: neither reaches 8500/850.
    ven = venue(trading__leverage=20)
    btc = make_market([*flat(10000, 1), (10000, 10000, 9890, 9900), (9900, 9900, 8500, 8600)], symbol=BTC)
    eth = make_market([*flat(1000, 1), (1000, 1000, 989, 990), (990, 990, 850, 860)], symbol=ETH)
    sb = strat(BTC, grid__base_qty=1.0, backtest__initial_balance=2500.0, **LONGS)
    se = strat(ETH, grid__base_qty=10.0, backtest__initial_balance=2500.0, **LONGS)
    for m, s in ((btc, sb), (eth, se)):
        alone = run_single(m, s, ven)
        assert not alone.summary["liquidated"]
        assert alone.summary["final_equity"] == pytest.approx(2498.02 - 1300.0)  # closes 8600 / 860
    out = basket([btc, eth], [sb, se], ven)
    assert out.summary["liquidated"] == 1.0
    assert out.meta["liquidated_by"] == BTC
    assert out.summary["final_equity"] == pytest.approx(0.0, abs=1e-6)
    lp = 8837.96 / 0.996
    b_liq = [f for f in out.per_symbol[BTC].fills if f["kind"] == FillKind.LIQUIDATION]
    e_liq = [f for f in out.per_symbol[ETH].fills if f["kind"] == FillKind.LIQUIDATION]
    assert len(b_liq) == 1 and len(e_liq) == 1
    assert b_liq[0]["ts"] == bar_ts(2) and e_liq[0]["ts"] == bar_ts(2)
    assert b_liq[0]["price"] == pytest.approx(lp)
    assert b_liq[0]["fee"] == pytest.approx(0.004 * lp, abs=1e-6)
    assert b_liq[0]["realized_pnl"] == pytest.approx(lp - 9900.0)
    assert (e_liq[0]["price"], e_liq[0]["qty"]) == (850.0, 10.0)
    assert e_liq[0]["fee"] == pytest.approx(34.0, abs=1e-6)
    assert e_liq[0]["realized_pnl"] == pytest.approx(-1400.0)
    # Each symbol's LIQUIDATION event names the symbol whose path crossed: level = 1 + its index (BTC: 0).
    for sym in (BTC, ETH):
        ev = [e for e in out.per_symbol[sym].events if e["kind"] == EventKind.LIQUIDATION]
        assert len(ev) == 1 and ev[0]["level"] == 1 and ev[0]["ts"] == bar_ts(2)
    assert [r["state"] for r in out.account_equity] == [0, 0, RiskState.LIQUIDATED]
    assert out.account_equity[-1]["equity"] == pytest.approx(0.0, abs=1e-6)


def test_profit_on_one_symbol_keeps_another_alive():
    # Initial balance 1500, leverage 20. BTC: step 1 %, long 1.0 @ 9900. ETH: step 10 %, long 10 @ 900
    # (TP 3 steps away at 1170; its short rung 1100 is refused at first: SIZE_MARGIN (10 + 10 + 20000/1100)
    # * 1100 / 20 = 2100 > 1500, BTC's resting 20000 counted). Bar 1 fills both longs (fees 1.98 and 1.8):
    # W = 1496.22. Bar 2: ETH rallies to 1090 (U = +1900); bar 3: BTC falls to 8000 while ETH holds 1090.
    # Alone (wallet 1498.02) BTC's LP is 8401.98/0.996 = 8435.72 > 8000: liquidated in bar 3.
    # In the basket ETH's adverse extreme of bar 3 is 1090: X_UNREAL = 1900, X_MM = 0.004*10900 = 43.6;
    # margin wallet 1496.22 + 1900 - 43.6 = 3352.62, LP = 6547.38/0.996 = 6573.67 < 8000: it survives.
    # Final account equity at the closes 8100 / 1090: 1496.22 - 1800 + 1900 = 1596.22.
    ven = venue(trading__leverage=20)
    btc = make_market(
        [*flat(10000, 1), (10000, 10000, 9890, 9900), *flat(9900, 1), (9900, 9900, 8000, 8100)], symbol=BTC
    )
    eth = make_market(
        [*flat(1000, 1), (1000, 1000, 899, 905), (905, 1090, 905, 1090), *flat(1090, 1)], symbol=ETH
    )
    sb = strat(BTC, grid__base_qty=1.0, backtest__initial_balance=1500.0, **LONGS)
    se = strat(
        ETH, grid__base_qty=10.0, grid__grid_step_bps=1000.0, exit__tp_steps=3, exit__sl_steps=3,
        backtest__initial_balance=1500.0, **LIMITS_OFF,
    )  # fmt: skip
    alone = run_single(btc, sb, ven)
    assert alone.summary["liquidated"] == 1.0
    assert alone.summary["liquidated_ts"] == bar_ts(3)
    liq = [f for f in alone.fills if f["kind"] == FillKind.LIQUIDATION]
    assert liq[0]["price"] == pytest.approx(8401.98 / 0.996)
    out = basket([btc, eth], [sb, se], ven)
    assert out.summary["liquidated"] == 0.0
    assert all(f["kind"] != FillKind.LIQUIDATION for sym in (BTC, ETH) for f in out.per_symbol[sym].fills)
    assert out.per_symbol[BTC].summary["long_qty"] == 1.0
    assert out.summary["final_equity"] == pytest.approx(1596.22)
    assert out.account_equity[-1]["equity"] == pytest.approx(1596.22)
    # The symbols' contributions add up to the account: BTC -1801.98 and ETH +1898.2 on 1500.
    assert out.per_symbol[BTC].summary["final_equity"] == pytest.approx(1500.0 - 1.98 - 1800.0)
    assert out.per_symbol[ETH].summary["final_equity"] == pytest.approx(1500.0 - 1.8 + 1900.0)
    rej = [e for e in out.per_symbol[ETH].events if e["kind"] == EventKind.ORDER_REJECTED]
    assert [(e["ts"], e["price"]) for e in rej] == [(bar_ts(0), 1100.0)]


def test_each_symbol_trades_on_its_own_tick_and_lot():
    # Sizes in quote (base_notional): BTC 500 USDT, XRP 50 USDT, step 1 %, the shipped snapshot's rules.
    # BTC (tick 0.1, lot 0.001) around 60000: long rung floor_tick(59400) = 59400.0,
    #   qty floor_step(500/60000 = 0.00833) = 0.008.
    # XRP (tick 0.0001, lot 0.1) around 1.1234: long rung floor_tick(1.112166) = 1.1121 (BTC's tick would
    #   make it 1.1), qty floor_step(50/1.1234 = 44.508) = 44.5 (BTC's lot would make it 44.507).
    ven = venue()
    btc = make_market([*flat(60000, 1), (60000, 60000, 59300, 59500)], symbol=BTC)
    xrp = make_market([*flat(1.1234, 1), (1.1234, 1.1234, 1.11, 1.115)], symbol=XRP)
    sb = strat(BTC, grid__base_notional=500.0)
    sx = strat(XRP, grid__base_notional=50.0)
    out = basket([btc, xrp], [sb, sx], ven)
    (fb,) = [f for f in out.per_symbol[BTC].fills if f["kind"] == FillKind.ENTRY]
    (fx,) = [f for f in out.per_symbol[XRP].fills if f["kind"] == FillKind.ENTRY]
    assert fb["price"] == pytest.approx(59400.0, abs=1e-9) and fb["qty"] == pytest.approx(0.008, abs=1e-12)
    assert fx["price"] == pytest.approx(1.1121, abs=1e-12) and fx["qty"] == pytest.approx(44.5, abs=1e-9)
    assert out.per_symbol[XRP].params.meta["symbol"] == XRP


def _same_run(single, one):
    for name in ("fills", "funding", "events", "equity"):
        assert np.array_equal(getattr(single, name), getattr(one, name)), name


def test_one_symbol_basket_is_the_single_run():
    # A one-symbol basket has no "rest of the account" (X slots 0), so it is run_single bit for bit:
    # the bench's sample market (gates on, funding paid) and a hand market with a gap and funding.
    m = bench_market(6 * 1440)
    s, v = bench_configs()
    single = run_single(m, s, v)
    out = run_basket({m.symbol: m}, {m.symbol: s}, v)
    assert len(single.fills) > 50 and len(single.funding) > 0
    _same_run(single, out.per_symbol[m.symbol])
    assert out.summary["final_equity"] == single.summary["final_equity"]
    assert out.account_equity["equity"].tolist() == single.equity["equity"].tolist()
    bars = [*flat(10000, 1), (10000, 10000, 9890, 9950), (9950, 10150, 9950, 10100), *flat(10100, 3)]
    ts = [T0 + i * 3_600_000 for i in (0, 1, 2, 5, 6, 7)]  # a 3-hour gap after bar 2
    funding = [(T0 - EIGHT_HOURS, 0.0001, math.nan), (T0 + EIGHT_HOURS, 0.0005, 10050.0)]
    hm = make_market(bars, ts=ts, funding=funding)
    hs = strategy(grid__base_qty=0.5, exit__tp_steps=3)
    hv = venue()
    single = run_single(hm, hs, hv)
    out = run_basket({hm.symbol: hm}, {hm.symbol: hs}, hv)
    assert "DATA_GAP" in kinds(single.events)
    _same_run(single, out.per_symbol[hm.symbol])
    assert out.summary["final_equity"] == single.summary["final_equity"]


def test_missing_bars_record_input_missing_and_do_not_trade():
    # BTC has bars 0..4; ETH starts at bar 2 and misses bar 3. Aligned, ETH's bars 0, 1 and 3 are NaN:
    # INPUT_MISSING each, state REDUCING, no fills. Its entries decided at bar 2's close are cancelled by
    # the missing bar 3, so bar 4's dip through 990 fills nothing; BTC's dip in bar 1 fills as usual.
    btc = make_market([*flat(10000, 1), (10000, 10000, 9890, 9950), *flat(9950, 3)], symbol=BTC)
    eth = make_market(
        [(1000, 1000, 1000, 1000), (1000, 1000, 980, 1000)], ts=[bar_ts(2), bar_ts(4)], symbol=ETH
    )
    out = basket([btc, eth], [strat(BTC), strat(ETH, grid__base_qty=0.1)], venue())
    e = out.per_symbol[ETH]
    assert kinds(e.events) == ["INPUT_MISSING"] * 3
    assert [ev["ts"] for ev in e.events] == [bar_ts(0), bar_ts(1), bar_ts(3)]
    assert len(e.fills) == 0
    assert [r["state"] for r in e.equity] == [
        RiskState.REDUCING,
        RiskState.REDUCING,
        0,
        RiskState.REDUCING,
        0,
    ]
    assert [f["ts"] for f in out.per_symbol[BTC].fills] == [bar_ts(1)]
    assert len(out.account_equity) == 5


def test_account_drawdown_halts_every_symbol_in_the_same_step():
    # Initial 10000, max drawdown 2 %. Bar 1 fills BTC 1.0 @ 9900 and ETH 10 @ 990 (fees 3.96): closes at
    # the rungs, equity 9996.04. Bar 2 closes BTC 9800 / ETH 980: at BTC's close the account equity is
    # 9996.04 - 100 - 100 = 9796.04, drawdown 203.96/10000 = 2.0396 % >= 2: BTC flattens at 9800 (taker
    # fee 4.9) and halts, ETH flattens at 980 (fee 4.9) and halts in the same step.
    # Final equity 9996.04 - 200 - 9.8 = 9786.24. Alone, BTC's drawdown is 101.98/10000 = 1.02 %: no halt.
    dd = dict(risk_management__max_drawdown_pct=2.0, exit__sl_steps=50)
    btc = make_market(
        [*flat(10000, 1), (10000, 10000, 9890, 9900), (9900, 9900, 9800, 9800), *flat(9800, 1)], symbol=BTC
    )
    eth = make_market(
        [*flat(1000, 1), (1000, 1000, 989, 990), (990, 990, 980, 980), (980, 1200, 900, 980)], symbol=ETH
    )
    sb = strat(BTC, grid__base_qty=1.0, **dd)
    se = strat(ETH, grid__base_qty=10.0, **dd)
    assert "DRAWDOWN_HALT" not in kinds(run_single(btc, sb, venue()).events)
    out = basket([btc, eth], [sb, se], venue())
    for sym, px in ((BTC, 9800.0), (ETH, 980.0)):
        r = out.per_symbol[sym]
        halts = [e for e in r.events if e["kind"] == EventKind.DRAWDOWN_HALT]
        assert len(halts) == 1 and halts[0]["ts"] == bar_ts(2) and halts[0]["level"] == 1  # BTC set it off
        flats = [f for f in r.fills if f["kind"] == FillKind.FLATTEN]
        assert len(flats) == 1 and flats[0]["ts"] == bar_ts(2) and flats[0]["price"] == px
        assert flats[0]["fee"] == pytest.approx(4.9)
        assert [row["state"] for row in r.equity][2:] == [RiskState.HALTED, RiskState.HALTED]
        assert len(r.fills) == 2  # bar 3 sweeps both rungs of ETH: nothing fills once halted
    assert out.meta["halted_by"] == BTC and out.summary["halted_ts"] == bar_ts(2)
    assert out.summary["final_equity"] == pytest.approx(9786.24)


def test_errors_on_two_symbols_trip_the_one_account_breaker():
    # 1m bars, at most 2 errors per 60 s. Bar 1 opens below both new long entries (BTC 9850 < 9900,
    # ETH 985 < 990): one post-only rejection each (no retries), both at ts1. BTC's alone is 1 error;
    # ETH's is the account's second: ETH trips the breaker at ts1 (until ts1 + 180 s) and BTC's entry,
    # placed again at bar 1's close, is cancelled; bar 2's dip through 9900 fills nothing (COOLDOWN).
    # Alone, BTC never trips and its re-placed entry fills in bar 2.
    cb = dict(
        risk_management__max_errors_per_minute=2, risk_management__circuit_breaker_window_seconds=60,
        risk_management__circuit_breaker_cooldown_seconds=180,
    )  # fmt: skip
    btc = make_market(
        [*flat(10000, 1), (9850, 9960, 9850, 9950), (9950, 9950, 9880, 9950)], timeframe="1m", symbol=BTC
    )
    eth = make_market(
        [*flat(1000, 1), (985, 996, 985, 995), (995, 995, 994, 995)], timeframe="1m", symbol=ETH
    )
    sb = strat(BTC, **cb)
    se = strat(ETH, grid__base_qty=0.1, **cb)
    alone = run_single(btc, sb, venue())
    assert "CIRCUIT_BREAKER_TRIP" not in kinds(alone.events)
    assert [f["ts"] for f in alone.fills if f["kind"] == FillKind.ENTRY] == [bar_ts(2, "1m")]
    out = basket([btc, eth], [sb, se], venue())
    assert kinds(out.per_symbol[BTC].events) == ["POST_ONLY_REJECT"]
    assert kinds(out.per_symbol[ETH].events) == ["POST_ONLY_REJECT", "CIRCUIT_BREAKER_TRIP"]
    trip = out.per_symbol[ETH].events[1]
    assert trip["ts"] == bar_ts(1, "1m") and trip["value"] == bar_ts(1, "1m") + 180_000
    assert len(out.per_symbol[BTC].fills) == 0
    assert [r["state"] for r in out.per_symbol[BTC].equity] == [0, 0, RiskState.COOLDOWN]
    assert [r["state"] for r in out.account_equity] == [0, RiskState.COOLDOWN, RiskState.COOLDOWN]
    assert out.summary["errors"] == 2.0 and out.summary["circuit_breaker_trips"] == 1.0
