"""Helpers that build tiny hand-made markets and isolated configs for the scenario and proof tests.

Markets are built straight into the ``data.market.Market`` dataclass (no load-time validation), so a
test can also hand the engine what a broken feed would: NaN bars, gaps, no funding at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from reference_sim import simulate

from configs.loader import load_strategy, load_venue
from configs.schema import StrategyConfig, VenueConfig
from data.market import Market
from data.timeframes import timeframe_ms
from data.validate import ValidationReport
from engine.enums import EventKind

SYMBOL = "BTC/USDT:USDT"
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, on the 8 h funding grid
HOUR = 3_600_000
EIGHT_HOURS = 8 * HOUR

Bar = tuple[float, float, float, float]


def make_market(
    bars: Sequence[Bar],
    *,
    timeframe: str = "1h",
    start: int = T0,
    ts: Sequence[int] | None = None,
    funding: Sequence[tuple[int, float, float]] | None = None,
    symbol: str = SYMBOL,
) -> Market:
    """A Market of ``bars`` (open, high, low, close) starting at ``start`` on the timeframe grid.

    ``funding`` lists (settlement ts, rate, mark) rows; the default is one zero-rate settlement eight
    hours before ``start`` (rate known, nothing ever paid), so funding stays out of the way.
    """
    bar_ms = timeframe_ms(timeframe)
    times = [start + i * bar_ms for i in range(len(bars))] if ts is None else list(ts)
    if funding is None:
        funding = [(start - EIGHT_HOURS, 0.0, math.nan)]
    cols = np.array(bars, dtype=np.float64).reshape(len(bars), 4)
    return Market(
        symbol=symbol,
        timeframe=timeframe,
        bar_ms=bar_ms,
        ts=np.array(times, dtype=np.int64),
        open=np.ascontiguousarray(cols[:, 0]),
        high=np.ascontiguousarray(cols[:, 1]),
        low=np.ascontiguousarray(cols[:, 2]),
        close=np.ascontiguousarray(cols[:, 3]),
        volume=np.ones(len(bars), dtype=np.float64),
        funding_ts=np.array([f[0] for f in funding], dtype=np.int64),
        funding_rate=np.array([f[1] for f in funding], dtype=np.float64),
        funding_mark=np.array([f[2] for f in funding], dtype=np.float64),
        report=ValidationReport(),
    )


def flat(price: float, n: int) -> list[Bar]:
    """``n`` bars that never move from ``price``."""
    return [(price, price, price, price)] * n


def truncated(market: Market, last: int) -> Market:
    """The same market cut after bar ``last`` (inclusive); the funding series is kept whole."""
    n = last + 1
    return Market(
        symbol=market.symbol,
        timeframe=market.timeframe,
        bar_ms=market.bar_ms,
        ts=market.ts[:n].copy(),
        open=market.open[:n].copy(),
        high=market.high[:n].copy(),
        low=market.low[:n].copy(),
        close=market.close[:n].copy(),
        volume=market.volume[:n].copy(),
        funding_ts=market.funding_ts,
        funding_rate=market.funding_rate,
        funding_mark=market.funding_mark,
        report=market.report,
    )


# Settings that keep a scenario isolated: regime never warms (SIDEWAYS), no re-centre, loose size caps,
# funding guard off, gates on with generous thresholds, zero slippage and round fees.
ISOLATED = {
    "grid.grid_step_bps": 100.0,
    "grid.grid_levels_long": 1,
    "grid.grid_levels_short": 1,
    "grid.base_qty": 0.01,
    "grid.qty_scale": 1.0,
    "exit.tp_steps": 1,
    "exit.sl_steps": 2,
    "rebalance.recenter_trigger_bps": 10000.0,
    "rebalance.max_inventory_quote": 1e9,
    "execution.maker_only": True,
    "execution.use_post_only_retries": False,
    "funding.funding_max_cost_bps": 100.0,
    "regime.ema_slow": 500,
    "regime.ema_fast": 100,
    "regime.adx_len": 100,
    "position.max_position_size": 1000.0,
    "position.max_position_pct": 1.0,
    "position.max_leverage_used": 125.0,
    "position.emergency_liquidation_buffer": 0.05,
    "risk_management.max_drawdown_pct": 50.0,
    "backtest.slippage_bps": 0.0,
}
ISOLATED_VENUE = {
    "fees.maker": 0.0002,
    "fees.taker": 0.0005,
    "precision.tick_size": 0.1,
    "precision.step_size": 0.001,
    "precision.min_qty": 0.001,
    "precision.min_notional": 5.0,
    "risk.min_order_size_usdt": 5.0,
    "risk.max_order_size_usdt": 1e7,
    "rate_limits.orders_per_second": 100,
    "rate_limits.orders_per_minute": 1000,
}


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def strategy(**overrides: object) -> StrategyConfig:
    """The shipped ``default`` strategy with ISOLATED settings, then ``overrides`` (``section__field``)."""
    merged = dict(ISOLATED)
    merged.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_strategy("default", overrides=[f"{k}={_fmt(v)}" for k, v in merged.items()])


def venue(**overrides: object) -> VenueConfig:
    """The shipped ``binance_futures`` venue with ISOLATED_VENUE settings, then ``overrides``."""
    merged = dict(ISOLATED_VENUE)
    merged.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_venue("binance_futures", overrides=[f"{k}={_fmt(v)}" for k, v in merged.items()])


# ----------------------------------------------------------------------------------------------------
# Running both implementations the same way
# ----------------------------------------------------------------------------------------------------

IMPLS = ("reference", "kernel")


@dataclass
class Ledgers:
    """One run's ledgers as lists of plain dicts (record field names), and its summary."""

    fills: list[dict]
    funding: list[dict]
    events: list[dict]
    equity: list[dict]
    summary: dict


def _rows(arr: np.ndarray) -> list[dict]:
    return [{name: row[name].item() for name in arr.dtype.names} for row in arr]


def run(impl: str, market: Market, strat: StrategyConfig, ven: VenueConfig) -> Ledgers:
    """Run ``impl`` ("reference" or "kernel") on one market and return its ledgers."""
    if impl == "reference":
        out = simulate(market, strat, ven)
        return Ledgers(out.fills, out.funding, out.events, out.equity, out.summary)
    from engine.run import run_single

    res = run_single(market, strat, ven, curves=True)
    return Ledgers(_rows(res.fills), _rows(res.funding), _rows(res.events), _rows(res.equity), res.summary)


def entries(led: Ledgers) -> list[tuple]:
    """(bar index ts, side, level, price, qty) of every entry fill."""
    return [(f["ts"], f["side"], f["level"], f["price"], f["qty"]) for f in led.fills if f["kind"] == 0]


def kinds(led: Ledgers) -> list[str]:
    """Event kind names in ledger order."""
    return [EventKind._fields[e["kind"]] for e in led.events]


def bar_ts(k: int, timeframe: str = "1h", start: int = T0) -> int:
    """Timestamp of bar ``k`` of a market built by make_market."""
    return start + k * timeframe_ms(timeframe)
