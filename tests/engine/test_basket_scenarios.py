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

from gridctl.configs.errors import GridctlError
from gridctl.engine.basket import run_basket
from gridctl.engine.enums import EventKind, FillKind, RiskState
from gridctl.engine.run import run_single
from gridctl.engine.state import SL_ORD_ON, SL_ORD_PRICE, SL_ORD_QTY
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


def test_liquidation_crossed_by_a_later_symbol_closes_one_that_already_stepped():
    # Basket order ETH, BTC; as in the first test up to bar 1 (W = 2496.04), but ETH has no bar 2.
    # ETH steps first: INPUT_MISSING (entries cancelled, row recorded). BTC's X: ETH at its last close 990
    # (U 0, MM 0.004*9900 = 39.6): margin wallet 2456.44, LP = 7443.56/0.996 = 7473.45..., crossed on the
    # way to 7000; BTC pays 0.004*LP. ETH, already stepped, closes at 990 (realized 0) paying 39.6, and
    # its row of bar 2 is recorded again as LIQUIDATED: 3 rows, 3 bars, none REDUCING. Wallet after: 0.
    ven = venue(trading__leverage=20)
    btc = make_market([*flat(10000, 1), (10000, 10000, 9890, 9900), (9900, 9900, 7000, 7100)], symbol=BTC)
    eth = make_market([*flat(1000, 1), (1000, 1000, 989, 990)], symbol=ETH)
    sb = strat(BTC, grid__base_qty=1.0, backtest__initial_balance=2500.0, **LONGS)
    se = strat(ETH, grid__base_qty=10.0, backtest__initial_balance=2500.0, **LONGS)
    out = basket([eth, btc], [se, sb], ven)
    assert out.meta["liquidated_by"] == BTC
    lp = 7443.56 / 0.996
    (b_liq,) = [f for f in out.per_symbol[BTC].fills if f["kind"] == FillKind.LIQUIDATION]
    assert b_liq["price"] == pytest.approx(lp) and b_liq["fee"] == pytest.approx(0.004 * lp, abs=1e-6)
    e = out.per_symbol[ETH]
    (e_liq,) = [f for f in e.fills if f["kind"] == FillKind.LIQUIDATION]
    assert (e_liq["ts"], e_liq["price"], e_liq["qty"]) == (bar_ts(2), 990.0, 10.0)
    assert e_liq["fee"] == pytest.approx(39.6, abs=1e-6) and e_liq["realized_pnl"] == 0.0
    assert kinds(e.events) == ["INPUT_MISSING", "LIQUIDATION"]
    assert e.events[1]["level"] == 2  # BTC, basket index 1, crossed
    assert [r["state"] for r in e.equity] == [0, 0, RiskState.LIQUIDATED]
    assert (e.summary["bars"], e.summary["bars_reducing"]) == (3.0, 0.0)
    assert out.summary["final_equity"] == pytest.approx(0.0, abs=1e-6)


def test_drawdown_seen_by_a_later_symbol_halts_one_that_already_stepped():
    # Basket order ETH, BTC, max drawdown 2 %; bar 1 fills both longs (equity 9996.04). ETH has no bar 2
    # (its close does not mark, so it cannot see the drawdown); BTC closes 9700: the account equity is
    # 9996.04 - 200 + 0 (ETH at its last close 990) = 9796.04, drawdown 2.0396 %: BTC flattens at 9700
    # (fee 4.85), then ETH, which already stepped, flattens at 990 (fee 4.95) and its row of bar 2 is
    # recorded again as HALTED. Final equity 9996.04 - 200 - 9.8 = 9786.24.
    dd = dict(risk_management__max_drawdown_pct=2.0, exit__sl_steps=50)
    btc = make_market([*flat(10000, 1), (10000, 10000, 9890, 9900), (9900, 9900, 9700, 9700)], symbol=BTC)
    eth = make_market([*flat(1000, 1), (1000, 1000, 989, 990)], symbol=ETH)
    out = basket(
        [eth, btc], [strat(ETH, grid__base_qty=10.0, **dd), strat(BTC, grid__base_qty=1.0, **dd)], venue()
    )
    assert out.meta["halted_by"] == BTC
    e = out.per_symbol[ETH]
    (flat_fill,) = [f for f in e.fills if f["kind"] == FillKind.FLATTEN]
    assert (flat_fill["ts"], flat_fill["price"]) == (bar_ts(2), 990.0)
    assert flat_fill["fee"] == pytest.approx(4.95)
    assert kinds(e.events) == ["INPUT_MISSING", "DRAWDOWN_HALT"] and e.events[1]["level"] == 2
    assert [r["state"] for r in e.equity] == [0, 0, RiskState.HALTED]
    assert (e.summary["bars"], e.summary["bars_halted"], e.summary["bars_reducing"]) == (3.0, 1.0, 0.0)
    assert out.summary["final_equity"] == pytest.approx(9786.24)


