"""The exchange contract the live bridge codes against: value types, errors and the ``Gateway`` protocol.

The account side of the bar loop (orders, fills, positions, balances, funding income, account settings)
goes through :class:`Gateway`; ``live_bridge.exchange`` implements it over the real ccxt client. Market
data (closed bars, funding settlements, the premium index) comes from ``live_bridge.feed.ExchangeFeed``
only, which paper mode uses without credentials and which connects to the venue's market-data endpoint
(``api.ws_url``) with its own reconnect policy.

Quantities are base-asset amounts, prices quote per base,
timestamps epoch milliseconds (UTC). Sides are lower-case ``buy``/``sell``; position sides are
``LONG``/``SHORT`` (hedge mode). ``client_id`` is the order id the bridge chooses (Binance
``newClientOrderId``), so orders can be matched to grid slots after a restart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

PositionSide = Literal["LONG", "SHORT"]
OrderSide = Literal["buy", "sell"]
OrderType = Literal["limit", "stop_market", "take_profit_market", "market"]
Liquidity = Literal["maker", "taker"]
MarginType = Literal["ISOLATED", "CROSSED"]

#: Order statuses an :class:`OpenOrder` can carry (ccxt unified, lower case).
ORDER_STATUSES: tuple[str, ...] = ("open", "closed", "canceled", "expired", "rejected")


@dataclass(frozen=True)
class MarketRules:
    """Trading rules of one symbol as the exchange reports them (not the venue file): every filter of
    ``FILTER_FIELDS`` (the names are the venue file's ``symbol_rules`` fields) and the precisions."""

    symbol: str
    tick_size: float
    step_size: float
    min_qty: float
    max_qty: float
    min_notional: float
    price_precision: int
    qty_precision: int
    market_min_qty: float = math.nan
    market_max_qty: float = math.nan
    percent_price_up: float = math.nan
    percent_price_down: float = math.nan
    max_num_orders: float = math.nan
    max_num_algo_orders: float = math.nan


#: MarketRules / venue ``symbol_rules`` field -> (Binance exchangeInfo filterType, key).
FILTER_FIELDS: dict[str, tuple[str, str]] = {
    "tick_size": ("PRICE_FILTER", "tickSize"),
    "step_size": ("LOT_SIZE", "stepSize"),
    "min_qty": ("LOT_SIZE", "minQty"),
    "max_qty": ("LOT_SIZE", "maxQty"),
    "min_notional": ("MIN_NOTIONAL", "notional"),
    "market_min_qty": ("MARKET_LOT_SIZE", "minQty"),
    "market_max_qty": ("MARKET_LOT_SIZE", "maxQty"),
    "percent_price_up": ("PERCENT_PRICE", "multiplierUp"),
    "percent_price_down": ("PERCENT_PRICE", "multiplierDown"),
    "max_num_orders": ("MAX_NUM_ORDERS", "limit"),
    "max_num_algo_orders": ("MAX_NUM_ALGO_ORDERS", "limit"),
}


def filter_values(market: dict[str, Any]) -> dict[str, float]:
    """Every ``FILTER_FIELDS`` value of a ccxt market entry (its ``info.filters``); NaN when missing."""
    info = market.get("info") or {}
    filters = {f.get("filterType"): f for f in info.get("filters", []) if isinstance(f, dict)}
    out = {}
    for name, (kind, key) in FILTER_FIELDS.items():
        row = filters.get(kind, {})
        raw = row.get(key, row.get("minNotional") if kind == "MIN_NOTIONAL" else None)
        try:
            out[name] = float(raw) if raw is not None else math.nan
        except (TypeError, ValueError):
            out[name] = math.nan
    return out


def rules_from_market(market: dict[str, Any]) -> MarketRules:
    """The exchange's ``MarketRules`` from a ccxt market entry; GatewayError naming what is missing."""
    info = market.get("info") or {}
    values = filter_values(market)
    missing = [k for k, v in values.items() if not math.isfinite(v)]
    symbol = str(market.get("id") or info.get("symbol") or market.get("symbol"))
    try:
        precision = int(info["pricePrecision"]), int(info["quantityPrecision"])
    except (KeyError, TypeError, ValueError):
        missing.append("pricePrecision/quantityPrecision")
    if missing:
        raise GatewayError(f"symbol {symbol!r}: exchangeInfo filters incomplete (no {', '.join(missing)})")
    return MarketRules(symbol=symbol, price_precision=precision[0], qty_precision=precision[1], **values)


@dataclass(frozen=True)
class OrderRequest:
    """One order to send. ``price`` for limit orders, ``stop_price`` for stop/take-profit market orders."""

    client_id: str
    position_side: PositionSide
    side: OrderSide
    type: OrderType
    qty: float
    price: float | None = None
    stop_price: float | None = None
    post_only: bool = False
    reduce_only: bool = False


@dataclass(frozen=True)
class OpenOrder:
    """An order as the exchange knows it.

    ``exchange_id`` of a conditional (stop / take-profit) order is its Algo-service id; its fills carry
    the id of the market order it became when triggered, matched back through ``client_id``.
    """

    client_id: str
    exchange_id: str
    position_side: PositionSide
    side: OrderSide
    type: OrderType
    qty: float
    filled_qty: float
    price: float | None
    stop_price: float | None
    status: str


@dataclass(frozen=True)
class Fill:
    """One execution (Binance user trade). ``fee`` is in quote currency, positive = paid.

    ``client_id`` is "" when the exchange cannot say which order it belongs to (not placed by us).
    """

    trade_id: str
    client_id: str
    exchange_id: str
    position_side: PositionSide
    side: OrderSide
    price: float
    qty: float
    fee: float
    liquidity: Liquidity
    ts_ms: int


@dataclass(frozen=True)
class Position:
    """One side of a hedge-mode position. ``qty`` >= 0; ``liquidation_price`` None when there is none."""

    position_side: PositionSide
    qty: float
    entry_price: float
    unrealized_pnl: float
    liquidation_price: float | None


@dataclass(frozen=True)
class Account:
    """Futures wallet of the quote asset and the symbol's positions keyed by ``LONG``/``SHORT``.

    ``margin_ratio`` is maintenance margin / margin balance, None when the exchange reports no margin.
    """

    wallet_balance: float
    equity: float
    available: float
    margin_ratio: float | None
    positions: dict[str, Position] = field(default_factory=dict)
    ts_ms: int = 0


class GatewayError(Exception):
    """Base of every error a gateway raises."""


class PostOnlyRejected(GatewayError):  # noqa: N818 - names fixed by the live-bridge contract
    """A post-only (GTX) order would have taken liquidity and was rejected (Binance -5022)."""


class RateLimited(GatewayError):  # noqa: N818 - names fixed by the live-bridge contract
    """The exchange (429/418) or the request pacer refused the request; wait ``retry_after_s``."""

    def __init__(self, msg: str, retry_after_s: float = 1.0) -> None:
        super().__init__(msg)
        self.retry_after_s = float(retry_after_s)


class ExchangeUnavailable(GatewayError):  # noqa: N818 - names fixed by the live-bridge contract
    """5xx, timeout or network failure: the outcome of the request is unknown."""


class OrderRejected(GatewayError):  # noqa: N818 - names fixed by the live-bridge contract
    """The exchange refused the order (invalid price/qty, insufficient margin, ...)."""

    def __init__(self, code: int | None, msg: str) -> None:
        super().__init__(f"order rejected ({code}): {msg}")
        self.code = code
        self.msg = msg


class AuthError(GatewayError):
    """Credentials missing, wrong, or lacking permission."""


@runtime_checkable
class Gateway(Protocol):
    """What the live bridge needs from an exchange (one account, hedge mode, one symbol at a time)."""

    def server_time_ms(self) -> int:
        """Exchange clock in epoch ms."""
        ...

    def market_rules(self, symbol: str) -> MarketRules:
        """Every exchange filter of ``symbol`` (``FILTER_FIELDS``) and its precisions."""
        ...

    def account(self, symbol: str) -> Account:
        """Wallet, equity, available margin and the symbol's positions."""
        ...

    def open_orders(self, symbol: str) -> list[OpenOrder]:
        """Every order resting on ``symbol``."""
        ...

    def place(self, symbol: str, req: OrderRequest) -> OpenOrder:
        """Send one order; raises PostOnlyRejected / OrderRejected / RateLimited / ExchangeUnavailable."""
        ...

    def cancel(self, symbol: str, client_id: str) -> None:
        """Cancel by client id; an unknown (already gone) order is not an error."""
        ...

    def fills_since(self, symbol: str, since_ms: int, now_ms: int | None = None) -> list[Fill]:
        """Executions at or after ``since_ms``, oldest first (``now_ms``: exchange time, if known)."""
        ...

    def funding_payments_since(self, symbol: str, since_ms: int) -> list[tuple[int, float]]:
        """(settlement time ms, amount in quote; negative = paid) at or after ``since_ms``."""
        ...

    def accounts(self, symbols: Sequence[str]) -> dict[str, Account]:
        """``account`` for every symbol of a basket from one read of the account and its positions."""
        ...

    def funding_payments_all(
        self, symbols: Sequence[str], since_ms: int
    ) -> dict[str, list[tuple[int, float]]]:
        """``funding_payments_since`` for every symbol of a basket from one income history."""
        ...

    def hedge_mode(self) -> bool:
        """True when the account is in dual-side (hedge) position mode."""
        ...

    def set_hedge_mode(self, on: bool) -> None:
        """Switch dual-side position mode (no-op when already set)."""
        ...

    def set_leverage(self, symbol: str, lev: int) -> None:
        """Set the symbol's leverage; refuses a value above the configured ``risk.max_leverage``."""
        ...

    def set_margin_type(self, symbol: str, margin_type: MarginType) -> None:
        """ISOLATED or CROSSED (no-op when already set)."""
        ...
