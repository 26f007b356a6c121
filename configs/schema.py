"""Typed config schema: the single source of truth for every strategy and venue setting.

Every section forbids unknown keys and is frozen; ranges carry the legacy ``naut_hedgegrid`` limits so
the audited bot's own files load unchanged. Cross-field rules raise :class:`FieldRuleError`, which names the
offending field so the loader can report a full key path (``exit.tp_steps``) instead of the section.
Load files through :mod:`configs.loader`, which adds file names, key suggestions and ``${VAR}`` secrets.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    create_model,
    field_validator,
    model_validator,
)

from gridctl.configs.errors import GridctlError
from gridctl.configs.gates import GATES, Gate, gate_fields, gates_disabled

#: Binance USD-M VIP0 fee rates, used when a venue file has no ``fees`` section (results say so).
DEFAULT_MAKER_FEE = 0.0002
DEFAULT_TAKER_FEE = 0.0005

_INSTRUMENT_RE = re.compile(r"^(?P<base>[A-Z0-9]+?)(?P<quote>USDT|USDC)-PERP\.BINANCE$")
_VENUE_SYMBOL_RE = re.compile(r"^[A-Z0-9]+?(USDT|USDC)-PERP$")
_CCXT_SYMBOL_RE = re.compile(r"^[A-Z0-9]+/(USDT|USDC):(USDT|USDC)$")


class FieldRuleError(ValueError):
    """A cross-field rule broke; ``field`` is the key (inside the section) the message is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


#: Most symbols one basket may trade (Binance's account limits are far above; runs scale with N).
MAX_BASKET_SYMBOLS = 64

#: Upper bound of every amount in quote currency or base quantity (balances, sizes, notionals, filters):
#: far above any real account or order, far below where float arithmetic loses whole units.
MAX_AMOUNT = 1e12


def _number_type(annotation: Any) -> type | None:
    """``float`` or ``int`` when a field holds a number (also ``X | None``), else None (bool is no number)."""
    args = [a for a in get_args(annotation) if a is not type(None)] if get_args(annotation) else [annotation]
    if len(args) == 1 and args[0] in (float, int):
        return args[0]
    return None


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are typed strictly, immutable.

    Every number is bounded: NaN and infinity are refused (``allow_inf_nan=False``), and a section that
    declares a float or int field without both a lower and an upper bound fails at import, so a new
    field cannot slip in unbounded (``1e308`` or ``10**30`` would pass a one-sided range).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, field in cls.model_fields.items():
            if _number_type(field.annotation) is None:
                continue
            kinds = {type(m).__name__ for m in field.metadata}
            if not (kinds & {"Ge", "Gt"} and kinds & {"Le", "Lt"}):
                raise TypeError(
                    f"{cls.__name__}.{name}: a number field needs both a lower and an upper bound"
                )


def _ccxt_to_venue_symbol(ccxt_symbol: str) -> str:
    """``BTC/USDT:USDT`` -> ``BTCUSDT-PERP`` (the venue file's ``symbols`` spelling)."""
    base, rest = ccxt_symbol.split("/", 1)
    return f"{base}{rest.split(':', 1)[0]}-PERP"


def ccxt_to_instrument(symbol: str) -> str:
    """``XRP/USDT:USDT`` -> ``XRPUSDT-PERP.BINANCE`` (the strategy's ``instrument_id`` spelling)."""
    if _CCXT_SYMBOL_RE.match(symbol) is None:
        raise GridctlError(f"{symbol!r} is not a ccxt USD-M symbol like 'BTC/USDT:USDT'")
    return f"{_ccxt_to_venue_symbol(symbol)}.BINANCE"


def instrument_to_ccxt(instrument_id: str) -> str:
    """``BTCUSDT-PERP.BINANCE`` -> ``BTC/USDT:USDT`` (Binance USD-M linear perpetuals only)."""
    match = _INSTRUMENT_RE.match(instrument_id)
    if match is None:
        raise GridctlError(
            f"strategy.instrument_id {instrument_id!r} is not a Binance USD-M perpetual id "
            "like 'BTCUSDT-PERP.BINANCE'"
        )
    quote = match["quote"]
    return f"{match['base']}/{quote}:{quote}"


