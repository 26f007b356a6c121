"""The reference simulator's basket (tests/reference_sim.py ``run_reference_basket``) on hand-derived
scenarios: one wallet for several symbols (DESIGN.md "Baskets"). Every expected number below is worked
out by hand from the bars and the venue's rules (BTC and ETH: tier 1 maintenance margin 0.4 %, cum 0;
maker fee 0.02 %), never read back from the code under test.
"""

from __future__ import annotations

import math

import pytest

from market_builders import T0, flat, make_market, strategy, venue
from reference_sim import ENTRY, EVENT_KINDS, LIQUIDATION, LONG, SHORT, run_reference_basket, simulate

BTC, ETH, XRP = "BTC/USDT:USDT", "ETH/USDT:USDT", "XRP/USDT:USDT"
HOUR = 3_600_000
# event kinds by name (the gate table orders the codes)
INPUT_MISSING, POST_ONLY_REJECT = EVENT_KINDS.index("INPUT_MISSING"), EVENT_KINDS.index("POST_ONLY_REJECT")
CB_TRIP, CB_RESET = EVENT_KINDS.index("CIRCUIT_BREAKER_TRIP"), EVENT_KINDS.index("CIRCUIT_BREAKER_RESET")
MMR = 0.004  # tier 1 of BTC's and ETH's brackets (notional below 50,000)
MAKER = 0.0002

# Long and short rung 1 each, TP / SL far away, the drawdown halt off: only the margin acts.
FAR = dict(
    exit__tp_steps=30,
    exit__sl_steps=60,
    risk_management__enable_drawdown_protection=False,
)


def ven():
    return venue(trading__leverage=20)


def kinds(out, symbol):
    return [e["kind"] for e in out.per_symbol[symbol].events]


def test_combined_loss_liquidates_the_account_though_neither_symbol_alone_would():
    # BTC 0.1 long from 99,000 and ETH 10 long from 990 (rung 1, 1 % under a centre of 100,000 / 1,000),
    # both in a 2,500 USDT wallet; then both fall 15 %: each loses 1,485, together more than the wallet.
    btc = make_market(
        [(100000.0,) * 4, (100000.0, 100000.0, 98900.0, 99000.0), (99000.0, 99000.0, 84150.0, 84150.0)],
        symbol=BTC,
    )
    eth = make_market(
        [(1000.0,) * 4, (1000.0, 1000.0, 989.0, 990.0), (990.0, 990.0, 841.5, 841.5)], symbol=ETH
    )
    s_btc = strategy(grid__base_qty=0.1, backtest__initial_balance=2500.0, **FAR)
    s_eth = strategy(grid__base_qty=10.0, backtest__initial_balance=2500.0, **FAR)
    v = ven()

    # Alone, each symbol survives the fall: 2,500 - 1.98 - 1,485 is far above 0.4 % of 8,415.
    for market, strat in ((btc, s_btc), (eth, s_eth)):
        alone = simulate(market, strat, v)
        assert all(f["kind"] != LIQUIDATION for f in alone.fills)
        assert alone.summary["final_equity"] == pytest.approx(2500.0 - 1.98 - 1485.0)

    out = run_reference_basket({BTC: btc, ETH: eth}, {BTC: s_btc, ETH: s_eth}, v)
    fb, fe = out.per_symbol[BTC].fills, out.per_symbol[ETH].fills
    assert [(f["kind"], f["price"], f["qty"]) for f in fb[:1]] == [(ENTRY, 99000.0, 0.1)]
    assert [(f["kind"], f["price"], f["qty"]) for f in fe[:1]] == [(ENTRY, 990.0, 10.0)]

    # Bar 2: BTC steps first. Its path sees ETH at its adverse extreme, the low 841.5:
    # others' unrealized 10 * (841.5 - 990) = -1,485, others' MM 0.004 * 8,415 = 33.66.
    wallet = 2500.0 - 2 * 1.98
    x_unreal, x_mm = -1485.0, MMR * 8415.0
    # Cross liquidation price with the margin wallet WB - TMM1 + UPNL1 (tier 1 at BTC's low):
    lp = (wallet + x_unreal - x_mm - 0.1 * 99000.0) / (0.1 * MMR - 0.1)
    assert 84150.0 < lp < 99000.0  # crossed on the way down, before the low
    liq_b = fb[-1]
    assert (liq_b["kind"], liq_b["side"], liq_b["qty"]) == (LIQUIDATION, LONG, 0.1)
    assert liq_b["price"] == pytest.approx(lp, rel=1e-12)
    assert liq_b["fee"] == pytest.approx(MMR * 0.1 * lp, rel=1e-12)  # its maintenance margin
    assert liq_b["realized_pnl"] == pytest.approx(0.1 * (lp - 99000.0), rel=1e-12)
    # ETH closes at the adverse extreme its view used, charged its maintenance margin there.
    liq_e = fe[-1]
    assert (liq_e["kind"], liq_e["side"], liq_e["price"], liq_e["qty"]) == (LIQUIDATION, LONG, 841.5, 10.0)
    assert liq_e["fee"] == pytest.approx(MMR * 8415.0, rel=1e-9)
    assert liq_e["realized_pnl"] == pytest.approx(-1485.0, rel=1e-12)
    assert liq_e["ts"] == liq_b["ts"] == T0 + 2 * HOUR
    # At LP the account equity equals its maintenance margin: the charges take it all, wallet 0.
    assert out.summary["wallet_balance"] == 0.0
    assert out.account_equity[-1]["equity"] == 0.0
    assert 12 in kinds(out, BTC) and 12 in kinds(out, ETH)  # LIQUIDATION event on both symbols
    assert len(out.account_equity) == 3  # the run stops at bar 2


