"""Per-symbol exchange rules: every run rounds with its own symbol's tick and lot, never another's.

Numbers are derived by hand in the comments. Base: ``market_builders`` isolating settings (1 rung a side,
100 bps steps, TP 1 step); ISOLATED_VENUE changes only BTC's rules, so XRP keeps the snapshot's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gridctl.configs import loader
from gridctl.configs.crosscheck import pair_problems
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.engine.enums import FillKind
from gridctl.engine.params import P_MIN_NOTIONAL, P_TICK, build_params
from gridctl.engine.run import RunOutput, run_single

from effects import effect
from market_builders import legacy_venue, make_market, strategy, venue

XRP = "XRP/USDT:USDT"
BTC = "BTC/USDT:USDT"
XRP_FLAT = (1.1111,) * 4
XRP_DIP = (1.1111, 1.1111, 1.09, 1.105)  # trades through long rung 1 (1.0999) only
BTC_FLAT = (60000.0,) * 4
BTC_DIP = (60000.0, 60000.0, 59000.0, 59800.0)  # trades through long rung 1 (59400) only


def entries(out: RunOutput) -> list[tuple[int, float, float]]:
    """(level, price, qty) of each entry fill."""
    f = out.fills[out.fills["kind"] == FillKind.ENTRY]
    return [(int(r["level"]), round(float(r["price"]), 8), round(float(r["qty"]), 9)) for r in f]


def xrp_strategy(**changes: object):
    return strategy(strategy__instrument_id="XRPUSDT-PERP.BINANCE", grid__base_notional=100.0, **changes)


@effect("grid.base_notional", "symbol_rules")
def test_one_quote_sized_strategy_uses_xrp_rules_on_xrp_and_btc_rules_on_btc() -> None:
    # XRP (tick 0.0001, lot 0.1): centre 1.1111; long rung 1 = floor_tick(1.1111 * 0.99 = 1.099989) = 1.0999;
    # qty = floor_step(100 / 1.1111 = 90.0009, 0.1) = 90.0. With BTC's 0.1 tick the rung would be 1.0 (9 %).
    xrp = run_single(make_market([XRP_FLAT, XRP_DIP], symbol=XRP), xrp_strategy(), venue())
    assert entries(xrp) == [(1, 1.0999, 90.0)]
    assert xrp.params.vector[P_TICK] == 0.0001
    # BTC (tick 0.1, lot 0.001, test min notional 5): long rung 1 = 60000 * 0.99 = 59400.0;
    # qty = floor_step(100 / 60000 = 0.0016667, 0.001) = 0.001 (59.4 USDT).
    btc_s = strategy(grid__base_notional=100.0)
    btc = run_single(make_market([BTC_FLAT, BTC_DIP]), btc_s, venue())
    assert entries(btc) == [(1, 59400.0, 0.001)]
    # BTC's real min notional (100 USDT, the snapshot's) refuses that 59.4 USDT rung and the 60.6 USDT
    # short rung (60600 x 0.001) at both closes: 4 skips; XRP's 5 USDT minimum refuses neither.
    real = run_single(make_market([BTC_FLAT, BTC_DIP]), btc_s, venue(symbol_rules__min_notional=100.0))
    assert entries(real) == [] and real.summary["skipped_precision"] == 4
    # Sized in base units the same strategy buys 0.01 BTC whatever the price.
    base = run_single(make_market([BTC_FLAT, BTC_DIP]), strategy(), venue())
    assert entries(base) == [(1, 59400.0, 0.01)]


def test_changing_btc_rules_never_touches_an_xrp_run() -> None:
    coarse = venue(symbol_rules__tick_size=0.1, symbol_rules__step_size=1.0, symbol_rules__min_qty=1.0)
    out = run_single(make_market([XRP_FLAT, XRP_DIP], symbol=XRP), xrp_strategy(), coarse)
    assert entries(out) == [(1, 1.0999, 90.0)]


@effect("symbol_rules_file")
def test_the_rules_file_named_by_the_venue_supplies_the_symbols_rules(tmp_path: Path) -> None:
    shipped = loader.SHIPPED_DIRS["venue"]
    snap = yaml.safe_load((shipped / "symbols" / "binance_usdm.yaml").read_text())
    snap["symbols"][XRP]["tick_size"] = 0.001
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(snap))
    tree = yaml.safe_load((shipped / "binance_futures.yaml").read_text())
    tree["symbol_rules_file"] = "rules.yaml"
    (tmp_path / "venue.yaml").write_text(yaml.safe_dump(tree))
    ven = load_venue(tmp_path / "venue.yaml", ["risk.max_order_size_usdt=10000000"])
    out = run_single(make_market([XRP_FLAT, XRP_DIP], symbol=XRP), xrp_strategy(), ven)
    # tick 0.001: floor_tick(1.099989, 0.001) = 1.099 (the shipped file's 0.0001 gives 1.0999).
    assert entries(out) == [(1, 1.099, 90.0)]
    assert str(tmp_path / "rules.yaml") in out.params.meta["rules_source"]


@effect("precision.tick_size", "precision.step_size")
def test_a_legacy_one_symbol_precision_block_sets_tick_and_step() -> None:
    bars = [(10000.0,) * 4, (10000.0, 10000.0, 9850.0, 9950.0)]  # long rung 1 at 9900
    # tick 7: floor(9900 / 7) * 7 = 1414 * 7 = 9898; step 0.005: 0.0155 -> 0.015; step 0.01 -> 0.01.
    s = strategy(grid__base_qty=0.0155)
    assert entries(run_single(make_market(bars), s, legacy_venue(tick_size=7.0))) == [(1, 9898.0, 0.015)]
    assert entries(run_single(make_market(bars), s, legacy_venue(step_size=0.01))) == [(1, 9900.0, 0.01)]


def test_a_symbol_without_rules_is_an_error_naming_it_and_the_source() -> None:
    ven = load_venue("binance_futures", ["symbols=[ADAUSDT-PERP]"])
    market = make_market([(0.5,) * 4], symbol="ADA/USDT:USDT")
    s = strategy(strategy__instrument_id="ADAUSDT-PERP.BINANCE")
    with pytest.raises(GridctlError, match=r"no exchange rules for 'ADA/USDT:USDT' in .*binance_usdm.yaml"):
        build_params(s, ven, market)
    # The legacy block of a two-symbol venue is nobody's rules.
    with pytest.raises(GridctlError, match=r"legacy precision block is one rule set"):
        legacy_venue().model_copy(update={"symbols": ["BTCUSDT-PERP", "XRPUSDT-PERP"]}).rules_for(BTC)


def test_each_shipped_symbol_has_its_own_tick_lot_and_min_notional() -> None:
    ven = load_venue("binance_futures")
    got = {
        sym: (r.tick_size, r.step_size, r.min_notional)
        for sym in ("BTC", "ETH", "SOL", "XRP", "BNB", "DOGE")
        for r in [ven.rules_for(f"{sym}/USDT:USDT")]
    }
    assert got == {
        "BTC": (0.1, 0.001, 100.0),
        "ETH": (0.01, 0.001, 20.0),
        "SOL": (0.01, 0.01, 5.0),  # tick 0.01 since 2024-10-14 (test_shipped_filters_match_real_data)
        "XRP": (0.0001, 0.1, 5.0),
        "BNB": (0.01, 0.01, 5.0),
        "DOGE": (0.00001, 1.0, 5.0),
    }
    p = build_params(load_strategy("default"), ven, make_market([(60000.0,) * 4]))
    assert p.vector[P_MIN_NOTIONAL] == 100.0


def test_cross_check_counts_stops_and_orders_against_the_symbols_limits() -> None:
    ven = load_venue("binance_futures")
    # default: 5 + 5 rungs = 10 stops, exactly BTC's MAX_NUM_ALGO_ORDERS.
    assert pair_problems(load_strategy("default"), ven) == []
    six = load_strategy("default", ["grid.grid_levels_long=6"])
    (problem,) = pair_problems(six, ven)
    assert "= 11: a lot on every rung needs 11 stop orders but BTC/USDT:USDT allows 10" in problem
    # A symbol allowing 12 algo orders takes the 6 + 6 ladder; 8 open orders in all are too few.
    roomy = load_venue("binance_futures", ["symbol_rules.BTC/USDT:USDT.max_num_algo_orders=12"])
    assert (
        pair_problems(
            load_strategy("default", ["grid.grid_levels_long=6", "grid.grid_levels_short=6"]), roomy
        )
        == []
    )
    tight = load_venue("binance_futures", ["symbol_rules.BTC/USDT:USDT.max_num_orders=8"])
    (problem,) = pair_problems(load_strategy("default"), tight)
    assert "needs 10 open orders but BTC/USDT:USDT allows 8 (max_num_orders, MAX_NUM_ORDERS)" in problem
    # The cross-check names the symbol it checked: XRP's minimum notional is 5, BTC's 100.
    small = load_strategy("default", ["grid.base_notional=50"])
    assert pair_problems(small, ven, XRP) == []
    (problem,) = pair_problems(small, ven)
    assert "below BTC/USDT:USDT's minimum order notional 100" in problem


@effect("symbol_rules")
def test_entries_beyond_the_symbols_algo_order_limit_are_not_sent() -> None:
    # 3 + 3 rungs around 10,000 (9900/9800/9700 and 10100/10200/10300), walked nearest first: long 1,
    # short 1, long 2, short 2 fill the 4 algo orders BTC is given here; long 3 and short 3 are not sent
    # (2 rung-skips at each of the 2 closes, as precision skips are counted: 4).
    s = strategy(grid__grid_levels_long=3, grid__grid_levels_short=3)
    bars = [(10000.0,) * 4, (10000.0,) * 4]
    capped = run_single(make_market(bars), s, venue(symbol_rules__max_num_algo_orders=4))
    assert capped.summary["orders_submitted"] == 4 and capped.summary["skipped_order_limit"] == 4
    free = run_single(make_market(bars), s, venue())
    assert free.summary["orders_submitted"] == 6 and free.summary["skipped_order_limit"] == 0
    # MAX_NUM_ORDERS bounds the same rungs (an entry or a lot's take-profit each).
    orders = run_single(make_market(bars), s, venue(symbol_rules__max_num_orders=5))
    assert orders.summary["orders_submitted"] == 5 and orders.summary["skipped_order_limit"] == 2
    # A lot keeps its rung's orders (TP and stop): after long 1 fills, the freed entry slot is the lot's.
    dip = [(10000.0,) * 4, (10000.0, 10000.0, 9850.0, 9950.0)]
    held = run_single(make_market(dip), s, venue(symbol_rules__max_num_algo_orders=4))
    assert entries(held) == [(1, 9900.0, 0.01)] and held.summary["orders_submitted"] == 4


@effect("symbol_rules")
def test_a_flatten_above_the_market_lot_max_goes_out_as_several_market_orders() -> None:
    # Long 0.01 filled at 9900 (1,000 USDT balance); the close at 8800 loses 0.01 * 1100 = 11 USDT plus
    # the 0.0198 entry fee: a 1.1 % drawdown >= 1 % halts the run and flattens the long at 8800.
    s = strategy(backtest__initial_balance=1000.0, risk_management__max_drawdown_pct=1.0, exit__sl_steps=50)
    bars = [(10000.0,) * 4, (10000.0, 10000.0, 9850.0, 9950.0), (9950.0, 9950.0, 8800.0, 8800.0)]

    def flattens(out: RunOutput) -> list[tuple[float, float]]:
        f = out.fills[out.fills["kind"] == FillKind.FLATTEN]
        return [(round(float(r["price"]), 6), round(float(r["qty"]), 9)) for r in f]

    one = run_single(make_market(bars), s, venue())
    assert flattens(one) == [(8800.0, 0.01)]
    # MARKET_LOT_SIZE maxQty 0.004: 0.004 + 0.004 + 0.002, all at the same price, same total PnL.
    split = run_single(make_market(bars), s, venue(symbol_rules__market_max_qty=0.004))
    assert flattens(split) == [(8800.0, 0.004), (8800.0, 0.004), (8800.0, 0.002)]
    assert split.summary["realized_pnl"] == pytest.approx(one.summary["realized_pnl"]) == pytest.approx(-11.0)
    assert split.summary["final_equity"] == pytest.approx(one.summary["final_equity"])


def _exchange_market(symbol: str, tick: str, algo: int = 10, notional: str = "5") -> dict:
    """A ccxt market entry with Binance USD-M filters (as exchangeInfo publishes XRPUSDT's)."""
    return {
        "symbol": symbol,
        "info": {
            "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": tick},
                {"filterType": "LOT_SIZE", "stepSize": "0.1", "minQty": "0.1", "maxQty": "10000000"},
                {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.1", "minQty": "0.1", "maxQty": "2000000"},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": algo},
                {"filterType": "MIN_NOTIONAL", "notional": notional},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500"},
            ]
        },
    }


def test_readiness_compares_every_rule_of_the_symbol_with_the_exchange() -> None:
    from gridctl.live_bridge.readiness import filters_match

    ven = load_venue("binance_futures")
    assert filters_match(ven, _exchange_market(XRP, "0.0001")).startswith("XRP/USDT:USDT: tick_size 0.0001")
    with pytest.raises(GridctlError) as err:
        filters_match(ven, _exchange_market(XRP, "0.001", algo=5, notional="10"))
    msg = str(err.value)
    assert "binance_usdm.yaml (snapshot 2025-06-01) [XRP/USDT:USDT]: XRP/USDT:USDT rules differ" in msg
    assert "tick_size is 0.0001 but the exchange says 0.001" in msg
    assert "max_num_algo_orders is 10 but the exchange says 5" in msg
    assert "min_notional 5 is below the exchange's 10" in msg
    # BTC's rules are not XRP's: the same market checked as BTC's would differ everywhere.
    with pytest.raises(GridctlError, match=r"BTC/USDT:USDT rules differ.*tick_size is 0.1"):
        filters_match(ven, _exchange_market(BTC, "0.0001"))