def test_detail_bars_per_symbol():
    # A one-symbol basket walking 1m detail bars is run_single with the same detail bit for bit, and the
    # fill carries the detail bar's ts (minute 30 of bar 1, where the dip to 9890 happens).
    hour = [(10000.0, 10000.0, 10000.0, 10000.0)] * 60
    dip = [(10000.0, 10000.0, 10000.0, 10000.0)] * 30 + [(10000.0, 10000.0, 9890.0, 9950.0)]
    dip += [(9950.0, 9950.0, 9950.0, 9950.0)] * 29
    detail = make_market([*hour, *dip, *[(9950.0,) * 4] * 60], timeframe="1m")
    m = make_market([*flat(10000, 1), (10000, 10000, 9890, 9950), *flat(9950, 1)])
    s = strategy(backtest__detail_timeframe="1m")
    single = run_single(m, s, venue(), detail=detail)
    out = run_basket({m.symbol: m}, {m.symbol: s}, venue(), detail={m.symbol: detail})
    _same_run(single, out.per_symbol[m.symbol])
    (entry,) = [f for f in out.per_symbol[m.symbol].fills if f["kind"] == FillKind.ENTRY]
    assert entry["ts"] == T0 + 3_600_000 + 30 * 60_000
    assert out.per_symbol[m.symbol].meta["detail"]["detailed_bars"] == 3


def test_account_fields_must_agree():
    btc = make_market(flat(10000, 2), symbol=BTC)
    eth = make_market(flat(1000, 2), symbol=ETH)
    with pytest.raises(GridctlError, match=r"backtest.initial_balance is 5000 for ETH/USDT:USDT but 10000"):
        basket([btc, eth], [strat(BTC), strat(ETH, backtest__initial_balance=5000.0)], venue())
    # The daily loss limit is the account's too: unset (NaN) on both passes, set on one only is refused.
    with pytest.raises(GridctlError, match=r"max_daily_loss_pct is 2 for ETH/USDT:USDT but nan"):
        basket([btc, eth], [strat(BTC), strat(ETH, risk_management__max_daily_loss_pct=2.0)], venue())
    basket([btc, eth], [strat(BTC), strat(ETH)], venue())
    with pytest.raises(GridctlError, match=r"strategies are for"):
        run_basket({BTC: btc, ETH: eth}, {ETH: strat(ETH), BTC: strat(BTC)}, venue())


