"""The kernels' parameter vector: named float64 slots built from the strategy, the venue and the market.

Values are stored in config units (bps, seconds, minutes, booleans as 0/1) so a parameter set for the
optimizer is just "config value -> slot"; the kernels convert units where they read them. Brackets are
a separate ``(n, 5)`` array (floor, cap, maint_margin_ratio, cum, max_leverage). ``build_params`` is the
only place that reads configs for the engine and it refuses venues the engine cannot model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.configs.gates import declare_gate_params
from gridctl.configs.schema import StrategyConfig, VenueConfig
from gridctl.engine.enums import INTRABAR_PATH_NAMES, POLICY_NAMES
from gridctl.engine.layout import SlotTable

#: The parameter vector's slots (name, size, meaning), in order; the offsets below are derived from it.
PARAMS = SlotTable("params")


def _strategy(name: str, path: str, note: str = "") -> int:
    """A slot holding the strategy value at ``path`` (``section.key``)."""
    return PARAMS.add(name, f"{path} {note}".strip(), source=("strategy", path))


def _venue(name: str, path: str) -> int:
    """A slot holding the venue value at ``path`` (``section.key``)."""
    return PARAMS.add(name, path, source=("venue", path))


def _rule(name: str, key: str, note: str = "") -> int:
    """A slot holding the ``SymbolRules`` field ``key`` of the run's own symbol."""
    return PARAMS.add(name, f"{key} of the run's symbol {note}".strip(), source=("rules", key))


# --- grid / exit / rebalance
P_GRID_STEP_BPS = _strategy("P_GRID_STEP_BPS", "grid.grid_step_bps")
P_LEVELS_LONG = _strategy("P_LEVELS_LONG", "grid.grid_levels_long")
P_LEVELS_SHORT = _strategy("P_LEVELS_SHORT", "grid.grid_levels_short")
P_BASE_QTY = _strategy("P_BASE_QTY", "grid.base_qty")
P_QTY_SCALE = _strategy("P_QTY_SCALE", "grid.qty_scale")
P_TP_STEPS = _strategy("P_TP_STEPS", "exit.tp_steps")
P_SL_STEPS = _strategy("P_SL_STEPS", "exit.sl_steps")
P_RECENTER_BPS = _strategy("P_RECENTER_BPS", "rebalance.recenter_trigger_bps")
P_MAX_INVENTORY_QUOTE = _strategy("P_MAX_INVENTORY_QUOTE", "rebalance.max_inventory_quote")
# --- execution
P_MAKER_ONLY = _strategy("P_MAKER_ONLY", "execution.maker_only")
P_POST_ONLY_RETRIES = _strategy("P_POST_ONLY_RETRIES", "execution.use_post_only_retries")
P_RETRY_ATTEMPTS = _strategy("P_RETRY_ATTEMPTS", "execution.retry_attempts")
P_OPTIMIZATION_MODE = _strategy("P_OPTIMIZATION_MODE", "execution.optimization_mode")
P_RETRY_MAX_DEV_BPS = _strategy("P_RETRY_MAX_DEV_BPS", "execution.retry_max_price_deviation_bps")
# --- funding
P_FUNDING_WINDOW_MIN = _strategy("P_FUNDING_WINDOW_MIN", "funding.funding_window_minutes")
P_FUNDING_MAX_COST_BPS = _strategy("P_FUNDING_MAX_COST_BPS", "funding.funding_max_cost_bps")
# --- regime
P_ADX_LEN = _strategy("P_ADX_LEN", "regime.adx_len")
P_EMA_FAST = _strategy("P_EMA_FAST", "regime.ema_fast")
P_EMA_SLOW = _strategy("P_EMA_SLOW", "regime.ema_slow")
P_ATR_LEN = _strategy("P_ATR_LEN", "regime.atr_len")
P_HYSTERESIS_BPS = _strategy("P_HYSTERESIS_BPS", "regime.hysteresis_bps")
P_ADX_THRESHOLD = _strategy("P_ADX_THRESHOLD", "regime.adx_threshold")
# --- position
P_MAX_POSITION_SIZE = _strategy("P_MAX_POSITION_SIZE", "position.max_position_size")
P_MAX_POSITION_PCT = _strategy("P_MAX_POSITION_PCT", "position.max_position_pct")
P_MAX_LEVERAGE_USED = _strategy("P_MAX_LEVERAGE_USED", "position.max_leverage_used")
P_EMERGENCY_BUFFER = _strategy("P_EMERGENCY_BUFFER", "position.emergency_liquidation_buffer")
# --- policy
P_POLICY = _strategy("P_POLICY", "policy.strategy")
P_COUNTER_LEVELS = _strategy("P_COUNTER_LEVELS", "policy.counter_levels")
P_COUNTER_QTY_SCALE = _strategy("P_COUNTER_QTY_SCALE", "policy.counter_qty_scale")
P_THROTTLE = _strategy("P_THROTTLE", "policy.throttle")
# --- risk_management: one slot per gate field, named and typed in the gate table (configs/gates.py)
globals().update(declare_gate_params(PARAMS))
# --- backtest
P_INITIAL_BALANCE = _strategy("P_INITIAL_BALANCE", "backtest.initial_balance")
P_SLIPPAGE_BPS = _strategy("P_SLIPPAGE_BPS", "backtest.slippage_bps")
P_FILL_ON_TOUCH = _strategy("P_FILL_ON_TOUCH", "backtest.fill_on_touch")
# --- venue
P_LEVERAGE = _venue("P_LEVERAGE", "trading.leverage")
P_MIN_ORDER_USDT = _venue("P_MIN_ORDER_USDT", "risk.min_order_size_usdt")
P_MAX_ORDER_USDT = _venue("P_MAX_ORDER_USDT", "risk.max_order_size_usdt")
P_TICK = _rule("P_TICK", "tick_size", "(venue.rules_for)")
P_STEP = _rule("P_STEP", "step_size")
P_MIN_QTY = _rule("P_MIN_QTY", "min_qty")
P_MAX_QTY = _rule("P_MAX_QTY", "max_qty", "(legacy precision: inf when unset)")
P_MIN_NOTIONAL = _rule("P_MIN_NOTIONAL", "min_notional")
P_ORDERS_PER_SECOND = _venue("P_ORDERS_PER_SECOND", "rate_limits.orders_per_second")
P_ORDERS_PER_MINUTE = _venue("P_ORDERS_PER_MINUTE", "rate_limits.orders_per_minute")
P_FEE_MAKER = _venue("P_FEE_MAKER", "fees.maker")
P_FEE_TAKER = _venue("P_FEE_TAKER", "fees.taker")
# --- market / derived
P_BAR_MS = PARAMS.add("P_BAR_MS", "bar length in ms (market)")
P_MAX_LEVELS = PARAMS.add("P_MAX_LEVELS", "slot-array depth (max of both sides' levels)")
# --- intrabar path and liquidation
P_INTRABAR_PATH = _strategy("P_INTRABAR_PATH", "backtest.intrabar_path", "(INTRABAR_PATH_NAMES code)")
P_ORDER_PRICE_TOL_BPS = _strategy("P_ORDER_PRICE_TOL_BPS", "execution.order_price_tolerance_bps")
P_ORDER_QTY_TOL_PCT = _strategy("P_ORDER_QTY_TOL_PCT", "execution.order_qty_tolerance_pct")
P_LIQ_CLEARANCE_FEE = PARAMS.add(
    "P_LIQ_CLEARANCE_FEE", "margin.liquidation_clearance_fee (x notional); NaN: maintenance margin lost"
)
# --- per-symbol sizing and exchange filters (venue.rules_for(symbol))
P_BASE_NOTIONAL = _strategy("P_BASE_NOTIONAL", "grid.base_notional", "(quote); NaN: grid.base_qty sizes")
P_MARKET_MAX_QTY = _rule("P_MARKET_MAX_QTY", "market_max_qty", "(MARKET_LOT_SIZE)")
P_MAX_NUM_ORDERS = _rule("P_MAX_NUM_ORDERS", "max_num_orders", "(MAX_NUM_ORDERS)")
P_MAX_NUM_ALGO = _rule("P_MAX_NUM_ALGO", "max_num_algo_orders", "(MAX_NUM_ALGO_ORDERS)")
N_PARAMS = PARAMS.size