def test_profit_on_one_symbol_keeps_the_other_alive():
    # BTC 0.1 long from 99,000 falls to 50,000: alone in a 4,000 wallet it is liquidated (LP ~59,257).
    # ETH (grid step 10 %) sold 20 at 1,100 and trades at 920 from then on: +3,600 unrealized, which
    # carries BTC's loss in the basket.
    btc = make_market(
        [
            (100000.0,) * 4,
            (100000.0, 100000.0, 98900.0, 99000.0),
            (99000.0,) * 4,
            (99000.0, 99000.0, 50000.0, 50000.0),
        ],
        symbol=BTC,
    )
    eth = make_market(
        [(1000.0,) * 4, (1000.0, 1101.0, 1000.0, 1100.0), (1100.0, 1100.0, 920.0, 920.0), (920.0,) * 4],
        symbol=ETH,
    )
    s_btc = strategy(grid__base_qty=0.1, backtest__initial_balance=4000.0, **FAR)
    s_eth = strategy(
        grid__base_qty=20.0,
        grid__grid_step_bps=1000.0,
        exit__tp_steps=3,
        exit__sl_steps=3,
        backtest__initial_balance=4000.0,
        risk_management__enable_drawdown_protection=False,
    )
    v = ven()

    alone = simulate(btc, s_btc, v)
    lp_alone = (4000.0 - 1.98 - 0.1 * 99000.0) / (0.1 * MMR - 0.1)
    assert [f["kind"] for f in alone.fills] == [ENTRY, LIQUIDATION]
    assert alone.fills[-1]["price"] == pytest.approx(lp_alone, rel=1e-12)

    out = run_reference_basket({BTC: btc, ETH: eth}, {BTC: s_btc, ETH: s_eth}, v)
    assert [(f["kind"], f["side"], f["price"]) for f in out.per_symbol[ETH].fills] == [(ENTRY, SHORT, 1100.0)]
    assert [(f["kind"], f["side"], f["price"]) for f in out.per_symbol[BTC].fills] == [(ENTRY, LONG, 99000.0)]
    assert 12 not in kinds(out, BTC) + kinds(out, ETH)
    wallet = 4000.0 - MAKER * 9900.0 - MAKER * 22000.0
    equity = wallet + 0.1 * (50000.0 - 99000.0) + 20 * (1100.0 - 920.0)
    last = out.account_equity[-1]
    assert last["wallet_balance"] == pytest.approx(wallet, rel=1e-12)
    assert last["unrealized_pnl"] == pytest.approx(-4900.0 + 3600.0, rel=1e-12)
    assert last["equity"] == pytest.approx(equity, rel=1e-12)
    # Account margin ratio: both symbols' maintenance margin over the account equity.
    assert last["margin_ratio"] == pytest.approx(MMR * (5000.0 + 18400.0) / equity, rel=1e-12)
    # BTC's own rows see the account: at its last close, equity = wallet + both unrealized PnLs.
    assert out.per_symbol[BTC].equity[-1]["equity"] == pytest.approx(equity, rel=1e-12)


def test_one_symbol_basket_is_the_single_run():
    # A basket of one symbol is the single-symbol reference, row for row.
    bars = [(100.0,) * 4, (100.0, 100.5, 98.5, 99.0), (99.0, 101.2, 98.9, 101.0), (101.0, 101.0, 97.0, 97.5)]
    funding = [(T0 - 8 * HOUR, 0.0001, math.nan), (T0 + 2 * HOUR, 0.001, 99.5)]
    m = make_market(bars * 6, symbol=BTC, funding=funding)
    s = strategy(grid__base_qty=1.0, grid__grid_levels_long=3, grid__grid_levels_short=3)
    v = ven()
    single = simulate(m, s, v)
    basket = run_reference_basket({BTC: m}, {BTC: s}, v).per_symbol[BTC]
    assert len(single.fills) > 4 and single.funding
    for name in ("fills", "funding", "events", "equity"):
        assert getattr(basket, name) == getattr(single, name), name


