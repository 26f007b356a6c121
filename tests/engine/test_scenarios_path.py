"""Hand-derived scenarios for issue 7 "Honest fills": the intrabar path rule, detail bars, the
liquidation price as a path trigger with its clearance charge, and the path bracket.

Common numbers (market_builders.ISOLATED): centre C = 10000 (close of bar 0), s = 100 bps, tick 0.1,
maker fee 0.0002, taker 0.0005, no slippage. Long rung 1 = 9900 (TP ceil_tick(9900*1.01) = 9999.0),
short rung 1 = 10100 (TP floor_tick(10100*0.99) = 9999.0). Every scenario runs on the reference and the
kernel unless it tests a driver.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.engine.batch import run_batch
from gridctl.engine.enums import INTRABAR_PATH_NAMES, EventKind, FillKind
from gridctl.engine.fills import path_points_nb
from gridctl.engine.records import FILL_DTYPE
from gridctl.engine.run import detail_arrays, run_single
from gridctl.research.stats import path_bracket, same_bar_round_trips

from effects import effect
from market_builders import HOUR, IMPLS, T0, bar_ts, flat, make_market, run, strategy, venue

APPROX = {"rel": 1e-12, "abs": 1e-9}
MIN = 60_000
# Bar 1 trades 150 either side of its open: which extreme came first decides which rung fills first.
WIDE = (10000.0, 10150.0, 9850.0, 10000.0)


def side_kinds(led) -> list[tuple[int, int, float]]:
    return [(f["side"], f["kind"], f["price"]) for f in led.fills]


@effect("backtest.intrabar_path")
@pytest.mark.parametrize("impl", IMPLS)
def test_path_rule_orders_the_extremes(impl: str) -> None:
    market = make_market([*flat(10000.0, 1), WIDE, *flat(10000.0, 1)])
    got = {
        rule: side_kinds(run(impl, market, strategy(backtest__intrabar_path=rule), venue()))
        for rule in ("nearer_first", "farther_first", "high_first", "low_first")
    }
    # high first: 10000 -> 10150 (short entry 10100) -> 9850 (short TP 9999, long entry 9900) -> 10000
    # (long TP 9999 < 10000).
    assert got["high_first"] == [(1, 0, 10100.0), (1, 1, 9999.0), (0, 0, 9900.0), (0, 1, 9999.0)]
    # low first: 10000 -> 9850 (long entry) -> 10150 (long TP 9999, short entry 10100) -> 10000: the
    # short TP at 9999 is below the close, so the short lot stays open.
    assert got["low_first"] == [(0, 0, 9900.0), (0, 1, 9999.0), (1, 0, 10100.0)]
    # nearer first: high - open = 150 <= open - low = 150, so the high comes first.
    assert got["nearer_first"] == got["high_first"]
    # farther first: the low is the farther extreme at equal distances, so the low comes first.
    assert got["farther_first"] == got["low_first"]


def _detail(coarse_bars: list[tuple], minute_bars: dict[int, list[tuple]]):
    """1m bars for each 1h bar: the given ones for bar k, else 60 flat bars at the bar's open."""
    bars, ts = [], []
    for k, (o, _h, _lo, _c) in enumerate(coarse_bars):
        inner = minute_bars.get(k, [(o, o, o, o)] * 60)
        assert len(inner) == 60
        for j, bar in enumerate(inner):
            bars.append(bar)
            ts.append(T0 + k * HOUR + j * MIN)
    return make_market(bars, timeframe="1m", ts=ts)


# Inside bar 1 the minutes go down first (10000 -> 9850), then up to 10150, then back to 10000. Each
# minute moves one way in small steps, so no minute's own path rule can reorder its triggers: the long
# entry at 9900 fills in minute 1, its TP at 9999 in minute 5, the short entry at 10100 in minute 7
# (whose TP at 9999 the later minutes never reach).
DOWN_FIRST = [
    (10000.0, 10000.0, 9950.0, 9950.0),
    (9950.0, 9950.0, 9890.0, 9890.0),
    (9890.0, 9890.0, 9850.0, 9850.0),
    (9850.0, 9900.0, 9850.0, 9900.0),
    (9900.0, 9950.0, 9900.0, 9950.0),
    (9950.0, 10010.0, 9950.0, 10010.0),
    (10010.0, 10060.0, 10010.0, 10060.0),
    (10060.0, 10110.0, 10060.0, 10110.0),
    (10110.0, 10150.0, 10110.0, 10150.0),
    (10150.0, 10150.0, 10100.0, 10100.0),
    (10100.0, 10100.0, 10050.0, 10050.0),
    (10050.0, 10050.0, 10000.0, 10000.0),
] + [(10000.0, 10000.0, 10000.0, 10000.0)] * 48


