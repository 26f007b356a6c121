"""research.stats on hand-built ledgers: every number derived by hand, and none of them a constant."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.data.market import market_from_arrays
from gridctl.engine.enums import EventKind, FillKind, Liquidity, Reason, RiskState
from gridctl.engine.records import EQUITY_DTYPE, EVENT_DTYPE, FILL_DTYPE, FUNDING_DTYPE
from gridctl.research.stats import (
    compute_stats,
    daily_equity,
    daily_returns,
    max_drawdown_pct,
    sharpe,
    sortino,
)

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
H8 = 8 * 3_600_000
DAY = 86_400_000


@dataclass
class FakeRun:
    """The attributes research.stats reads from engine.run.RunOutput."""

    fills: np.ndarray
    funding: np.ndarray
    events: np.ndarray
    equity: np.ndarray
    summary: dict[str, float] = field(default_factory=dict)


def records(dtype: np.dtype, rows: list[tuple]) -> np.ndarray:
    return np.array(rows, dtype=dtype)


def market(n: int = 9, skip: int | None = None, start: int = T0, highs: dict[int, float] | None = None):
    """``n`` 8h bars from ``start`` (3 per UTC day) at price 100, optionally without bar ``skip`` (a gap);
    ``highs`` gives some bars a high above 100 (bar index -> high)."""
    ts = start + H8 * np.arange(n + (1 if skip is not None else 0), dtype=np.int64)
    if skip is not None:
        ts = np.delete(ts, skip)
    px = np.full(len(ts), 100.0)
    high = px.copy()
    for i, h in (highs or {}).items():
        high[i] = h
    low = px.copy()
    return market_from_arrays(
        "BTC/USDT:USDT", "8h", ts, px, high, low, px, px, np.array([start]), np.array([1e-4])
    )


# Run A's market: bar 3 (short 1 held at the close, equity 10300 = the peak) trades up to 1000; bar 4
# (no position) up to 999 (market data refuses moves beyond 10x), which moves no equity.
HIGHS_A = {3: 1000.0, 4: 999.0}


# Run A. Equity per 8h bar (3 bars per UTC day); day closes 10200, 9690, 10174.5.
EQ_A = [10000.0, 10100.0, 10200.0, 10300.0, 9500.0, 9690.0, 9900.0, 10000.0, 10174.5]
LONG_A = [0, 1, 1, 0, 0, 2, 0, 0, 0]  # with SHORT_A: 4 of 9 bars hold a position
SHORT_A = [0, 0, 0, 1, 0, 0, 0, 0, 0]
STATE_A = [0, 0, 1, 2, 0, 0, 3, 3, 0]  # reducing 1, cooldown 1, halted 2 bars


def run_a() -> FakeRun:
    eq = records(
        EQUITY_DTYPE,
        [(T0 + H8 * i, e, e, 0.0, LONG_A[i], SHORT_A[i], 0, STATE_A[i], 0.0) for i, e in enumerate(EQ_A)],
    )
    E, TP, SL, FL = FillKind.ENTRY, FillKind.TP, FillKind.SL, FillKind.FLATTEN
    M, T = Liquidity.MAKER, Liquidity.TAKER
    fills = records(
        FILL_DTYPE,
        [
            (T0, 0, E, 1, 100.0, 1.0, 0.1, M, 0.0),
            (T0 + H8, 0, TP, 1, 103.0, 1.0, 0.2, M, 3.0),
            (T0 + H8, 1, E, 1, 100.0, 1.0, 0.3, M, 0.0),
            (T0 + 2 * H8, 1, SL, 1, 102.0, 1.0, 0.4, T, -2.0),
            (T0 + 3 * H8, 0, E, 2, 99.0, 1.0, 0.5, T, 0.0),
            (T0 + 4 * H8, 0, FL, 0, 100.0, 1.0, 0.6, T, 1.0),
        ],
    )
    funding = records(
        FUNDING_DTYPE,
        [
            (T0 + H8, 0, 1e-4, 100.0, 0, 1.0, -1.5),
            (T0 + 2 * H8, 1, 1e-4, 100.0, 0, 1.0, 0.5),
            (T0 + 3 * H8, 0, 1e-4, 100.0, 1, 1.0, -0.25),
        ],
    )
    events = records(
        EVENT_DTYPE,
        [
            (T0 + H8, EventKind.ORDER_REJECTED, Reason.SIZE_PCT, 0, 1, 99.0, 1.0, 0.0),
            (T0 + H8, EventKind.ORDER_REJECTED, Reason.SIZE_PCT, 0, 2, 98.0, 1.0, 0.0),
            (T0 + 2 * H8, EventKind.POST_ONLY_REJECT, Reason.POST_ONLY, 1, 1, 101.0, 1.0, 0.0),
            (T0 + 2 * H8, EventKind.REDUCING_ON, Reason.LEVERAGE, -1, 0, 0.0, 0.0, 6.0),
            (T0 + 6 * H8, EventKind.DRAWDOWN_HALT, Reason.NONE, -1, 0, 0.0, 0.0, 21.0),
        ],
    )
    return FakeRun(fills, funding, events, eq, summary={"orders_deferred": 3.0, "skipped_precision": 2.0})


# Run B: a different world for the "no metric is a constant" test; 6 bars over 2 days, liquidated.
T1 = T0 + DAY


def run_b() -> FakeRun:
    eq_values = [10000.0, 9000.0, 8000.0, 7000.0, 8000.0, 6000.0]
    eq = records(
        EQUITY_DTYPE,
        [(T1 + H8 * i, e, e, 0.0, 1.0, 1.0, 0, RiskState.REDUCING, 0.0) for i, e in enumerate(eq_values)],
    )
    fills = records(
        FILL_DTYPE,
        [
            (T1, 0, FillKind.ENTRY, 1, 100.0, 1.0, 1.0, Liquidity.TAKER, 0.0),
            (T1 + H8, 0, FillKind.LIQUIDATION, 0, 50.0, 1.0, 2.0, Liquidity.TAKER, -50.0),
        ],
    )
    funding = records(FUNDING_DTYPE, [(T1 + H8, 1, -1e-4, float("nan"), 1, 1.0, -0.75)])
    events = records(EVENT_DTYPE, [(T1 + 5 * H8, EventKind.LIQUIDATION, Reason.NONE, -1, 0, 50.0, 1.0, 0.0)])
    return FakeRun(fills, funding, events, eq, summary={"orders_deferred": 0.0, "skipped_precision": 5.0})


@pytest.fixture(scope="module")
def stats_a() -> dict[str, Any]:
    venue = load_venue("binance_futures", ["fees.maker=0.0001", "fees.taker=0.0004"])
    return compute_stats(run_a(), market(highs=HIGHS_A), load_strategy("default"), venue)


def test_returns_and_risk_ratios_by_hand(stats_a: dict[str, Any]) -> None:
    s = stats_a
    # Total return: 10174.5 / 10000 - 1 = 1.745 %.
    assert s["total_return_pct"] == pytest.approx(1.745)
    assert s["final_equity"] == 10174.5
    # Daily returns against the previous day close, day 1 against the initial 10000:
    # 10200/10000-1 = 0.02, 9690/10200-1 = -0.05, 10174.5/9690-1 = 0.05.
    # mean = 0.02/3; deviations 0.04/3, -0.17/3, 0.13/3 -> sum of squares (0.0016+0.0289+0.0169)/9
    # = 0.0474/9; sample variance = that / 2 = 0.0237/9; Sharpe = mean / sqrt(var) * sqrt(365).
    assert s["sharpe"] == pytest.approx((0.02 / 3) / math.sqrt(0.0237 / 9) * math.sqrt(365))
    # Downside deviation: sqrt(0.05^2 / 3); Sortino = mean / that * sqrt(365).
    assert s["sortino"] == pytest.approx((0.02 / 3) / math.sqrt(0.0025 / 3) * math.sqrt(365))
    # Daily-close max drawdown: peak 10200 -> 9690 = 510/10200 = 5 %. Bar close: 10300 -> 9500 =
    # 800/10300. Intrabar: at bar 3's high 1000 the short 1 costs 900 more: 10300 -> 9400 = 900/10300.
    assert s["max_drawdown_daily_close_pct"] == pytest.approx(5.0)
    assert s["max_drawdown_bar_close_pct"] == pytest.approx(800 / 10300 * 100)
    assert s["max_drawdown_intrabar_pct"] == pytest.approx(900 / 10300 * 100)
    # CAGR over 9 bars * 8 h = 3 days: 1.01745 ** (365/3) - 1; Calmar = CAGR / the bar-close drawdown
    # (800/10300 %), the one Calmar the optimizer ranks by too (not the daily-close 5 %).
    cagr = (1.01745 ** (365 / 3) - 1) * 100
    assert s["cagr_pct"] == pytest.approx(cagr)
    assert s["calmar"] == pytest.approx(cagr / (800 / 10300 * 100))
    assert s["days"] == 3


def test_trade_and_funding_stats_by_hand(stats_a: dict[str, Any]) -> None:
    s = stats_a
    # Closed lots after both fees: long L1 100 -> TP 103: 3 - 0.1 - 0.2 = 2.7; short S1 100 -> SL 102:
    # -2 - 0.3 - 0.4 = -2.7; long L2 99 -> flatten 100: 1 - 0.5 - 0.6 = -0.1. Profit factor 2.7/2.8,
    # win rate 1/3 (gross of fees it would be (3+1)/2 = 2 and 2/3).
    assert s["profit_factor"] == pytest.approx(2.7 / 2.8)
    assert s["win_rate_pct"] == pytest.approx(100 / 3)
    assert s["n_lots_closed"] == 3
    assert s["realized_pnl"] == pytest.approx(2.0)
    assert (s["n_fills"], s["n_entries"], s["n_exits"]) == (6, 3, 3)
    assert s["exits_by_kind"] == {"flatten": 1, "sl": 1, "tp": 1}
    # Fees 0.1 + 0.2 + ... + 0.6 = 2.1; maker fills 3 of 6.
    assert s["fees_paid"] == pytest.approx(2.1)
    assert s["maker_share_pct"] == pytest.approx(50.0)
    # Funding: paid 1.5 + 0.25, received 0.5; two settlements priced from the mark series, one from the open.
    assert s["funding_paid"] == pytest.approx(1.75)
    assert s["funding_received"] == pytest.approx(0.5)
    assert s["assumptions"]["funding_mark_source"] == {"mark price series": 2, "trade open (mark unknown)": 1}
    # Bars: 4 of 9 with a position; halted 2/9, cooldown 1/9, reducing 1/9.
    assert s["exposure_pct"] == pytest.approx(400 / 9)
    assert s["halted_pct"] == pytest.approx(200 / 9)
    assert s["cooldown_pct"] == pytest.approx(100 / 9)
    assert s["reducing_pct"] == pytest.approx(100 / 9)


def test_events_rejections_and_run_facts(stats_a: dict[str, Any]) -> None:
    s = stats_a
    assert s["events"] == {"drawdown_halt": 1, "order_rejected": 2, "post_only_reject": 1, "reducing_on": 1}
    # Only order rejections count as rejections (REDUCING_ON carries a reason but rejects nothing).
    assert s["rejections"] == {"post_only": 1, "size_pct": 2}
    assert s["halted_at"] == "2024-01-03T00:00:00Z"  # T0 + 6 * 8 h
    assert s["liquidated"] is False and s["liquidated_at"] is None
    assert (s["orders_deferred"], s["skipped_precision"]) == (3, 2)
    assert s["data_start"] == "2024-01-01T00:00:00Z" and s["data_end"] == "2024-01-04T00:00:00Z"
    assert (s["bars"], s["gaps"], s["missing_bars"]) == (9, 0, 0)
    assert s["assumptions"]["fees_source"] == "venue config"
    assert (s["assumptions"]["maker_fee"], s["assumptions"]["taker_fee"]) == (0.0001, 0.0004)
    assert s["assumptions"]["gates_disabled"] == []


# Every stat the summary shows, and the two inputs in which it must differ.
VARYING = [
    "strategy", "venue", "data_start", "data_end", "bars", "gaps", "missing_bars", "days", "initial_balance",
    "final_equity", "total_return_pct", "cagr_pct", "max_drawdown_daily_close_pct",
    "max_drawdown_bar_close_pct", "max_drawdown_intrabar_pct", "n_lots_closed", "sharpe",
    "sortino", "calmar", "profit_factor", "win_rate_pct", "realized_pnl", "n_fills", "n_entries", "n_exits",
    "exits_by_kind", "fees_paid", "funding_paid", "funding_received", "funding_payments", "maker_share_pct",
    "exposure_pct", "halted_pct", "cooldown_pct", "reducing_pct", "liquidated", "liquidated_at", "halted_at",
    "events", "rejections", "orders_deferred", "skipped_precision",
]  # fmt: skip
VARYING_ASSUMPTIONS = [
    "fees_source", "maker_fee", "taker_fee", "funding_mark_source", "gates_disabled", "fill_on_touch",
    "slippage_bps", "data_warnings", "intrabar_path",
]  # fmt: skip


def test_no_stat_is_a_constant(stats_a: dict[str, Any], legacy_configs) -> None:
    strategy_b = load_strategy(
        "default",
        [
            "strategy.name=other",
            "backtest.initial_balance=9000",
            "backtest.slippage_bps=3",
            "backtest.fill_on_touch=true",
            "backtest.intrabar_path=low_first",
            "risk_management.enable_circuit_breaker=false",
        ],
    )
    # The audited bot's venue file has no fees section: VIP0 defaults; listing BTC alone makes its
    # precision block BTC's rules.
    venue_b = load_venue(
        legacy_configs / "binance_futures.yaml", ["venue.name=OTHER", "symbols=[BTCUSDT-PERP]"]
    )
    # Six bars over two days with one missing bar (a gap) before the fifth.
    b = compute_stats(run_b(), market(6, skip=4, start=T1), strategy_b, venue_b)
    same = [k for k in VARYING if b[k] == stats_a[k]]
    assert not same, f"stats equal for two different runs: {same}"
    same = [k for k in VARYING_ASSUMPTIONS if b["assumptions"][k] == stats_a["assumptions"][k]]
    assert not same, f"assumptions equal for two different runs: {same}"
    assert b["liquidated"] is True and b["profit_factor"] == 0.0  # no winning lot: 0 / 53 = 0
    assert b["gaps"] == 1 and b["assumptions"]["gates_disabled"] == ["risk_management.enable_circuit_breaker"]


def test_undefined_ratios_are_none_not_numbers() -> None:
    # One day only: no Sharpe/Sortino; no exits: no profit factor or win rate; no fills: no maker share.
    eq = records(EQUITY_DTYPE, [(T0 + H8 * i, 10000.0, 10000.0, 0.0, 0.0, 0.0, 0, 0, 0.0) for i in range(3)])
    empty = FakeRun(
        np.zeros(0, FILL_DTYPE), np.zeros(0, FUNDING_DTYPE), np.zeros(0, EVENT_DTYPE), eq, summary={}
    )
    s = compute_stats(empty, market(3), load_strategy("default"), load_venue("binance_futures"))
    assert s["sharpe"] is None and s["sortino"] is None and s["calmar"] is None
    assert s["profit_factor"] is None and s["win_rate_pct"] is None and s["maker_share_pct"] is None
    assert s["total_return_pct"] == 0.0 and s["max_drawdown_daily_close_pct"] == 0.0


def test_daily_equity_takes_the_last_bar_of_each_utc_day() -> None:
    ts = np.array([T0, T0 + DAY - 60_000, T0 + DAY, T0 + 3 * DAY + 5])
    days, eq = daily_equity(ts, np.array([1.0, 2.0, 3.0, 4.0]))
    assert days.tolist() == [T0 // DAY, T0 // DAY + 1, T0 // DAY + 3]
    assert eq.tolist() == [2.0, 3.0, 4.0]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.floats(1.0, 1e6), min_size=1, max_size=40), st.floats(1.0, 1e6))
def test_drawdown_and_ratio_invariants(curve: list[float], initial: float) -> None:
    eq = np.array(curve)
    dd = max_drawdown_pct(eq, initial)
    # A drawdown is a fraction of a positive peak: within [0, 100).
    assert 0.0 <= dd < 100.0
    # Monotone non-decreasing equity starting at or above the initial balance never draws down.
    rising = np.maximum.accumulate(np.maximum(eq, initial))
    assert max_drawdown_pct(rising, initial) == 0.0
    rets = daily_returns(eq, initial)
    # Chaining the returns rebuilds the curve.
    assert np.allclose(initial * np.cumprod(1.0 + rets), eq, rtol=1e-9)
    s, so = sharpe(rets), sortino(rets)
    # Both ratios share the sign of the mean return when defined.
    for ratio in (s, so):
        if ratio is not None and abs(rets.mean()) > 1e-12:
            assert math.copysign(1.0, ratio) == math.copysign(1.0, rets.mean())