def _walk(seed, price, n=400):
    rng = np.random.default_rng(seed)
    bars, c = [], price
    for _ in range(n):
        o = c
        c = round(o * math.exp(rng.normal(0, 0.006)), 2)
        h = round(max(o, c) * (1 + abs(rng.normal(0, 0.003))), 2)
        lo = round(min(o, c) * (1 - abs(rng.normal(0, 0.003))), 2)
        bars.append((o, h, lo, c))
    funding = [
        (T0 + (j - 1) * EIGHT_HOURS, float(rng.normal(0.0001, 0.0003)), math.nan) for j in range(n // 8 + 3)
    ]
    return bars, funding


def test_when_no_account_limit_binds_each_symbol_trades_as_alone():
    # With a balance no limit comes near (1e9) and the account-wide gates off (drawdown, breaker; the
    # order-pacing window far above what two ladders send), nothing couples the symbols but the wallet:
    # each symbol's fills, funding and events are its single run's, and the account's equity is the
    # initial balance plus both runs' PnL.
    free = dict(
        grid__grid_levels_long=3, grid__grid_levels_short=3, grid__grid_step_bps=50.0, exit__tp_steps=1,
        exit__sl_steps=4, backtest__initial_balance=1e9, risk_management__enable_drawdown_protection=False,
        risk_management__enable_circuit_breaker=False,
    )  # fmt: skip
    (bb, fb), (be, fe) = _walk(1, 10000.0), _walk(2, 1000.0)
    btc, eth = make_market(bb, funding=fb, symbol=BTC), make_market(be, funding=fe, symbol=ETH)
    sb, se = strat(BTC, grid__base_qty=0.5, **free), strat(ETH, grid__base_qty=5.0, **free)
    out = basket([btc, eth], [sb, se], venue())
    pnl = 0.0
    for m, s in ((btc, sb), (eth, se)):
        alone = run_single(m, s, venue())
        assert len(alone.fills) > 20 and len(alone.funding) > 5
        mine = out.per_symbol[m.symbol]
        for name in ("fills", "funding", "events"):
            assert np.array_equal(getattr(alone, name), getattr(mine, name)), (m.symbol, name)
        pnl += alone.summary["final_equity"] - 1e9
        assert mine.summary["final_equity"] == pytest.approx(
            alone.summary["final_equity"], rel=1e-15, abs=1e-6
        )
    assert out.summary["final_equity"] == pytest.approx(1e9 + pnl, rel=1e-15, abs=1e-6)


def _gappy(seed, price, start_bar, n=300):
    """A random walk starting ``start_bar`` hours after T0, with a few missing hours and NaN bars."""
    rng = np.random.default_rng(seed)
    bars, ts, c = [], [], price
    t = T0 + start_bar * 3_600_000
    for _ in range(n):
        o = c
        c = o * math.exp(rng.normal(0, 0.01))
        h, lo = max(o, c) * (1 + abs(rng.normal(0, 0.004))), min(o, c) * (1 - abs(rng.normal(0, 0.004)))
        bars.append((math.nan,) * 4 if rng.random() < 0.02 else (o, h, lo, c))
        ts.append(t)
        t += 3_600_000 * (2 if rng.random() < 0.03 else 1)
    funding = [
        (T0 + (j - 1) * EIGHT_HOURS, float(rng.normal(0.0001, 0.0005)), math.nan) for j in range(n // 6)
    ]
    return make_market(bars, ts=ts, funding=funding)


def _random_basket(seed):
    """Three symbols (their own rules) with gaps, NaN bars and a late start; seeds 0-5 with the gates on
    and small balances, seeds 6-11 with six rungs a side, gates off and 20x. Returns (markets,
    strategies, venue, balance)."""
    rng = np.random.default_rng(100 + seed)
    balance = float(rng.choice([300.0, 1000.0, 5000.0]))
    scale = float(rng.choice([1.0, 5.0]))
    common = dict(
        backtest__initial_balance=balance, grid__grid_levels_long=3, grid__grid_levels_short=3,
        grid__grid_step_bps=60.0, exit__sl_steps=int(rng.choice([2, 6, 40])),
        risk_management__max_drawdown_pct=float(rng.choice([5.0, 20.0, 50.0])),
    )  # fmt: skip
    xrp_notional = 20.0
    if seed >= 6:
        balance, scale, xrp_notional, seed = 1000.0, 5.0, 200.0, seed - 6
        common = dict(
            backtest__initial_balance=balance, grid__grid_levels_long=6, grid__grid_levels_short=6,
            grid__grid_step_bps=100.0, exit__sl_steps=40, exit__tp_steps=3, **LIMITS_OFF,
        )  # fmt: skip
    mk = [_gappy(seed, 10000.0, 0), _gappy(seed + 50, 1000.0, 0), _gappy(seed + 99, 1.1, 7)]
    mk = [make_market_as(m, sym) for m, sym in zip(mk, (BTC, ETH, XRP), strict=True)]
    sizes = {
        BTC: dict(grid__base_qty=0.02 * scale),
        ETH: dict(grid__base_qty=0.2 * scale),
        XRP: dict(grid__base_notional=xrp_notional * scale),
    }
    return (
        mk,
        [strat(m.symbol, **common, **sizes[m.symbol]) for m in mk],
        venue(trading__leverage=20),
        balance,
    )


@pytest.mark.parametrize("seed", range(12))
def test_account_invariants_on_random_baskets(seed):
    # Three symbols (their own rules), gaps, NaN bars, a late start; seeds 0-5 with the gates on and
    # small balances (three halt, once set off by ETH, the second symbol), seeds 6-11 with six rungs a
    # side, gates off and 20x (three liquidate). Whatever happens: the account's rows are wallet +
    # unrealized; the symbols' contributions add up to the account's final equity; the wallet is the
    # initial balance plus every symbol's realized PnL - fees + funding; a liquidation or halt is the
    # whole account's, at one time.
    mk, strategies, ven, balance = _random_basket(seed)
    out = basket(mk, strategies, ven)
    rows = out.account_equity
    assert np.allclose(rows["equity"], rows["wallet_balance"] + rows["unrealized_pnl"], rtol=0, atol=1e-6)
    per = [out.per_symbol[s].summary for s in out.symbols]
    assert out.summary["final_equity"] == pytest.approx(
        sum(p["final_equity"] for p in per) - 2 * balance, abs=1e-6
    )
    flows = sum(p["realized_pnl"] - p["fees"] + p["funding_net"] for p in per)
    assert rows[-1]["wallet_balance"] == pytest.approx(balance + flows, abs=1e-6)
    for key in ("liquidated", "halted"):
        assert {p[key] for p in per} == {out.summary[key]}, key
    if out.summary["liquidated"]:
        assert {p["liquidated_ts"] for p in per} == {out.summary["liquidated_ts"]}
        assert rows[-1]["state"] == RiskState.LIQUIDATED and rows[-1]["unrealized_pnl"] == 0.0
    else:
        all_ts = np.unique(np.concatenate([m.ts for m in mk]))
        assert rows["ts"].tolist() == all_ts.tolist()
    if out.summary["halted"]:
        assert {p["halted_ts"] for p in per} == {out.summary["halted_ts"]}


def make_market_as(market, symbol):
    """``market`` under another ccxt symbol."""
    return make_market(
        list(zip(market.open, market.high, market.low, market.close, strict=True)),
        ts=list(market.ts),
        funding=list(zip(market.funding_ts, market.funding_rate, market.funding_mark, strict=True)),
        symbol=symbol,
    )


def test_a_symbol_whose_positions_did_not_change_keeps_its_price_columns_and_takes_the_new_resting():
    # The step's contribution skips the price columns when the positions, the bar and the last close are
    # the ones they were computed from: only the notional columns take the new resting notional.
    # Long 0.01 at avg 100, bar (h 104, lo 98, c 101); a new resting entry of 0.002 at 99 adds 0.198:
    # W_N_CL = 0.01 * 101 + 0.198 = 1.208, W_N_ADV = 0.01 * 98 (lo: the adverse end) + 0.198 = 1.178.
    from gridctl.engine import basket as b
    from gridctl.engine.state import (
        S_LONG_AVG,
        S_LONG_QTY,
        S_RESTING_NOTIONAL,
        refresh_triggers_nb,
    )

    markets, strategies, ven = bench_basket(2)
    params = b.basket_params(tuple(markets), strategies, ven, markets, {})
    vecs, brs, nbr, levels = b.stack_params(params)
    states, slots, _errs, _ords, _acc = b.new_account(vecs, levels)
    st, sl, br = states[1], slots[1], brs[1, : nbr[1]]
    st[S_LONG_QTY], st[S_LONG_AVG] = 0.01, 100.0
    work = np.zeros((2, b.N_WORK))
    work[:, b.W_LAST] = np.nan
    b.price_contribution_nb(st, sl, br, 104.0, 98.0, 101.0, work[1])  # the bar's start (no resting entry)
    sl[0, 0, SL_ORD_ON], sl[0, 0, SL_ORD_QTY], sl[0, 0, SL_ORD_PRICE] = 1.0, 0.002, 99.0
    refresh_triggers_nb(st, sl)  # what every kernel that changes the slots runs after: the sum is stale
    assert math.isnan(st[S_RESTING_NOTIONAL])
    skipped = work[1].copy()
    b.step_contribution_nb(st, sl, br, 104.0, 98.0, 101.0, skipped)
    full = work[1].copy()
    b.price_contribution_nb(st, sl, br, 104.0, 98.0, 101.0, full)
    assert skipped.tobytes() == full.tobytes()
    assert st[S_RESTING_NOTIONAL] == pytest.approx(0.198, abs=1e-15)  # summed again once, then kept
    assert skipped[b.W_N_CL] == pytest.approx(1.208, abs=1e-12)
    assert skipped[b.W_N_ADV] == pytest.approx(1.178, abs=1e-12)
    assert skipped[b.W_U_ADV] == pytest.approx(-0.02, abs=1e-12)  # 0.01 * (98 - 100)
    # A fill in the step (long 0.02 now): the price columns are computed again.
    st[S_LONG_QTY] = 0.02
    b.step_contribution_nb(st, sl, br, 104.0, 98.0, 101.0, skipped)
    assert skipped[b.W_U_CL] == pytest.approx(0.02, abs=1e-12)  # 0.02 * (101 - 100)
    assert skipped[b.W_N_CL] == pytest.approx(0.02 * 101 + 0.198, abs=1e-12)


def bench_basket(n):
    from gridctl.research.bench import basket_markets

    return basket_markets(200, n)


def _resting_notional(slots):
    """The resting entries' notional summed here, side by side in rung order (as the kernel sums it)."""
    rungs = [slots[side, idx] for side in range(2) for idx in range(slots.shape[1])]
    return float(sum(r[SL_ORD_QTY] * r[SL_ORD_PRICE] for r in rungs if r[SL_ORD_ON] != 0.0))


@pytest.mark.parametrize("seed", [0, 2, 3, 6, 7, 9])
def test_the_kept_resting_notional_is_the_slots_after_every_bar(seed):
    # The basket reads each symbol's resting notional at every bar; it sums the slots again only after
    # they changed (refresh_triggers_nb marks the kept sum stale, resting_notional_of_nb sums it once).
    # Stepped bar by bar through basket_bar_nb (as the live session steps it) over random baskets with
    # fills, gaps, NaN bars, breaker trips, halts and liquidations, every symbol's kept sum after every
    # bar equals the slots' own sum, and the stepped run ends where run_basket's does.
    from gridctl.engine import basket as b
    from gridctl.engine.records import C_EQUITY, C_EVENTS, C_FILLS, C_FUNDING
    from gridctl.engine.run import regime_series
    from gridctl.engine.state import S_RESTING_NOTIONAL

    mk, strategies, ven, _balance = _random_basket(seed)
    markets = {m.symbol: m for m in mk}
    own = dict(zip(markets, strategies, strict=True))
    symbols = tuple(markets)
    params = b.basket_params(symbols, own, ven, markets, {})
    bars = b.basket_bars(symbols, markets, {})
    regs = np.stack([regime_series(a, prm.vector) for a, prm in zip(bars.arrays, params, strict=True)])
    caps = {C_FILLS: 4096, C_EVENTS: 4096, C_FUNDING: 4096, C_EQUITY: 0}
    args = b.basket_groups(bars, regs, b.stack_params(params), caps, False)
    sims, account = args[4], args[7]
    b.basket_start_nb(sims.st, account.info, account.work, account.sh)
    held = 0
    for k in range(bars.ts.shape[0]):
        code = b.basket_bar_nb(k, *args)
        for i in range(len(symbols)):
            want = _resting_notional(sims.slots[i])
            assert sims.st[i, S_RESTING_NOTIONAL] == want, (k, symbols[i])
            held += want > 0.0
        if code != b.BAR_GO:
            break
    assert held > 50  # resting entries most of the time: the check compared something
    whole = basket(mk, strategies, ven, curves=False)
    assert int(account.info[b.A_STEPS]) == whole.meta["bars"]
    for i, sym in enumerate(symbols):
        assert sims.st[i, S_RESTING_NOTIONAL] == _resting_notional(sims.slots[i])
        assert args[6].cnt[i, C_FILLS] == len(whole.per_symbol[sym].fills)