#: Config key path -> slot, for every config value the kernels read (bool/enum stored as numbers):
#: derived from the table above (each slot's ``source``), never written twice.
STRATEGY_PATHS: dict[str, int] = PARAMS.sources("strategy")

#: Venue key paths the kernels read (the exchange rules come per symbol: RULE_FIELDS).
VENUE_PATHS: dict[str, int] = PARAMS.sources("venue")

#: ``SymbolRules`` field -> slot: the rules of the run's own symbol (``VenueConfig.rules_for``), never
#: another symbol's. Not here: ``market_min_qty`` (the kernel's market orders close positions made of lots
#: of at least ``min_qty``) and ``percent_price_*`` (entries rest on the passive side of the close and a
#: TP on the passive side of its lot, so no order the kernel sends can leave the band; DESIGN.md
#: "Exchange filters"); the live readiness check compares all of them with the exchange.
RULE_FIELDS: dict[str, int] = PARAMS.sources("rules")

#: Slots that define the regime series (batch shares one series per distinct tuple of these).
REGIME_SLOTS: tuple[int, ...] = (
    P_ADX_LEN,
    P_EMA_FAST,
    P_EMA_SLOW,
    P_ATR_LEN,
    P_HYSTERESIS_BPS,
    P_ADX_THRESHOLD,
)