@effect("backtest.detail_timeframe")
@pytest.mark.parametrize("impl", IMPLS)
def test_detail_bars_decide_the_order_and_stamp_the_fills(impl: str) -> None:
    coarse = [*flat(10000.0, 1), WIDE, *flat(10000.0, 1)]
    market = make_market(coarse)
    fine = _detail(coarse, {1: DOWN_FIRST})
    plain = run(impl, market, strategy(backtest__intrabar_path="high_first"), venue())
    detailed = run(
        impl,
        market,
        strategy(backtest__intrabar_path="high_first", backtest__detail_timeframe="1m"),
        venue(),
        fine,
    )
    assert side_kinds(plain)[0] == (1, 0, 10100.0)  # the coarse path goes up first
    # The minutes go down first whatever the rule: long entry, long TP, short entry.
    assert side_kinds(detailed) == [(0, 0, 9900.0), (0, 1, 9999.0), (1, 0, 10100.0)]
    assert [f["ts"] for f in detailed.fills] == [bar_ts(1) + MIN, bar_ts(1) + 5 * MIN, bar_ts(1) + 7 * MIN]
    # Equity rows stay on the run's bars.
    assert [e["ts"] for e in detailed.equity] == [bar_ts(k) for k in range(3)]


@pytest.mark.parametrize("impl", IMPLS)
def test_a_missing_minute_falls_back_to_the_coarse_path_for_that_bar_only(impl: str) -> None:
    coarse = [*flat(10000.0, 1), WIDE, *flat(10000.0, 1), WIDE, *flat(10000.0, 1)]
    market = make_market(coarse)
    full = _detail(coarse, {1: DOWN_FIRST, 3: DOWN_FIRST})
    keep = np.ones(len(full.ts), dtype=bool)
    keep[60 + 30] = False  # minute 30 of bar 1 is missing
    fine = make_market(
        list(zip(full.open[keep], full.high[keep], full.low[keep], full.close[keep], strict=True)),
        timeframe="1m",
        ts=full.ts[keep].tolist(),
    )
    s = strategy(backtest__intrabar_path="high_first", backtest__detail_timeframe="1m")
    led = run(impl, market, s, venue(), fine)
    by_bar = {}
    for f in led.fills:
        by_bar.setdefault((f["ts"] - T0) // HOUR, []).append((f["side"], f["kind"]))
    # Bar 1 walks its own OHLC high first: the short entry first, stamped with the bar's ts.
    assert by_bar[1][0] == (1, 0)
    assert min(f["ts"] for f in led.fills if (f["ts"] - T0) // HOUR == 1) == bar_ts(1)
    # Bar 3 has all its minutes: the long entry comes first, at minute 0 of bar 3.
    assert by_bar[3][0] == (0, 0)
    if impl == "kernel":
        det = detail_arrays(market, fine)
        assert det.fallback_bars == 1 and det.detailed_bars == 4
        assert det.warnings == (
            "detail 1m: 1 of 5 1h bars lack complete 1m bars (missing or not finite) and walk their own "
            "OHLC: 2024-01-01T01:00Z",
        )
        assert run_single(market, s, venue(), detail=fine).meta["detail"]["fallback_bars"] == 1


def test_detail_timeframe_must_divide_and_match_the_config() -> None:
    coarse = [*flat(10000.0, 3)]
    market = make_market(coarse)
    fine = _detail(coarse, {})
    with pytest.raises(GridctlError, match="timeframe 1h must be shorter than the run's 1m and divide it"):
        detail_arrays(fine, market)
    with pytest.raises(GridctlError, match=r"backtest\.detail_timeframe is not set"):
        run_single(market, strategy(), venue(), detail=fine)
    with pytest.raises(GridctlError, match=r"backtest\.detail_timeframe is '1m'"):
        run_single(market, strategy(backtest__detail_timeframe="1m"), venue())
    with pytest.raises(GridctlError, match=r"parameter set 0: backtest\.detail_timeframe is '1m'"):
        run_batch(market, strategy(backtest__detail_timeframe="1m"), venue(), [{}])


# 1 BTC long at 9900 on a 1000 USDT account at leverage 20. Wallet after the maker fee (1.98): 998.02.
# Maintenance margin at x: 0.004*x (bracket 1). Liquidated when 998.02 + (x - 9900) <= 0.004 x, i.e.
# x <= LP = 8901.98/0.996 = 8937.7309...; sl_steps = 10 puts the lot's stop at floor_tick(9900*0.9) = 8910,
# below LP: walking down the price meets LP first.
LP = 8901.98 / 0.996
FLAT0 = (10000.0, 10000.0, 10000.0, 10000.0)
DIP = (10000.0, 10000.0, 9850.0, 9950.0)
CRASH = (9950.0, 9950.0, 8800.0, 8850.0)


def _liq_strategy(**extra: object):
    return strategy(
        **{
            "backtest.initial_balance": 1000.0,
            "grid.base_qty": 1.0,
            "exit.sl_steps": 10,
            "exit.tp_steps": 20,
            "position.max_position_size": 100.0,
            "position.max_leverage_used": 125.0,
            "risk_management.enable_drawdown_protection": False,
            **extra,
        }
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_liquidation_price_is_met_before_a_stop_beyond_it(impl: str) -> None:
    market = make_market([FLAT0, DIP, CRASH, FLAT0])
    led = run(impl, market, _liq_strategy(), venue(**{"trading.leverage": 20}))
    kinds = [(f["kind"], f["price"]) for f in led.fills]
    # The entry at 9900, then no stop fill at 8910: the account is liquidated at LP on the way down.
    assert [k for k, _ in kinds] == [FillKind.ENTRY, FillKind.LIQUIDATION]
    liq = led.fills[1]
    assert liq["price"] == pytest.approx(LP, **APPROX) and liq["ts"] == bar_ts(2) and liq["qty"] == 1.0
    assert liq["realized_pnl"] == pytest.approx(LP - 9900.0, **APPROX)
    # No trading fee: the remaining maintenance margin 0.004*LP = 35.7509 is lost, leaving nothing.
    assert liq["fee"] == pytest.approx(0.004 * LP, **APPROX)
    assert led.summary["final_equity"] == pytest.approx(0.0, abs=1e-9)
    assert len(led.equity) == 3 and led.equity[-1]["state"] == 4  # LIQUIDATED, the run stops
    assert next(e for e in led.events if e["kind"] == EventKind.LIQUIDATION)["price"] == pytest.approx(LP)


@effect("margin.liquidation_clearance_fee")
@pytest.mark.parametrize("impl", IMPLS)
def test_clearance_fee_replaces_the_lost_maintenance_margin(impl: str) -> None:
    market = make_market([FLAT0, DIP, CRASH, FLAT0])
    led = run(
        impl,
        market,
        _liq_strategy(),
        venue(**{"trading.leverage": 20, "margin.liquidation_clearance_fee": 0.001}),
    )
    liq = led.fills[1]
    # 0.001 * LP * 1 BTC = 8.9377 instead of the maintenance margin 35.7509: 26.8132 is left.
    assert liq["fee"] == pytest.approx(0.001 * LP, **APPROX)
    assert led.summary["final_equity"] == pytest.approx(0.003 * LP, rel=1e-9)
    assert led.summary["final_equity"] == pytest.approx(26.8132, abs=1e-4)
    # A fee larger than what is left takes only what is left.
    big = run(
        impl,
        market,
        _liq_strategy(),
        venue(**{"trading.leverage": 20, "margin.liquidation_clearance_fee": 0.1}),
    )
    assert big.fills[1]["fee"] == pytest.approx(0.004 * LP, **APPROX)
    assert big.summary["final_equity"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
def test_stop_above_the_liquidation_price_still_saves_the_account(impl: str) -> None:
    # sl_steps = 9: stop at floor_tick(9900*0.91) = 9009.0 > LP, so the stop fills (taker 0.0005).
    market = make_market([FLAT0, DIP, CRASH, FLAT0])
    led = run(impl, market, _liq_strategy(**{"exit.sl_steps": 9}), venue(**{"trading.leverage": 20}))
    assert [(f["kind"], f["price"]) for f in led.fills] == [(FillKind.ENTRY, 9900.0), (FillKind.SL, 9009.0)]
    assert led.summary["final_equity"] == pytest.approx(1000 - 1.98 - 891.0 - 9009.0 * 0.0005, rel=1e-12)


def test_path_bracket_and_same_bar_round_trips_on_a_wide_bar() -> None:
    coarse = [*flat(10000.0, 1), WIDE, *flat(10000.0, 1)]
    market = make_market(coarse)
    s, v = strategy(), venue()
    out = run_single(market, s, v)
    b = path_bracket(market, s, v, out.summary)
    # Initial 10000, qty 0.01, maker fee 0.0002 on every fill (no taker fills here).
    # high first: short 10100 -> 9999 (+1.01), long 9900 -> 9999 (+0.99), 4 fills on ~400 notional.
    fees_hi = 0.0002 * 0.01 * (10100 + 9999 + 9900 + 9999)
    assert b["high_first"]["n_fills"] == 4 and b["low_first"]["n_fills"] == 3
    assert b["high_first"]["total_return_pct"] == pytest.approx((2.0 - fees_hi) / 10000 * 100, rel=1e-9)
    # low first: long round trip +0.99, short open from 10100 marked at the close 10000: +1.00.
    fees_lo = 0.0002 * 0.01 * (9900 + 9999 + 10100)
    assert b["low_first"]["total_return_pct"] == pytest.approx((0.99 + 1.0 - fees_lo) / 10000 * 100, rel=1e-9)
    assert b["rule"] == "nearer_first" and b["configured"] == b["high_first"] == b["nearer_first"]
    # The bar's low is the farther extreme from its open: farther first walks it like low first.
    assert b["farther_first"] == b["low_first"]
    # low first keeps more (1.99 - 0.06 fees = 1.93) than high first (2.00 - 0.08 = 1.92).
    assert b["worst"]["total_return_pct"] == b["high_first"]["total_return_pct"]
    assert b["best"]["total_return_pct"] == b["low_first"]["total_return_pct"]
    # Both round trips of the high-first (= nearer-first) run opened and closed in bar 1.
    # Their PnL is the lots' own, after both fees of each: 1.01 + 0.99 - fees_hi = 1.920004.
    n, pnl = same_bar_round_trips(out.fills)
    assert n == 2 and pnl == pytest.approx(1.01 + 0.99 - fees_hi, rel=1e-9)
    # With 1m detail bars that leave no doubt, both rules agree.
    fine = _detail(coarse, {1: DOWN_FIRST})
    sd = strategy(backtest__detail_timeframe="1m")
    bd = path_bracket(market, sd, v, run_single(market, sd, v, detail=fine).summary, detail=fine)
    assert bd["high_first"] == bd["low_first"] == bd["configured"]


def test_same_bar_round_trips_match_lots_by_rung_and_ignore_later_exits() -> None:
    """A same-bar lot's PnL is its own (entry to exit, after both fees), not the exit fill's realized PnL.

    Long lot 1 opens at 100 and stays open, so the long side's average entry is 99 once lot 2 opens at
    98: lot 2's TP at 99 in the same bar realizes 1 * (99 - 99) = 0 in the ledger, but the round trip
    made 1 * (99 - 98) - 0.02 - 0.02 = +0.96. Short lot 2 (103 -> SL 105 in bar 4, fees 0 and 0.05)
    made -2.05. Total 0.96 - 2.05 = -1.09 (the ledger's realized of those exits: 0 - 2 = -2).
    """
    rows = [
        # ts, side, kind, level, price, qty, fee, liquidity, realized
        (1, 0, FillKind.ENTRY, 1, 100.0, 1.0, 0.02, 0, 0.0),  # long lot 1: open until the flatten
        (2, 0, FillKind.ENTRY, 2, 98.0, 1.0, 0.02, 0, 0.0),  # the long side's average entry is now 99
        (2, 0, FillKind.TP, 2, 99.0, 1.0, 0.02, 0, 0.0),  # same bar: counts, +0.96
        (2, 1, FillKind.ENTRY, 1, 102.0, 1.0, 0.0, 0, 0.0),
        (3, 1, FillKind.SL, 1, 104.0, 1.0, 0.0, 1, -2.0),  # next bar: does not
        (3, 0, FillKind.FLATTEN, 0, 97.0, 1.0, 0.0, 1, -2.0),  # ends the side's lots
        (3, 0, FillKind.SL, 1, 96.0, 1.0, 0.0, 1, -3.0),  # no lot open any more
        (4, 1, FillKind.ENTRY, 2, 103.0, 1.0, 0.0, 0, 0.0),
        (4, 1, FillKind.SL, 2, 105.0, 1.0, 0.05, 1, -2.0),  # same bar: counts, -2.05
    ]
    fills = np.array(rows, dtype=FILL_DTYPE)
    assert same_bar_round_trips(fills) == (2, pytest.approx(-1.09, abs=1e-12))
    assert same_bar_round_trips(np.zeros(0, FILL_DTYPE)) == (0, 0.0)
    assert math.isfinite(same_bar_round_trips(fills)[1])


@pytest.mark.parametrize(
    ("o", "h", "lo", "rule", "expected"),
    [
        # High nearer (101 - 100 = 1 <= 100 - 97 = 3): nearer first walks the high first, farther
        # first the low.
        (100.0, 101.0, 97.0, "nearer_first", (101.0, 97.0)),
        (100.0, 101.0, 97.0, "farther_first", (97.0, 101.0)),
        # Low nearer (104 - 100 = 4 > 100 - 99 = 1): the other way round.
        (100.0, 104.0, 99.0, "nearer_first", (99.0, 104.0)),
        (100.0, 104.0, 99.0, "farther_first", (104.0, 99.0)),
        # Equal distances count as high nearer.
        (100.0, 102.0, 98.0, "farther_first", (98.0, 102.0)),
        (100.0, 104.0, 99.0, "high_first", (104.0, 99.0)),
        (100.0, 101.0, 97.0, "low_first", (97.0, 101.0)),
    ],
)
def test_path_points_follow_the_rule(o, h, lo, rule, expected) -> None:
    assert path_points_nb(o, h, lo, INTRABAR_PATH_NAMES[rule]) == expected