def test_each_symbol_trades_on_its_own_rules_and_time():
    # XRP at about 0.6 (tick 0.0001, lot 0.1) starts two bars after BTC (tick 0.1, lot 0.001): its rungs
    # are priced and sized on its own rules, and it reports the bars it has no data for.
    btc = make_market(flat(100000.0, 6), symbol=BTC)
    xrp_bars = [(0.6,) * 4, (0.6, 0.6, 0.59, 0.595), (0.595,) * 4, (0.595,) * 4]
    xrp = make_market(xrp_bars, symbol=XRP, start=T0 + 2 * HOUR)
    s_btc = strategy(grid__base_qty=0.001, backtest__initial_balance=10000.0)
    s_xrp = strategy(grid__base_notional=20.0, grid__grid_step_bps=77.0, backtest__initial_balance=10000.0)
    out = run_reference_basket({BTC: btc, XRP: xrp}, {BTC: s_btc, XRP: s_xrp}, ven())
    # XRP rows on the basket's clock: NaN input before its first bar (event INPUT_MISSING).
    ev = out.per_symbol[XRP].events
    assert [(e["ts"], e["kind"]) for e in ev[:2]] == [(T0, INPUT_MISSING), (T0 + HOUR, INPUT_MISSING)]
    assert len(out.per_symbol[XRP].equity) == len(out.per_symbol[BTC].equity) == 6
    # Its long rung 1: floor to XRP's tick of 0.6 * (1 - 0.0077) = 0.59538 -> 0.5953; qty 20 / 0.6 =
    # 33.33 floored to XRP's lot 0.1 -> 33.3 (BTC's rules would give 0.5 and 33.333).
    (fill,) = [f for f in out.per_symbol[XRP].fills if f["kind"] == ENTRY]
    assert fill["price"] == pytest.approx(0.5953, abs=1e-12)
    assert fill["qty"] == pytest.approx(33.3, abs=1e-12)
    assert fill["ts"] == T0 + 3 * HOUR


def test_errors_on_two_symbols_trip_the_one_account_breaker():
    # 1m bars. At bar 1 both symbols open below their long rung (BTC 99,000 / ETH 990): each maker-only
    # entry would cross, one post-only rejection each. With max_errors_per_minute = 2 neither symbol
    # alone trips the breaker; the account's two errors in one window do (on ETH, which steps second),
    # cancelling both symbols' entries until the cooldown (300 s from bar 1's open) ends at bar 5's close.
    minute = 60_000
    btc = make_market([(100000.0,) * 4] + [(98900.0,) * 4] * 7, timeframe="1m", symbol=BTC)
    eth = make_market([(1000.0,) * 4] + [(989.0,) * 4] * 7, timeframe="1m", symbol=ETH)
    s = strategy(
        grid__base_qty=0.01,
        risk_management__max_errors_per_minute=2,
        risk_management__circuit_breaker_window_seconds=60,
        risk_management__circuit_breaker_cooldown_seconds=300,
        backtest__initial_balance=10000.0,
    )
    s_eth = strategy(
        grid__base_qty=0.1,
        risk_management__max_errors_per_minute=2,
        risk_management__circuit_breaker_window_seconds=60,
        risk_management__circuit_breaker_cooldown_seconds=300,
        backtest__initial_balance=10000.0,
    )
    v = ven()
    for market, strat in ((btc, s), (eth, s_eth)):
        alone = simulate(market, strat, v)
        assert CB_TRIP not in [e["kind"] for e in alone.events]  # no breaker trip alone

    out = run_reference_basket({BTC: btc, ETH: eth}, {BTC: s, ETH: s_eth}, v)
    ev = {sym: [(e["ts"], e["kind"]) for e in out.per_symbol[sym].events] for sym in (BTC, ETH)}
    t1 = T0 + minute
    assert ev[ETH] == [(t1, POST_ONLY_REJECT), (t1, CB_TRIP)]
    # Errors at the open enter the window at the bar's ts (t1), so the breaker holds until t1 + 300 s,
    # the close of bar 5 (ts t1 + 240 s): BTC steps first and records the reset.
    assert ev[BTC] == [(t1, POST_ONLY_REJECT), (T0 + 5 * minute, CB_RESET)]
    states = {sym: [r["state"] for r in out.per_symbol[sym].equity] for sym in (BTC, ETH)}
    assert states[ETH][1:6] == [2, 2, 2, 2, 0]  # COOLDOWN from the trip to the reset
    assert states[BTC][2:6] == [2, 2, 2, 0]  # BTC's row of bar 1 was written before ETH tripped
    assert [r["state"] for r in out.account_equity][:6] == [0, 2, 2, 2, 2, 0]