@dataclass(frozen=True)
class EngineParams:
    """Everything the kernels need that does not change during a run.

    ``vector``: float64[N_PARAMS]; ``brackets``: float64[n, 5]; ``meta``: facts for results
    (gates_disabled, fees_source, symbol, timeframe, origins).
    """

    vector: np.ndarray
    brackets: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _venue_symbol(ccxt_symbol: str) -> str:
    """``BTC/USDT:USDT`` -> ``BTCUSDT-PERP`` (the venue file's ``symbols`` spelling)."""
    base, rest = ccxt_symbol.split("/", 1)
    quote = rest.split(":", 1)[0]
    return f"{base}{quote}-PERP"


def check_venue_supported(strategy: StrategyConfig, venue: VenueConfig, market_symbol: str) -> None:
    """Refuse venues and markets the engine cannot model (hedge-mode cross-margin USD-M perpetuals)."""
    where = venue.origin
    if venue.venue.venue_type != "futures":
        raise GridctlError(
            f"{where}: venue.venue_type is {venue.venue.venue_type!r}; the engine models futures"
        )
    if venue.venue.account_type != "PERPETUAL_LINEAR":
        raise GridctlError(
            f"{where}: venue.account_type is {venue.venue.account_type!r}; the engine models PERPETUAL_LINEAR"
        )
    if not venue.trading.hedge_mode:
        raise GridctlError(f"{where}: trading.hedge_mode is false; the engine models hedge mode only")
    if venue.trading.margin_type != "CROSSED":
        raise GridctlError(
            f"{where}: trading.margin_type is {venue.trading.margin_type!r}; the engine models CROSSED margin"
        )
    ccxt_symbol = strategy.ccxt_symbol
    if _venue_symbol(ccxt_symbol) not in venue.symbols:
        raise GridctlError(
            f"{where}: symbols {venue.symbols} do not include {_venue_symbol(ccxt_symbol)} "
            f"(strategy.instrument_id {strategy.strategy.instrument_id} in {strategy.origin})"
        )
    if market_symbol != ccxt_symbol:
        raise GridctlError(
            f"market data is for {market_symbol} but strategy.instrument_id "
            f"{strategy.strategy.instrument_id} ({strategy.origin}) trades {ccxt_symbol}"
        )


def _number(value: Any, path: str) -> float:
    if value is None:  # an optional size unit not in use (grid.base_qty / grid.base_notional)
        return float("nan")
    if isinstance(value, str):
        if path == "policy.strategy":
            return float(POLICY_NAMES[value])
        if path == "backtest.intrabar_path":
            return float(INTRABAR_PATH_NAMES[value])
        raise GridctlError(f"{path}: {value!r} is not a number")
    return float(value)


def build_params(strategy: StrategyConfig, venue: VenueConfig, market: Any) -> EngineParams:
    """Parameter vector + brackets for one run of ``strategy`` on ``venue`` over ``market``.

    ``market`` needs ``symbol`` (ccxt) and ``bar_ms``; it is a ``data.market.Market`` in practice.
    """
    check_venue_supported(strategy, venue, market.symbol)
    vec = np.full(N_PARAMS, np.nan)
    for path, slot in STRATEGY_PATHS.items():
        section, key = path.split(".")
        vec[slot] = _number(getattr(getattr(strategy, section), key), path)
    if strategy.position.max_position_size is None:
        vec[P_MAX_POSITION_SIZE] = np.inf  # no base-unit cap (the quote cap max_inventory_quote applies)
    for path, slot in VENUE_PATHS.items():
        section, key = path.split(".")
        vec[slot] = float(getattr(getattr(venue, section), key))
    rules = venue.rules_for(market.symbol)  # this symbol's rules or an error naming it
    for key, slot in RULE_FIELDS.items():
        vec[slot] = float(getattr(rules, key))
    vec[P_BAR_MS] = float(market.bar_ms)
    vec[P_MAX_LEVELS] = float(max(strategy.grid.grid_levels_long, strategy.grid.grid_levels_short))
    clearance = venue.margin.liquidation_clearance_fee if venue.margin is not None else None
    vec[P_LIQ_CLEARANCE_FEE] = np.nan if clearance is None else float(clearance)
    brackets = np.array(
        [
            [b.notional_floor, b.notional_cap, b.maint_margin_ratio, b.cum, b.max_leverage]
            for b in venue.brackets_for(market.symbol)
        ],
        dtype=np.float64,
    )
    meta = {
        "symbol": market.symbol,
        "timeframe": getattr(market, "timeframe", ""),
        "gates_disabled": strategy.gates_disabled(),
        "fees_source": venue.fees_source,
        "rules_source": venue.rules_source(market.symbol),
        "fees": {"maker": venue.fees.maker, "taker": venue.fees.taker},
        "strategy_origin": strategy.origin,
        "venue_origin": venue.origin,
        "intrabar_path": strategy.backtest.intrabar_path,
        "liquidation_rule": "maintenance margin lost (insurance fund)"
        if clearance is None
        else f"clearance fee {clearance:g} of notional",
    }
    return EngineParams(vector=vec, brackets=brackets, meta=meta)
