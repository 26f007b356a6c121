"""Helpers that build tiny hand-made markets and isolated configs for the scenario and proof tests.

Markets are built straight into the ``data.market.Market`` dataclass (no load-time validation), so a
test can also hand the engine what a broken feed would: NaN bars, gaps, no funding at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.configs.schema import StrategyConfig, VenueConfig
from gridctl.data.market import Market
from gridctl.data.timeframes import timeframe_ms
from gridctl.data.validate import ValidationReport
from gridctl.engine.enums import EventKind

from reference_sim import simulate

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
    "grid.base_notional": None,  # the shipped default sizes in quote; scenarios size in base units
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
#: Override prefix of BTC/USDT:USDT's own exchange rules in the shipped venue (its symbols snapshot).
BTC_RULES = "symbol_rules.BTC/USDT:USDT."

ISOLATED_VENUE = {
    "fees.maker": 0.0002,
    "fees.taker": 0.0005,
    f"{BTC_RULES}tick_size": 0.1,
    f"{BTC_RULES}step_size": 0.001,
    f"{BTC_RULES}min_qty": 0.001,
    f"{BTC_RULES}min_notional": 5.0,
    "risk.min_order_size_usdt": 5.0,
    "risk.max_order_size_usdt": 1e7,
    "rate_limits.orders_per_second": 100,
    "rate_limits.orders_per_minute": 1000,
}


def _fmt(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def strategy(**overrides: object) -> StrategyConfig:
    """The shipped ``default`` strategy with ISOLATED settings, then ``overrides`` (``section__field``)."""
    merged = dict(ISOLATED)
    changes = {k.replace("__", "."): v for k, v in overrides.items()}
    if changes.get("grid.base_notional") is not None and "grid.base_qty" not in changes:
        merged["grid.base_qty"] = None  # one size unit: quote notional replaces the base quantity
    merged.update(changes)
    return load_strategy("default", overrides=[f"{k}={_fmt(v)}" for k, v in merged.items()])


def venue(**overrides: object) -> VenueConfig:
    """The shipped ``binance_futures`` venue with ISOLATED_VENUE settings, then ``overrides``.

    ``symbol_rules__min_notional=...`` sets BTC/USDT:USDT's own rule of that name.
    """
    merged = dict(ISOLATED_VENUE)
    for k, v in overrides.items():
        key = k.replace("__", ".")
        if key.startswith("symbol_rules.") and key.count(".") == 1:
            key = BTC_RULES + key.removeprefix("symbol_rules.")
        merged[key] = v
    return load_venue("binance_futures", overrides=[f"{k}={_fmt(v)}" for k, v in merged.items()])


def legacy_venue(drop: tuple[str, ...] = (), **precision: object) -> VenueConfig:
    """``venue()`` rewritten as a legacy one-symbol venue: BTC's rules as a ``precision`` block.

    ``drop`` removes precision keys (so their *_precision defaults apply); ``precision`` sets others.
    """
    base = venue()
    rules = base.rules_for("BTC/USDT:USDT")
    block: dict[str, object] = {
        "price_precision": 1,
        "quantity_precision": 3,
        "min_notional": rules.min_notional,
        "tick_size": rules.tick_size,
        "step_size": rules.step_size,
        "min_qty": rules.min_qty,
        "max_qty": rules.max_qty,
    }
    block = {k: v for k, v in block.items() if k not in drop}
    block.update(precision)
    data = {name: getattr(base, name) for name in VenueConfig.model_fields}
    data.update(precision=block, symbol_rules=None, symbol_rules_file=None, symbols=["BTCUSDT-PERP"])
    return VenueConfig.model_validate(data)


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


def rows_of(arr: np.ndarray) -> list[dict]:
    """A structured record array as a list of plain dicts."""
    return [{name: row[name].item() for name in arr.dtype.names} for row in arr]


def run(
    impl: str, market: Market, strat: StrategyConfig, ven: VenueConfig, detail: Market | None = None
) -> Ledgers:
    """Run ``impl`` ("reference" or "kernel") on one market (path walked through ``detail``)."""
    if impl == "reference":
        out = simulate(market, strat, ven, detail=detail)
        return Ledgers(out.fills, out.funding, out.events, out.equity, out.summary)
    from gridctl.engine.run import run_single

    res = run_single(market, strat, ven, curves=True, detail=detail)
    return Ledgers(
        rows_of(res.fills), rows_of(res.funding), rows_of(res.events), rows_of(res.equity), res.summary
    )


def entries(led: Ledgers) -> list[tuple]:
    """(bar index ts, side, level, price, qty) of every entry fill."""
    return [(f["ts"], f["side"], f["level"], f["price"], f["qty"]) for f in led.fills if f["kind"] == 0]


def kinds(led: Ledgers) -> list[str]:
    """Event kind names in ledger order."""
    return [EventKind._fields[e["kind"]] for e in led.events]


def bar_ts(k: int, timeframe: str = "1h", start: int = T0) -> int:
    """Timestamp of bar ``k`` of a market built by make_market."""
    return start + k * timeframe_ms(timeframe)


# ----------------------------------------------------------------------------------------------------
# Hypothesis strategies: random markets and random valid configs
# ----------------------------------------------------------------------------------------------------


@st.composite
def markets(draw):
    """A random market: a few hundred bars of a jumpy random walk plus an 8-hourly funding series."""
    timeframe = draw(st.sampled_from(["1m", "15m", "1h"]))
    bar_ms = {"1m": 60_000, "15m": 900_000, "1h": 3_600_000}[timeframe]
    n = draw(st.integers(60, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    vol = draw(st.floats(0.0005, 0.02))
    jump_p = draw(st.sampled_from([0.0, 0.01, 0.05]))
    gap_p = draw(st.sampled_from([0.0, 0.0, 0.01, 0.03]))
    nan_p = draw(st.sampled_from([0.0, 0.0, 0.0, 0.01]))
    start = T0 + draw(st.integers(0, 40)) * bar_ms
    price = draw(st.sampled_from([100.0, 10000.0, 60000.0]))
    bars, ts = [], []
    t = start
    for k in range(n):
        o = price * (1 + rng.normal(0, vol / 4)) if rng.random() < 0.3 else price
        if rng.random() < jump_p:
            o *= 1 + rng.choice([-1, 1]) * rng.uniform(0.02, 0.1)
        c = o * math.exp(rng.normal(0, vol))
        h = max(o, c) * (1 + abs(rng.normal(0, vol / 2)))
        lo = min(o, c) * (1 - abs(rng.normal(0, vol / 2)))
        bar = tuple(round(x, 1) for x in (o, h, lo, c))
        if k > 0 and rng.random() < nan_p:
            bar = (math.nan,) * 4
        else:
            price = bar[3]
        bars.append(bar)
        ts.append(t)
        t += bar_ms * (1 + (int(rng.integers(1, 5)) if rng.random() < gap_p else 0))
    first = (start // EIGHT_HOURS - draw(st.integers(0, 2))) * EIGHT_HOURS
    funding = []
    settle = first
    while settle <= t + EIGHT_HOURS:
        u = rng.random()
        if u < 0.1:
            rate = float(rng.choice([-0.003, 0.003, -0.0075, 0.0075]))
        elif u < 0.15:
            rate = 0.0
        else:
            rate = float(rng.normal(0.0001, 0.0004))
        mark = math.nan if rng.random() < 0.3 else price * (1 + rng.normal(0, 0.001))
        funding.append((settle, rate, mark))
        settle += EIGHT_HOURS
    if draw(st.integers(0, 15)) == 0:
        funding = [f for f in funding if f[0] > start + n // 2 * bar_ms]  # rate unknown at first
    return make_market(bars, timeframe=timeframe, ts=ts, funding=funding)


@st.composite
def configs(draw):
    """Random valid strategy and venue overrides."""
    sl = draw(st.integers(1, 10))
    fast = draw(st.integers(5, 15))
    s = dict(
        grid__grid_step_bps=draw(st.sampled_from([10.0, 25.0, 50.0, 100.0, 200.0])),
        grid__grid_levels_long=draw(st.integers(1, 6)),
        grid__grid_levels_short=draw(st.integers(1, 6)),
        grid__base_qty=draw(st.sampled_from([0.001, 0.005, 0.02, 0.1, 1.0])),
        grid__qty_scale=draw(st.sampled_from([0.8, 1.0, 1.05, 1.5])),
        exit__sl_steps=sl,
        exit__tp_steps=draw(st.integers(1, min(3 * sl, 6))),
        rebalance__recenter_trigger_bps=draw(st.sampled_from([50.0, 200.0, 1000.0, 10000.0])),
        rebalance__max_inventory_quote=draw(st.sampled_from([500.0, 5000.0, 1e9])),
        execution__maker_only=draw(st.booleans()),
        execution__use_post_only_retries=draw(st.booleans()),
        execution__retry_attempts=draw(st.integers(0, 5)),
        execution__optimization_mode=draw(st.booleans()),
        execution__retry_max_price_deviation_bps=draw(st.sampled_from([0.0, 0.1, 1.0, 100.0])),
        funding__funding_window_minutes=draw(st.sampled_from([60, 240, 480, 1440])),
        funding__funding_max_cost_bps=draw(st.sampled_from([0.0, 1.0, 12.0, 100.0])),
        regime__adx_len=draw(st.integers(5, 12)),
        regime__ema_fast=fast,
        regime__ema_slow=draw(st.integers(max(fast + 1, 10), 30)),
        regime__atr_len=draw(st.integers(5, 14)),
        regime__hysteresis_bps=draw(st.sampled_from([0.0, 5.0, 35.0])),
        regime__adx_threshold=draw(st.sampled_from([0.0, 20.0, 40.0])),
        position__max_position_size=draw(st.sampled_from([0.01, 0.1, 1000.0])),
        position__max_position_pct=draw(st.sampled_from([0.1, 0.5, 1.0])),
        position__max_leverage_used=draw(st.sampled_from([0.5, 2.0, 5.0, 125.0])),
        position__emergency_liquidation_buffer=draw(st.sampled_from([0.05, 0.15, 0.5])),
        policy__strategy=draw(st.sampled_from(["throttled-counter", "core-and-scalp"])),
        policy__counter_levels=draw(st.integers(0, 6)),
        policy__counter_qty_scale=draw(st.sampled_from([0.0, 0.5, 1.0])),
        policy__throttle=draw(st.sampled_from([0.0, 0.3, 1.0])),
        risk_management__max_errors_per_minute=draw(st.integers(1, 20)),
        risk_management__circuit_breaker_cooldown_seconds=draw(st.sampled_from([60, 300, 3600])),
        risk_management__max_drawdown_pct=draw(st.sampled_from([1.0, 5.0, 20.0, 50.0])),
        risk_management__circuit_breaker_window_seconds=draw(st.sampled_from([10, 60, 600])),
        risk_management__enable_position_validation=draw(st.booleans()),
        risk_management__enable_circuit_breaker=draw(st.booleans()),
        risk_management__enable_drawdown_protection=draw(st.booleans()),
        backtest__initial_balance=draw(st.sampled_from([200.0, 2000.0, 10000.0, 100000.0])),
        backtest__slippage_bps=draw(st.sampled_from([0.0, 1.0, 5.0])),
        backtest__fill_on_touch=draw(st.booleans()),
    )
    v = dict(
        trading__leverage=draw(st.sampled_from([1, 5, 10, 20])),
        risk__min_order_size_usdt=draw(st.sampled_from([1.0, 5.0, 50.0])),
        risk__max_order_size_usdt=draw(st.sampled_from([1000.0, 100000.0])),
        symbol_rules__min_notional=draw(st.sampled_from([1.0, 5.0, 20.0])),
        rate_limits__orders_per_second=draw(st.integers(1, 12)),
        rate_limits__orders_per_minute=draw(st.sampled_from([2, 10, 100])),
        fees__maker=draw(st.sampled_from([0.0, 0.0002])),
        fees__taker=draw(st.sampled_from([0.0004, 0.0005])),
    )
    return s, v


@st.composite
def exchange_limits(draw):
    """BTC's order-count and market-lot limits (venue overrides): a separate ``@given`` argument, drawn
    last, so ``configs()`` and the generators built on it draw as before."""
    return dict(
        symbol_rules__max_num_algo_orders=draw(st.sampled_from([3, 10, 200])),
        symbol_rules__market_max_qty=draw(st.sampled_from([0.004, 120.0])),
    )


@st.composite
def tolerances(draw):
    """The kept-order tolerances (strategy overrides), 0 (exact) up to values that keep most changes.

    A retry's tick is 10 / 0.1 / 0.017 bps of a 100 / 10000 / 60000 price, so 0.5-20 bps keep some
    retried entries and not others; guard-scaled sizes move by ~0.2-2 % a close; the counter-side
    policy halves or doubles a size (50 % keeps the doubled one). A separate ``@given`` argument
    (drawn last), so ``configs()`` and the generators built on it draw as before.
    """
    return dict(
        execution__order_price_tolerance_bps=draw(st.sampled_from([0.0, 0.5, 1.0, 20.0])),
        execution__order_qty_tolerance_pct=draw(st.sampled_from([0.0, 0.5, 1.0, 5.0, 50.0])),
    )


@st.composite
def path_configs(draw):
    """``configs()`` plus the intrabar path rule and the liquidation clearance rule."""
    s, v = draw(configs())
    rules = ["nearer_first", "farther_first", "high_first", "low_first"]
    s["backtest__intrabar_path"] = draw(st.sampled_from(rules))
    clearance = draw(st.sampled_from([None, None, 0.0, 0.005, 0.02]))
    if clearance is not None:
        v["margin__liquidation_clearance_fee"] = clearance
    return s, v


#: The bot's own limits, the breaker and the drawdown halt off (the exchange's rules still apply):
#: what lets a generated account run into its maintenance margin.
LIMITS_OFF = dict(
    risk_management__enable_position_validation=False,
    risk_management__enable_drawdown_protection=False,
    risk_management__enable_circuit_breaker=False,
    position__max_leverage_used=125.0,
    position__emergency_liquidation_buffer=0.05,
)


@st.composite
def liquidation_configs(draw, price: float | None = None):
    """Configs that open positions large against the balance: liquidations, often past a stop.

    Size checks, the breaker and the drawdown halt are off; with ``price`` (the market's first close)
    the rung size is 20-160x the balance in notional, so the liquidation price sits a few grid steps
    from the entries, and stops land on either side of it.
    """
    s, v = draw(path_configs())
    balance = draw(st.sampled_from([60.0, 120.0, 250.0, 600.0]))
    qty = draw(st.sampled_from([0.05, 0.1, 0.3]))
    if price is not None and math.isfinite(price):
        qty = max(0.001, round(balance * draw(st.sampled_from([20.0, 40.0, 80.0, 160.0])) / price, 3))
    s.update(
        grid__grid_step_bps=draw(st.sampled_from([25.0, 50.0, 100.0])),
        grid__base_qty=qty,
        grid__qty_scale=1.0,
        exit__sl_steps=draw(st.integers(1, 10)),
        exit__tp_steps=draw(st.integers(1, 3)),
        **LIMITS_OFF,
        backtest__initial_balance=balance,
        execution__maker_only=draw(st.booleans()),
    )
    v["trading__leverage"] = 20
    return s, v


@st.composite
def liquidation_cases(draw, detail: bool = False):
    """(market, detail market or None, strategy overrides, venue overrides) headed for liquidation."""
    if detail:
        market, fine = draw(detail_markets())
    else:
        market, fine = draw(markets()), None
    s, v = draw(liquidation_configs(price=float(market.close[0])))
    if fine is not None:
        s["backtest__detail_timeframe"] = "1m"
    return market, fine, s, v


@st.composite
def detail_markets(draw):
    """(coarse market, 1m detail market): coarse bars aggregate the 1m bars, some 1m bars missing.

    The coarse timeframe is 5m or 15m; a few 1m bars are dropped or NaN (those coarse bars fall back
    to their own OHLC), the coarse series has the odd data gap and NaN bar, and sometimes a 1m bar
    pokes outside its coarse bar's range (feeds that disagree).
    """
    coarse_tf = draw(st.sampled_from(["5m", "15m"]))
    ratio = {"5m": 5, "15m": 15}[coarse_tf]
    n = draw(st.integers(30, 90))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vol = draw(st.floats(0.0005, 0.006))
    drop_p = draw(st.sampled_from([0.0, 0.002, 0.01]))
    gap_p = draw(st.sampled_from([0.0, 0.02]))
    nan_p = draw(st.sampled_from([0.0, 0.0, 0.01]))
    price = draw(st.sampled_from([100.0, 10000.0]))
    start = T0 + draw(st.integers(0, 20)) * ratio * 60_000
    fine_bars, fine_ts, bars, ts = [], [], [], []
    t = start
    for k in range(n):
        chunk = []
        for j in range(ratio):
            o = price
            if rng.random() < 0.03:
                o *= 1 + rng.choice([-1, 1]) * rng.uniform(0.002, 0.02)
            c = o * math.exp(rng.normal(0, vol))
            h = max(o, c) * (1 + abs(rng.normal(0, vol / 2)))
            lo = min(o, c) * (1 - abs(rng.normal(0, vol / 2)))
            bar = tuple(round(x, 1) for x in (o, h, lo, c))
            price = bar[3]
            chunk.append((t + j * 60_000, bar))
        o, c = chunk[0][1][0], chunk[-1][1][3]
        h = max(b[1] for _, b in chunk)
        lo = min(b[2] for _, b in chunk)
        if rng.random() < 0.05:
            h, lo = h * 0.999, lo * 1.001  # a coarse bar narrower than its 1m bars
        coarse = (o, max(h, o, c), min(lo, o, c), c)
        if k > 0 and rng.random() < nan_p:
            coarse = (math.nan,) * 4
        bars.append(coarse)
        ts.append(t)
        for tj, bar in chunk:
            u = rng.random()
            if u < drop_p:
                continue
            if u < 2 * drop_p:
                bar = (math.nan,) * 4
            fine_bars.append(bar)
            fine_ts.append(tj)
        t += ratio * 60_000 * (1 + (int(rng.integers(1, 4)) if rng.random() < gap_p else 0))
    funding = []
    settle = (start // EIGHT_HOURS - 1) * EIGHT_HOURS
    while settle <= t + EIGHT_HOURS:
        funding.append((settle, float(rng.normal(0.0001, 0.0004)), math.nan))
        settle += EIGHT_HOURS
    coarse_m = make_market(bars, timeframe=coarse_tf, ts=ts, funding=funding)
    fine_m = make_market(fine_bars, timeframe="1m", ts=fine_ts, funding=funding)
    return coarse_m, fine_m