# ----------------------------------------------------------------------------------------------------
# Strategy
# ----------------------------------------------------------------------------------------------------


class StrategySection(_Section):
    """Identity: the run's label and the instrument it trades (or the basket of symbols it trades)."""

    name: str = Field(min_length=1)
    instrument_id: str
    # NEW: a basket: the ccxt symbols traded together in one cross-margin wallet, in the order they step
    # within a bar. None: the single instrument_id. instrument_id must be one of them.
    symbols: list[str] | None = Field(default=None, min_length=1, max_length=MAX_BASKET_SYMBOLS)

    @field_validator("instrument_id")
    @classmethod
    def _parseable(cls, value: str) -> str:
        if _INSTRUMENT_RE.match(value) is None:
            raise ValueError(f"{value!r} is not a Binance USD-M perpetual id like 'BTCUSDT-PERP.BINANCE'")
        return value

    @field_validator("symbols")
    @classmethod
    def _basket_symbols(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        bad = [s for s in value if _CCXT_SYMBOL_RE.match(s) is None]
        if bad:
            raise ValueError(f"{bad} are not ccxt USD-M symbols like 'BTC/USDT:USDT'")
        twice = sorted({s for s in value if value.count(s) > 1})
        if twice:
            raise ValueError(f"{twice} listed more than once (each symbol trades once in a basket)")
        return value

    @model_validator(mode="after")
    def _instrument_in_basket(self) -> StrategySection:
        if self.symbols is not None and instrument_to_ccxt(self.instrument_id) not in self.symbols:
            raise FieldRuleError(
                "instrument_id",
                f"{self.instrument_id} ({instrument_to_ccxt(self.instrument_id)}) is not in strategy.symbols "
                f"{self.symbols}; name one of the basket's symbols (single-symbol tools trade it)",
            )
        return self


class GridSection(_Section):
    """Ladder geometry: spacing in bps, rungs per side, and the geometric qty per rung."""

    grid_step_bps: float = Field(ge=5, le=1000)
    grid_levels_long: int = Field(ge=1, le=100)
    grid_levels_short: int = Field(ge=1, le=100)
    base_qty: float | None = Field(default=None, gt=0, le=MAX_AMOUNT)
    qty_scale: float = Field(gt=0, le=3)
    # NEW: rung 1 size in quote currency (USDT) instead of base units: the rung's quantity is this notional
    # divided by the ladder centre, so one strategy sizes BTC at 100,000 and XRP at 1 alike.
    base_notional: float | None = Field(default=None, gt=0, le=MAX_AMOUNT)

    @model_validator(mode="after")
    def _one_size_unit(self) -> GridSection:
        if (self.base_qty is None) == (self.base_notional is None):
            raise FieldRuleError(
                "base_qty",
                "give exactly one of grid.base_qty (base units) and grid.base_notional (quote currency) "
                f"(got base_qty={self.base_qty}, base_notional={self.base_notional})",
            )
        return self


#: The two ways to size rung 1; an override that sets one clears the other (``size_unit_changes``).
SIZE_UNITS = ("base_qty", "base_notional")


def size_unit_changes(grid_changes: dict[str, Any]) -> dict[str, Any]:
    """``grid`` overrides plus the other size unit cleared when exactly one unit is set to a value.

    ``--set grid.base_qty=0.05`` on a strategy sized by ``base_notional`` means "size in base units now";
    setting both (or clearing one) is left as given, so the one-unit rule still reports it.
    """
    given = [u for u in SIZE_UNITS if u in grid_changes]
    if len(given) == 1 and grid_changes[given[0]] is not None:
        other = SIZE_UNITS[1 - SIZE_UNITS.index(given[0])]
        return {**grid_changes, other: None}
    return grid_changes


class ExitSection(_Section):
    """Take-profit and stop-loss distance of each lot, in grid steps from its fill price."""

    tp_steps: int = Field(ge=1, le=100)
    sl_steps: int = Field(ge=1, le=100)

    @model_validator(mode="after")
    def _tp_within_reach(self) -> ExitSection:
        if self.tp_steps > 3 * self.sl_steps:
            raise FieldRuleError(
                "tp_steps",
                f"must be <= 3 * sl_steps = {3 * self.sl_steps} (got {self.tp_steps}): a target more "
                "than three stops away almost never fills before the stop",
            )
        return self


class RebalanceSection(_Section):
    """When the ladder re-centres, and the inventory cap in quote currency."""

    recenter_trigger_bps: float = Field(gt=0, le=10000)
    max_inventory_quote: float = Field(gt=0, le=MAX_AMOUNT)


class ExecutionSection(_Section):
    """Order style: post-only entries and how rejected post-only entries are retried."""

    maker_only: bool = True
    use_post_only_retries: bool = False
    retry_attempts: int = Field(default=3, ge=0, le=10)
    retry_delay_ms: int = Field(default=100, ge=0, le=5000)
    optimization_mode: bool = False
    retry_max_price_deviation_bps: float = Field(default=100.0, ge=0, le=1000)
    # NEW, live only: an open order this close to the wanted one is kept, not replaced (no churn).
    order_price_tolerance_bps: float = Field(default=1.0, ge=0, le=100)
    order_qty_tolerance_pct: float = Field(default=1.0, ge=0, le=50)
    # NEW, live only: exchange exposure the engine cannot explain after a restart or a foreign trade is
    # guarded by a reduce-side stop of its size (protect) or closed at market (flatten); entries refused.
    unexplained_position: Literal["protect", "flatten"] = "protect"


class FundingSection(_Section):
    """Funding guard: how close to a settlement, and how costly, before the paying side shrinks."""

    funding_window_minutes: int = Field(ge=60, le=1440)
    funding_max_cost_bps: float = Field(ge=0, le=100)


class RegimeSection(_Section):
    """Trend detection: EMA spread with hysteresis, gated by ADX strength; ATR for volatility."""

    adx_len: int = Field(ge=5, le=100)
    ema_fast: int = Field(ge=5, le=200)
    ema_slow: int = Field(ge=10, le=500)
    atr_len: int = Field(ge=5, le=100)
    hysteresis_bps: float = Field(ge=0, le=1000)
    adx_threshold: float = Field(default=20.0, ge=0, le=100)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> RegimeSection:
        if self.ema_fast >= self.ema_slow:
            raise FieldRuleError(
                "ema_fast",
                f"must be < ema_slow = {self.ema_slow} (got {self.ema_fast}): the trend signal is the "
                "fast EMA crossing the slow one",
            )
        return self


class PositionSection(_Section):
    """Position caps: size, share of equity, effective leverage and the distance kept from liquidation."""

    # Base units, so tied to one symbol; None (may be left out) = no base-unit cap, the quote cap
    # rebalance.max_inventory_quote still applies (it travels across symbols).
    max_position_size: float | None = Field(default=None, gt=0, le=MAX_AMOUNT)
    max_position_pct: float = Field(default=0.95, ge=0.1, le=1)
    max_leverage_used: float = Field(gt=0, le=125)
    emergency_liquidation_buffer: float = Field(ge=0.05, le=1)


class PolicySection(_Section):
    """Inventory biasing by regime, and the operator throttle on entry size."""

    strategy: Literal["throttled-counter", "core-and-scalp"]
    counter_levels: int = Field(ge=0, le=20)
    counter_qty_scale: float = Field(ge=0, le=1)
    throttle: float = Field(default=1.0, ge=0, le=1)


def risk_management_model(gates: tuple[Gate, ...] = GATES) -> type[_Section]:
    """The ``risk_management`` section built from the gate table: one field per ``GateField``."""
    fields: dict[str, Any] = {
        f.name: (f.annotation, Field(default=f.default, **f.bounds)) for f in gate_fields(gates)
    }
    model = create_model("RiskManagementSection", __base__=_Section, __module__=__name__, **fields)
    model.__doc__ = "The risk gates' settings (configs/gates.py GATES: one field per gate field)."
    return model


RiskManagementSection = risk_management_model()


class BacktestSection(_Section):
    """Simulation settings: balance, slippage, limit-fill rule, intrabar path rule and detail bars.

    ``intrabar_path`` orders a bar's extremes (OHLC cannot tell which came first); ``detail_timeframe``
    (e.g. ``1m``) makes the fills walk the finer bars inside each bar (None: the bar's own OHLC).
    """

    initial_balance: float = Field(default=10000.0, gt=0, le=MAX_AMOUNT)
    slippage_bps: float = Field(default=1.0, ge=0, le=1000)
    fill_on_touch: bool = False
    intrabar_path: Literal["nearer_first", "farther_first", "high_first", "low_first"] = "nearer_first"
    # The data store's timeframes below a day (data/timeframes.py; configs cannot import data).
    detail_timeframe: Literal["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h"] | None = None


class StrategyConfig(_Section):
    """A hedge-grid strategy: the legacy sections plus the optional risk_management and backtest."""

    strategy: StrategySection
    grid: GridSection
    exit: ExitSection
    rebalance: RebalanceSection
    execution: ExecutionSection = Field(default_factory=ExecutionSection)
    funding: FundingSection
    regime: RegimeSection
    position: PositionSection
    policy: PolicySection
    risk_management: RiskManagementSection = Field(default_factory=RiskManagementSection)
    backtest: BacktestSection = Field(default_factory=BacktestSection)
    # NEW: per-symbol overrides of the basket: ccxt symbol -> {"section.key": value}, applied on top of
    # this strategy for that symbol by configs.overrides.basket_strategies (the --set engine).
    symbol_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)

    _origin: str = PrivateAttr(default="<in memory>")

    @field_validator("symbol_overrides")
    @classmethod
    def _override_shape(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for symbol, keys in value.items():
            if _CCXT_SYMBOL_RE.match(symbol) is None:
                raise ValueError(f"{symbol!r} is not a ccxt USD-M symbol like 'BTC/USDT:USDT'")
            for key, item in keys.items():
                if key.count(".") != 1 or not all(key.split(".")):
                    raise ValueError(f"{symbol}: key {key!r} must look like 'section.key' (as --set takes)")
                if isinstance(item, dict | list):
                    raise ValueError(f"{symbol}: {key} must be a single value, got {type(item).__name__}")
        return value

    @model_validator(mode="after")
    def _overrides_in_basket(self) -> StrategyConfig:
        basket = self.basket_symbols
        stray = [s for s in self.symbol_overrides if s not in basket]
        if stray:
            raise FieldRuleError(
                "symbol_overrides",
                f"{stray} not in the basket {list(basket)} (strategy.symbols); "
                "a symbol override must name a symbol the strategy trades",
            )
        return self

    @property
    def basket_symbols(self) -> tuple[str, ...]:
        """The symbols this strategy trades, in step order: ``strategy.symbols``, else the instrument's."""
        if self.strategy.symbols is not None:
            return tuple(self.strategy.symbols)
        return (self.ccxt_symbol,)

    @property
    def origin(self) -> str:
        """Where this config came from (file path, plus ``--set`` overrides), for messages and results."""
        return self._origin

    @property
    def ccxt_symbol(self) -> str:
        """The ccxt unified symbol of ``strategy.instrument_id``, e.g. ``BTC/USDT:USDT``."""
        return instrument_to_ccxt(self.strategy.instrument_id)

    def gates_disabled(self) -> list[str]:
        """Key paths of the gate switches that are off (configs/gates.py; results report them)."""
        return gates_disabled(self.risk_management)


# ----------------------------------------------------------------------------------------------------
# Venue
# ----------------------------------------------------------------------------------------------------


class VenueSection(_Section):
    """Which exchange and account kind the venue file describes."""

    name: str = Field(min_length=1)
    venue_type: Literal["spot", "futures", "options"]
    account_type: Literal["CASH", "MARGIN", "PERPETUAL_LINEAR", "PERPETUAL_INVERSE"]


class ApiSection(_Section):
    """Credentials and endpoints. Credentials are ``${VAR}`` references; see :mod:`configs.secrets`."""

    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    testnet: bool = False
    base_url: str | None = None
    ws_url: str | None = None


class TradingSection(_Section):
    """Account mode: hedge mode, leverage set on the exchange, margin type."""

    hedge_mode: bool
    leverage: int = Field(ge=1, le=125)
    margin_type: Literal["CROSSED", "ISOLATED"]


class RiskSection(_Section):
    """Venue-level guards: the leverage ceiling and the per-order notional range in USDT."""

    max_leverage: int = Field(ge=1, le=125)
    min_order_size_usdt: float = Field(gt=0, le=MAX_AMOUNT)
    max_order_size_usdt: float = Field(gt=0, le=MAX_AMOUNT)

    @model_validator(mode="after")
    def _range_ordered(self) -> RiskSection:
        if self.min_order_size_usdt > self.max_order_size_usdt:
            raise FieldRuleError(
                "min_order_size_usdt",
                f"must be <= max_order_size_usdt = {self.max_order_size_usdt} "
                f"(got {self.min_order_size_usdt}): otherwise no order size is allowed",
            )
        return self


class PrecisionSection(_Section):
    """Exchange filters. ``tick_size``/``step_size`` default to 10^-precision when not given."""

    price_precision: int = Field(ge=0, le=8)
    quantity_precision: int = Field(ge=0, le=8)
    min_notional: float = Field(gt=0, le=MAX_AMOUNT)
    tick_size: float | None = Field(default=None, gt=0, le=MAX_AMOUNT)
    step_size: float | None = Field(default=None, gt=0, le=MAX_AMOUNT)
    min_qty: float | None = Field(default=None, gt=0, le=MAX_AMOUNT)
    max_qty: float | None = Field(default=None, gt=0, le=MAX_AMOUNT)

    @model_validator(mode="after")
    def _qty_range_ordered(self) -> PrecisionSection:
        if self.min_qty is not None and self.max_qty is not None and self.min_qty > self.max_qty:
            raise FieldRuleError("min_qty", f"must be <= max_qty = {self.max_qty} (got {self.min_qty})")
        return self


class RateLimitsSection(_Section):
    """Order pacing (entries per bar close, orders per 60 s) and the live request-weight budget."""

    orders_per_second: int = Field(ge=1, le=10_000)
    orders_per_minute: int = Field(ge=1, le=1_000_000)
    weight_per_minute: int = Field(ge=1, le=1_000_000)


class WebsocketSection(_Section):
    """Live stream keep-alive and reconnect policy."""

    ping_interval: int = Field(ge=1, le=3600)
    reconnect_timeout: int = Field(ge=1, le=3600)
    max_reconnect_attempts: int = Field(ge=0, le=10_000)


class FeesSection(_Section):
    """Commission rates as fractions of notional (0.0002 = 2 bps); never negative in gridctl.

    Both rates are required when the section is written; without the section the venue uses VIP0.
    """

    maker: float = Field(ge=0, le=0.01)
    taker: float = Field(ge=0, le=0.01)


class Bracket(_Section):
    """One maintenance-margin tier: notional range, maintenance margin ratio, cum amount, max leverage."""

    notional_floor: float = Field(ge=0, le=MAX_AMOUNT)
    notional_cap: float = Field(gt=0, le=MAX_AMOUNT)
    maint_margin_ratio: float = Field(gt=0, lt=1)
    cum: float = Field(ge=0, le=MAX_AMOUNT)
    max_leverage: float = Field(gt=0, le=125)


class MarginSection(_Section):
    """Maintenance-margin brackets per ccxt symbol, in the exchange's order (bracket 1 first)."""

    brackets: dict[str, list[Bracket]]
    #: Fraction of the liquidated notional charged on liquidation instead of the remaining maintenance
    #: margin (None: the remaining maintenance margin is lost, as Binance passes it to the insurance fund).
    liquidation_clearance_fee: float | None = Field(default=None, ge=0, le=0.5)

    @field_validator("brackets")
    @classmethod
    def _tiers_consistent(cls, value: dict[str, list[Bracket]]) -> dict[str, list[Bracket]]:
        for symbol, tiers in value.items():
            if _CCXT_SYMBOL_RE.match(symbol) is None:
                raise ValueError(f"{symbol!r} is not a ccxt USD-M symbol like 'BTC/USDT:USDT'")
            _check_tiers(symbol, tiers)
        return value


def _check_tiers(symbol: str, tiers: list[Bracket]) -> None:
    """Brackets must start at 0, be contiguous and sorted, and carry the exchange's cum amounts.

    Binance defines ``cum_i = cum_{i-1} + floor_i * (mmr_i - mmr_{i-1})`` so that maintenance margin is
    continuous across a tier boundary; a typo in any number breaks that identity.
    """
    if not tiers:
        raise ValueError(f"{symbol}: needs at least one bracket")
    if tiers[0].notional_floor != 0 or tiers[0].cum != 0:
        raise ValueError(f"{symbol}: bracket 1 must start at notional_floor 0 with cum 0")
    for i, tier in enumerate(tiers, start=1):
        if tier.notional_cap <= tier.notional_floor:
            raise ValueError(f"{symbol}: bracket {i} notional_cap must be above its notional_floor")
        if i == 1:
            continue
        prev = tiers[i - 2]
        if tier.notional_floor != prev.notional_cap:
            raise ValueError(
                f"{symbol}: bracket {i} notional_floor {tier.notional_floor} must equal bracket {i - 1} "
                f"notional_cap {prev.notional_cap} (brackets sorted and contiguous)"
            )
        if tier.maint_margin_ratio < prev.maint_margin_ratio or tier.max_leverage > prev.max_leverage:
            raise ValueError(f"{symbol}: bracket {i} must not lower maint_margin_ratio or raise max_leverage")
        expected_cum = prev.cum + tier.notional_floor * (tier.maint_margin_ratio - prev.maint_margin_ratio)
        if not math.isclose(tier.cum, expected_cum, rel_tol=1e-9, abs_tol=1e-6):
            raise ValueError(
                f"{symbol}: bracket {i} cum {tier.cum} should be {expected_cum:g} "
                "(cum_prev + notional_floor * (mmr - mmr_prev))"
            )


# ----------------------------------------------------------------------------------------------------
# Per-symbol exchange rules (Binance exchangeInfo filters and leverage brackets, one entry per symbol)
# ----------------------------------------------------------------------------------------------------


class SymbolRules(_Section):
    """One symbol's exchange rules, as Binance USD-M publishes them in exchangeInfo and leverageBracket.

    PRICE_FILTER ``tickSize``; LOT_SIZE ``stepSize``/``minQty``/``maxQty``; MIN_NOTIONAL ``notional``;
    MARKET_LOT_SIZE ``minQty``/``maxQty``; PERCENT_PRICE ``multiplierUp``/``multiplierDown`` (a BUY limit
    price may not exceed mark * up, a SELL limit price may not be below mark * down); MAX_NUM_ORDERS and
    MAX_NUM_ALGO_ORDERS (open orders, and open conditional orders such as STOP_MARKET, per symbol).
    Leverage brackets stay in ``margin.brackets`` (a snapshot file fills them too).
    """

    tick_size: float = Field(gt=0, le=MAX_AMOUNT)
    step_size: float = Field(gt=0, le=MAX_AMOUNT)
    min_qty: float = Field(gt=0, le=MAX_AMOUNT)
    max_qty: float = Field(gt=0, le=MAX_AMOUNT)
    min_notional: float = Field(gt=0, le=MAX_AMOUNT)
    market_min_qty: float = Field(gt=0, le=MAX_AMOUNT)
    market_max_qty: float = Field(gt=0, le=MAX_AMOUNT)
    percent_price_up: float = Field(gt=1, le=10)
    percent_price_down: float = Field(gt=0, lt=1)
    max_num_orders: int = Field(ge=1, le=100000)
    max_num_algo_orders: int = Field(ge=1, le=100000)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SymbolRules:
        if self.min_qty > self.max_qty:
            raise FieldRuleError("min_qty", f"must be <= max_qty = {self.max_qty} (got {self.min_qty})")
        if self.market_min_qty > self.market_max_qty:
            raise FieldRuleError(
                "market_min_qty",
                f"must be <= market_max_qty = {self.market_max_qty} (got {self.market_min_qty})",
            )
        return self


def check_symbol_rules(value: dict[str, SymbolRules]) -> dict[str, SymbolRules]:
    """Keys are ccxt USD-M symbols like ``BTC/USDT:USDT``."""
    bad = [symbol for symbol in value if _CCXT_SYMBOL_RE.match(symbol) is None]
    if bad:
        raise ValueError(f"{bad} are not ccxt USD-M symbols like 'BTC/USDT:USDT'")
    return value


def precision_rules(p: PrecisionSection) -> SymbolRules:
    """The legacy single ``precision`` block as rules: no market-lot, percent-price or order-count limit.

    Binance publishes those filters for every symbol; a legacy block does not carry them, so they are
    unlimited here (``math.inf`` / 10^5 orders) and the results name the block as the rules' source.
    """
    tick = p.tick_size if p.tick_size is not None else 10.0**-p.price_precision
    step = p.step_size if p.step_size is not None else 10.0**-p.quantity_precision
    min_qty = p.min_qty if p.min_qty is not None else step
    max_qty = p.max_qty if p.max_qty is not None else math.inf
    return SymbolRules.model_construct(
        tick_size=tick,
        step_size=step,
        min_qty=min_qty,
        max_qty=max_qty,
        min_notional=p.min_notional,
        market_min_qty=min_qty,
        market_max_qty=max_qty,
        percent_price_up=math.inf,
        percent_price_down=0.0,
        max_num_orders=100000,
        max_num_algo_orders=100000,
    )


class VenueConfig(_Section):
    """An exchange account: the legacy venue sections plus fees and margin brackets."""

    venue: VenueSection
    api: ApiSection
    trading: TradingSection
    risk: RiskSection
    # Legacy: one rule set, used only for the one symbol a venue lists; per-symbol rules replace it.
    precision: PrecisionSection | None = None
    rate_limits: RateLimitsSection
    websocket: WebsocketSection
    symbols: list[str] = Field(default_factory=list)
    fees: FeesSection = Field(
        default_factory=lambda: FeesSection(maker=DEFAULT_MAKER_FEE, taker=DEFAULT_TAKER_FEE)
    )
    margin: MarginSection | None = None
    # NEW: exchange rules per ccxt symbol, inline or from ``symbol_rules_file`` (a dated snapshot named
    # relative to the venue file; the loader reads it into ``symbol_rules`` and ``margin.brackets``).
    symbol_rules: dict[str, SymbolRules] | None = None
    symbol_rules_file: str | None = None

    _origin: str = PrivateAttr(default="<in memory>")
    # Provenance of api credentials, filled by the loader: {"api.api_key": CredentialSource, ...}.
    _credentials: dict[str, Any] = PrivateAttr(default_factory=dict)
    # The symbol_rules_file the loader read into symbol_rules (path and snapshot date), for messages.
    _rules_file: str | None = PrivateAttr(default=None)

    @field_validator("symbols")
    @classmethod
    def _symbols_shape(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if _VENUE_SYMBOL_RE.match(s) is None]
        if bad:
            raise ValueError(f"{bad} are not USD-M perpetual symbols like 'BTCUSDT-PERP'")
        return value

    @field_validator("symbol_rules_file")
    @classmethod
    def _file_read_by_loader(cls, value: str | None) -> str | None:
        if value is not None:  # configs.loader reads the file into symbol_rules and drops this key
            raise ValueError("is read by the config loader from a venue file; in memory give symbol_rules")
        return value

    @field_validator("symbol_rules")
    @classmethod
    def _symbol_rules_keys(cls, value: dict[str, SymbolRules] | None) -> dict[str, SymbolRules] | None:
        return None if value is None else check_symbol_rules(value)

    @model_validator(mode="after")
    def _one_rules_source(self) -> VenueConfig:
        if self.precision is not None and self.symbol_rules is not None:
            raise FieldRuleError(
                "precision",
                "a venue with symbol_rules (per-symbol exchange rules) must not also have the single "
                "precision block: one rule set for every symbol is what symbol_rules replaces; remove it",
            )
        if self.precision is None and self.symbol_rules is None:
            raise FieldRuleError(
                "symbol_rules",
                "no exchange rules: give symbol_rules (or symbol_rules_file) with each symbol's tick, lot "
                "and filters, or the legacy precision block for a one-symbol venue",
            )
        return self

    @model_validator(mode="after")
    def _leverage_within_risk(self) -> VenueConfig:
        if self.trading.leverage > self.risk.max_leverage:
            raise FieldRuleError(
                "trading.leverage",
                f"must be <= risk.max_leverage = {self.risk.max_leverage} (got {self.trading.leverage})",
            )
        return self

    @property
    def origin(self) -> str:
        """Where this config came from (file path, plus ``--set`` overrides), for messages and results."""
        return self._origin

    def rules_for(self, symbol: str) -> SymbolRules:
        """Exchange rules of a ccxt symbol; a symbol without rules is an error naming it and the source.

        Rules never come from another symbol: the legacy ``precision`` block counts as the rules of the
        venue's only listed symbol and of no other.
        """
        if self.symbol_rules is not None:
            if symbol not in self.symbol_rules:
                have = ", ".join(sorted(self.symbol_rules)) or "none"
                source = self._rules_file or f"{self.origin}: symbol_rules"
                raise GridctlError(
                    f"{self.origin}: no exchange rules for {symbol!r} in {source} (has: {have}); add the "
                    "symbol's exchangeInfo filters (tick, lot, min notional, market lot, percent price, "
                    "order limits) and leverage brackets to that table"
                )
            return self.symbol_rules[symbol]
        assert self.precision is not None  # _one_rules_source
        venue_symbol = _ccxt_to_venue_symbol(symbol)
        if self.symbols != [venue_symbol]:
            raise GridctlError(
                f"{self.origin}: no exchange rules for {symbol!r}: the legacy precision block is one rule "
                f"set and symbols lists {self.symbols} (it counts only for a venue listing that one symbol); "
                "give per-symbol rules in symbol_rules or symbol_rules_file"
            )
        return precision_rules(self.precision)

    def rules_source(self, symbol: str) -> str:
        """Where ``rules_for(symbol)`` came from, for results and messages."""
        if self.symbol_rules is None:
            return f"{self.origin}: precision (legacy single-symbol block)"
        return f"{self._rules_file or self.origin + ': symbol_rules'} [{symbol}]"

    @property
    def fees_source(self) -> str:
        """Where the fee rates come from, for results: the venue file or the VIP0 default."""
        return "venue config" if "fees" in self.model_fields_set else "default Binance USD-M VIP0"

    def brackets_for(self, symbol: str) -> list[Bracket]:
        """Maintenance-margin brackets of a ccxt symbol; a missing table is an error, never a guess."""
        table = self.margin.brackets if self.margin is not None else {}
        if symbol not in table:
            have = ", ".join(sorted(table)) or "none"
            raise GridctlError(
                f"{self.origin}: margin.brackets has no entry for {symbol!r} (has: {have}); add the "
                "exchange's leverage brackets for it to the venue file"
            )
        return list(table[symbol])
