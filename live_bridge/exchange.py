"""``CcxtGateway``: the :class:`~live_bridge.gateway.Gateway` over the real ccxt ``binanceusdm`` client.

The venue file decides everything about the connection:

* ``venue.name`` + ``venue.account_type`` pick the ccxt exchange id (``VENUE_CLIENTS``); anything else is
  refused.
* ``api.base_url`` replaces every API host ccxt uses (production, testnet or the test emulator);
  without it ``api.testnet`` chooses ccxt's Binance demo-trading hosts over production. A testnet venue
  pointing at the production host (or the reverse) is refused.
* ``api.api_key`` / ``api.api_secret`` sign requests; ``live=True`` first runs
  :func:`configs.secrets.require_live_credentials` (real ``${ENV}`` values only).
* ``rate_limits`` feed the run's one ``RequestPacer`` (``live_bridge.pacing``): request weight and order
  count as Binance counts them (its ``X-MBX-*`` counters read from every answer), ``Retry-After`` on
  429 and 418 bans honoured; a request that does not fit waits up to ``max_wait_s`` and is otherwise
  refused with ``RateLimited`` before it is sent. ccxt's own throttle is switched off so the pacer is
  the only pacing.
* ``risk.max_leverage`` caps ``set_leverage``.

Conditional orders (``stop_market`` / ``take_profit_market``) go where ccxt 4.5 sends them, Binance's
Algo service (``/fapi/v1/algoOrder``); ``open_orders`` lists both kinds and ``cancel`` finds either.
Binance user trades carry no client order id: the gateway remembers the exchange id of every order it
placed or listed and asks the exchange (one ``GET /fapi/v1/order``) for ids it has not seen.

The gateway never retries: every failure is raised as a gateway error and the bridge decides (a
``place`` that raised ``ExchangeUnavailable`` may have reached the exchange: ask ``open_orders``).
Requests are serialized (one at a time per gateway), so threads may share one (the ops API does not
call the gateway: its commands are applied by the bar loop).

Symbols may be given as the venue file writes them (``BTCUSDT-PERP``), as ccxt unified symbols
(``BTC/USDT:USDT``) or as exchange ids (``BTCUSDT``).
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt

from gridctl.configs.errors import GridctlError
from gridctl.configs.schema import VenueConfig
from gridctl.configs.secrets import require_live_credentials
from gridctl.data.download import make_client
from gridctl.live_bridge.gateway import (
    Account,
    AuthError,
    ExchangeUnavailable,
    Fill,
    GatewayError,
    MarginType,
    MarketRules,
    OpenOrder,
    OrderRejected,
    OrderRequest,
    Position,
    PostOnlyRejected,
    RateLimited,
    rules_from_market,
)
from gridctl.live_bridge.pacing import RequestPacer

T = TypeVar("T")

#: (venue.name, venue.account_type) -> ccxt exchange id.
VENUE_CLIENTS: dict[tuple[str, str], str] = {("BINANCE", "PERPETUAL_LINEAR"): "binanceusdm"}
PRODUCTION_HOSTS = ("fapi.binance.com",)
TEST_HOST_MARKERS = ("testnet", "demo")

#: Binance USD-M request weights (IP limit) of the endpoints the gateway calls.
WEIGHTS: dict[str, int] = {
    "time": 1,
    "exchangeInfo": 1,
    "account": 5,
    "positionRisk": 5,
    "leverageBracket": 1,
    "openOrders": 1,
    "order": 1,
    "getOrder": 1,
    "userTrades": 5,
    "income": 30,
    "dualGet": 30,
    "dualPost": 1,
    "leverage": 1,
    "marginType": 1,
}
USER_TRADES_WINDOW_MS = 7 * 86_400_000 - 1
PAGE = 1000

_CODE_RE = re.compile(r'"code"\s*:\s*"?(-?\d+)')
_AUTH_CODES = {-1002, -1022, -2014, -2015}
_RATE_CODES = {-1003, -1015}
_UNAVAILABLE_CODES = {-1000, -1001, -1006, -1007, -1008, -1021}
_UNKNOWN_ORDER_CODES = {-2011, -2013}
_TYPES = {
    "limit": "LIMIT",
    "market": "MARKET",
    "stop_market": "STOP_MARKET",
    "take_profit_market": "TAKE_PROFIT_MARKET",
}
_ALGO_TYPES = ("stop_market", "take_profit_market")
#: Binance ``selfTradePreventionMode`` sent with every order: an order of ours that would trade against
#: another of ours resting on the book expires the resting one (the maker), never the arriving one.
STP_MODE = "EXPIRE_MAKER"


def exchange_id_for(venue: VenueConfig) -> str:
    """The ccxt exchange id ``venue.name`` / ``venue.account_type`` select; GridctlError otherwise."""
    key = (venue.venue.name.upper(), venue.venue.account_type)
    if key not in VENUE_CLIENTS:
        known = ", ".join(f"{n}/{t}" for n, t in VENUE_CLIENTS)
        raise GridctlError(
            f"{venue.origin}: venue.name: the live bridge has no exchange client for "
            f"{venue.venue.name!r} ({venue.venue.account_type}); supported: {known}"
        )
    return VENUE_CLIENTS[key]


def make_exchange_client(venue: VenueConfig, live: bool = True, timeout_ms: int = 10_000) -> ccxt.Exchange:
    """A ccxt client wired from the venue file: exchange id, endpoints, credentials (see module doc)."""
    exchange = exchange_id_for(venue)
    base_url = venue.api.base_url
    if base_url is not None:
        host = (urlsplit(base_url).hostname or "").lower()
        if venue.api.testnet and host in PRODUCTION_HOSTS:
            raise GridctlError(
                f"{venue.origin}: api.base_url: {base_url} is the production host but api.testnet is true"
            )
        if not venue.api.testnet and any(m in host for m in TEST_HOST_MARKERS):
            raise GridctlError(
                f"{venue.origin}: api.base_url: {base_url} is a test host but api.testnet is false"
            )
        try:
            client = make_client(exchange, base_url)
        except GridctlError as err:
            raise GridctlError(f"{venue.origin}: api.base_url: {err}") from None
    else:
        client = make_client(exchange)
        if venue.api.testnet:
            client.enable_demo_trading(True)
    client.enableRateLimit = False  # the gateway's RequestPacer paces requests
    client.timeout = timeout_ms
    if live:
        require_live_credentials(venue)
        assert venue.api.api_key is not None and venue.api.api_secret is not None
        client.apiKey = venue.api.api_key.get_secret_value()
        client.secret = venue.api.api_secret.get_secret_value()
    return client


def _on_grid(what: str, value: float | None, unit: float, decimals: int) -> float:
    """``value`` snapped to the exchange grid; OrderRejected when it is not (nearly) on it.

    ccxt would truncate an off-grid amount silently; a size or price the bridge did not mean is refused.
    """
    assert value is not None
    units = value / unit
    if abs(units - round(units)) > 1e-6:
        raise OrderRejected(None, f"{what} {value} is not a multiple of the exchange's {unit}")
    return round(round(units) * unit, max(decimals, 0) + 2)


F = TypeVar("F", bound=Callable[..., Any])
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _fail_closed(method: F) -> F:
    """An answer the gateway cannot read raises ExchangeUnavailable naming the call, never a default."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except _MALFORMED as err:
            raise ExchangeUnavailable(
                f"{method.__name__}: malformed answer ({type(err).__name__}: {err})"
            ) from err

    return wrapper  # type: ignore[return-value]


def _error_code(err: Exception) -> int | None:
    match = _CODE_RE.search(str(err))
    return int(match.group(1)) if match else None


def _fnum(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class CcxtGateway:
    """The live bridge's exchange, through ccxt (see the module docstring for the wiring)."""

    def __init__(
        self,
        venue: VenueConfig,
        *,
        live: bool = True,
        client: ccxt.Exchange | None = None,
        max_wait_s: float = 2.0,
        timeout_ms: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        pacer: RequestPacer | None = None,
    ) -> None:
        self.venue = venue
        self.client = client if client is not None else make_exchange_client(venue, live, timeout_ms)
        self.client.enableLastJsonResponse = True  # lets _call tell an unparseable answer from data
        self.client.enableLastHttpResponse = True
        # The run's one pacer (share it with the bar feed: ``pacer.watch(feed.client)``).
        self.pacer = pacer or RequestPacer.for_venue(venue, max_wait_s=max_wait_s, clock=clock, sleep=sleep)
        self.pacer.watch(self.client)
        self.max_leverage = venue.risk.max_leverage
        self._lock = threading.RLock()
        self._hedge: bool | None = None
        self._client_ids: dict[str, str] = {}  # exchange order id -> client id
        self._algo_ids: set[str] = set()  # client ids of conditional (Algo service) orders

    # -- plumbing -----------------------------------------------------------------------------------
    def _call(
        self,
        what: str,
        weight: int,
        fn: Callable[[], T],
        orders: int = 0,
        post_only: bool = False,
        essential: bool = True,
    ) -> T:
        """Pass the pacer, run one ccxt call, translate its exceptions into gateway errors
        (``essential=False``: a report, which may not spend the weight kept for protection)."""
        self.pacer.acquire(weight, orders, what, essential)
        with self._lock:  # one request at a time: the bar loop and the ops API share the client
            self.client.last_json_response = None
            self.client.last_http_response = None
            self.client.last_response_headers = None
            try:
                result = fn()
            except ccxt.BaseError as err:
                raise self._translate(what, err, post_only, orders > 0) from err
            except _MALFORMED as err:  # ccxt choked on the answer
                raise ExchangeUnavailable(f"{what}: malformed answer ({type(err).__name__}: {err})") from err
            if self.client.last_json_response is None and self.client.last_http_response:
                raise ExchangeUnavailable(f"{what}: the exchange answered something that is not JSON")
            return result

    def _translate(
        self, what: str, err: ccxt.BaseError, post_only: bool, order: bool = False
    ) -> GatewayError:
        code = _error_code(err)
        text = f"{what}: {err}"
        if (
            code == -5022
            or isinstance(err, ccxt.OrderNotFillable)
            or (post_only and isinstance(err, ccxt.OrderImmediatelyFillable))
        ):
            return PostOnlyRejected(text)
        if isinstance(err, ccxt.DDoSProtection | ccxt.RateLimitExceeded) or code in _RATE_CODES:
            # the pacer read the answer and blocks what it says (Retry-After; a 418 without one: 120 s)
            headers = self.client.last_response_headers or {}
            retry = _fnum(headers.get("Retry-After")) if hasattr(headers, "get") else None
            if retry is None:
                retry = max(self.pacer.blocked_for(order), 1.0)
            return RateLimited(text, retry_after_s=retry)
        if isinstance(err, ccxt.AuthenticationError | ccxt.PermissionDenied) or code in _AUTH_CODES:
            return AuthError(text)
        if isinstance(err, ccxt.NetworkError) or code in _UNAVAILABLE_CODES:
            return ExchangeUnavailable(text)
        if isinstance(
            err, ccxt.InvalidOrder | ccxt.InsufficientFunds | ccxt.OrderNotFound
        ) or what.startswith("place"):
            return OrderRejected(code, str(err))
        if isinstance(err, ccxt.BadResponse | ccxt.NullResponse):
            return ExchangeUnavailable(text)
        return GatewayError(text)

    def _market(self, symbol: str) -> dict[str, Any]:
        if not self.client.markets:
            self._call("load markets", WEIGHTS["exchangeInfo"], self.client.load_markets)
        markets = self.client.markets
        if symbol in markets:
            return markets[symbol]
        market_id = symbol.removesuffix("-PERP")
        found = [m for m in markets.values() if m["id"] == market_id and m.get("linear")]
        if not found:
            raise GatewayError(f"symbol {symbol!r}: the exchange lists no such USD-M market")
        return found[0]

    def _unified(self, symbol: str) -> str:
        return str(self._market(symbol)["symbol"])

    def follow_time(self, exchange_ms: int) -> None:
        """Timestamp signed requests on the exchange's clock (``exchange_ms`` was its time just now), so
        a drifting local clock never trips Binance's recvWindow (-1021)."""
        self.client.options["timeDifference"] = int(time.time() * 1000) - int(exchange_ms)

    # -- public data --------------------------------------------------------------------------------
    @_fail_closed
    def server_time_ms(self) -> int:
        """Exchange clock in epoch ms."""
        return int(self._call("server time", WEIGHTS["time"], self.client.fetch_time))

    def market_rules(self, symbol: str) -> MarketRules:
        """Every filter of ``symbol`` from the exchange's markets (``gateway.rules_from_market``)."""
        return rules_from_market(self._market(symbol))

    # -- account ------------------------------------------------------------------------------------
    @_fail_closed
    def account(self, symbol: str) -> Account:
        """Totals of the futures wallet (v3 account) and ``symbol``'s positions (v3 positionRisk).

        Unless the account is known to be in one-way mode, both ``LONG`` and ``SHORT`` are present (qty 0
        when flat).
        """
        unified = self._unified(symbol)
        raw = self._call("account", WEIGHTS["account"], lambda: self.client.fapiPrivateV3GetAccount())
        weight = WEIGHTS["positionRisk"] + (0 if self.client.options.get("leverageBrackets") else 1)
        rows = self._call("positions", weight, lambda: self.client.fetch_positions([unified]))
        return self._account_from(raw, rows)

    @_fail_closed
    def accounts(self, symbols: Sequence[str]) -> dict[str, Account]:
        """``account`` for every symbol of a basket from ONE v3 account read and ONE v3 positionRisk read
        (ccxt asks positionRisk without a symbol: every symbol's rows in one answer, weight 5 either way).

        Each symbol's ``Account`` carries the account's totals and that symbol's positions only, exactly
        as ``account(symbol)`` would; a symbol the answer has no rows for gets flat sides (hedge mode).
        """
        unified = {sym: self._unified(sym) for sym in symbols}
        raw = self._call("account", WEIGHTS["account"], lambda: self.client.fapiPrivateV3GetAccount())
        weight = WEIGHTS["positionRisk"] + (0 if self.client.options.get("leverageBrackets") else 1)
        rows = self._call("positions", weight, lambda: self.client.fetch_positions(list(unified.values())))
        return {
            sym: self._account_from(raw, [r for r in rows if r.get("symbol") == u])
            for sym, u in unified.items()
        }

    def _account_from(self, raw: Any, rows: list[Any]) -> Account:
        positions: dict[str, Position] = {}
        for row in rows:
            qty = float(row.get("contracts") or 0.0)
            info = row.get("info", {})
            side = str(info.get("positionSide", "BOTH"))
            if side == "BOTH":
                amt = float(info.get("positionAmt") or 0.0)
                side, qty = ("LONG" if amt >= 0 else "SHORT"), abs(amt)
            liq = _fnum(row.get("liquidationPrice"))
            positions[side] = Position(
                position_side=side,  # type: ignore[arg-type]
                qty=qty,
                entry_price=float(row.get("entryPrice") or 0.0),
                unrealized_pnl=float(row.get("unrealizedPnl") or 0.0),
                liquidation_price=liq if liq else None,
            )
        if self._hedge is not False:
            for side in ("LONG", "SHORT"):
                positions.setdefault(side, Position(side, 0.0, 0.0, 0.0, None))  # type: ignore[arg-type]
        margin = float(raw["totalMarginBalance"])
        maint = float(raw.get("totalMaintMargin") or 0.0)
        return Account(
            wallet_balance=float(raw["totalWalletBalance"]),
            equity=margin,
            available=float(raw["availableBalance"]),
            margin_ratio=maint / margin if margin > 0 else None,
            positions=positions,
            ts_ms=max((int(a.get("updateTime") or 0) for a in raw.get("assets", [])), default=0),
        )

    @_fail_closed
    def hedge_mode(self) -> bool:
        """True when the account holds LONG and SHORT positions separately (dual-side mode)."""
        mode = self._call("position mode", WEIGHTS["dualGet"], lambda: self.client.fetch_position_mode())
        self._hedge = bool(mode["hedged"])
        return self._hedge

    def set_hedge_mode(self, on: bool) -> None:
        """Switch dual-side mode; already set is not an error."""
        try:
            self._call("set position mode", WEIGHTS["dualPost"], lambda: self.client.set_position_mode(on))
        except GatewayError as err:
            if _error_code(err.__cause__ or err) != -4059:  # "No need to change position side."
                raise
        self._hedge = on

    def set_leverage(self, symbol: str, lev: int) -> None:
        """Set ``symbol``'s leverage; above ``risk.max_leverage`` it is refused before any request."""
        if not 1 <= int(lev) <= self.max_leverage:
            raise OrderRejected(
                None,
                f"leverage {lev} refused: must be between 1 and risk.max_leverage = {self.max_leverage} "
                f"({self.venue.origin})",
            )
        unified = self._unified(symbol)
        self._call("set leverage", WEIGHTS["leverage"], lambda: self.client.set_leverage(int(lev), unified))

    def set_margin_type(self, symbol: str, margin_type: MarginType) -> None:
        """ISOLATED or CROSSED; already set is not an error."""
        if margin_type not in ("ISOLATED", "CROSSED"):
            raise OrderRejected(None, f"margin type {margin_type!r}: choose ISOLATED or CROSSED")
        unified = self._unified(symbol)
        mode = "isolated" if margin_type == "ISOLATED" else "cross"
        try:
            self._call(
                "set margin type", WEIGHTS["marginType"], lambda: self.client.set_margin_mode(mode, unified)
            )
        except GatewayError as err:
            cause = err.__cause__
            if not isinstance(cause, ccxt.MarginModeAlreadySet) and _error_code(cause or err) != -4046:
                raise

    # -- orders -------------------------------------------------------------------------------------
    def _is_hedge(self) -> bool:
        return self._hedge if self._hedge is not None else self.hedge_mode()

    def _to_open_order(self, order: dict[str, Any], algo: bool) -> OpenOrder:
        info = order.get("info", {})
        client_id = str(
            info.get("clientAlgoId") if algo else info.get("clientOrderId") or order.get("clientOrderId")
        )
        exchange_id = str(info.get("algoId") if algo else info.get("orderId") or order.get("id"))
        raw_type = str(info.get("orderType") if algo else info.get("origType") or info.get("type")).lower()
        if algo:
            self._algo_ids.add(client_id)
            actual = info.get("actualOrderId")
            if actual:
                self._client_ids[str(actual)] = client_id
        else:
            self._client_ids[exchange_id] = client_id
        price = _fnum(info.get("price"))
        stop = _fnum(info.get("triggerPrice") if algo else info.get("stopPrice"))
        return OpenOrder(
            client_id=client_id,
            exchange_id=exchange_id,
            position_side=str(info.get("positionSide", "BOTH")),  # type: ignore[arg-type]
            side=str(info.get("side", order.get("side") or "")).lower(),  # type: ignore[arg-type]
            type=raw_type,  # type: ignore[arg-type]
            qty=float(info.get("origQty") or info.get("quantity") or order.get("amount") or 0.0),
            filled_qty=float(info.get("executedQty") or order.get("filled") or 0.0),
            price=price if price else None,
            stop_price=stop if stop else None,
            status=str(order.get("status") or "open"),
        )

    @_fail_closed
    def open_orders(self, symbol: str) -> list[OpenOrder]:
        """Resting regular orders and untriggered conditional orders of ``symbol``."""
        unified = self._unified(symbol)
        plain = self._call(
            "open orders", WEIGHTS["openOrders"], lambda: self.client.fetch_open_orders(unified)
        )
        algo = self._call(
            "open conditional orders",
            WEIGHTS["openOrders"],
            lambda: self.client.fetch_open_orders(unified, params={"trigger": True}),
        )
        return [self._to_open_order(o, False) for o in plain] + [self._to_open_order(o, True) for o in algo]

    @_fail_closed
    def place(self, symbol: str, req: OrderRequest) -> OpenOrder:
        """Send one order (see OrderRequest); hedge mode sends positionSide and never reduceOnly."""
        unified = self._unified(symbol)
        if req.type not in _TYPES:
            raise OrderRejected(None, f"order type {req.type!r}: choose one of {sorted(_TYPES)}")
        if req.side not in ("buy", "sell") or req.position_side not in ("LONG", "SHORT"):
            raise OrderRejected(None, f"side {req.side!r} / position side {req.position_side!r} invalid")
        if not req.qty > 0:
            raise OrderRejected(None, f"quantity {req.qty} must be positive")
        if req.type == "limit" and not (req.price and req.price > 0):
            raise OrderRejected(None, "a limit order needs a positive price")
        if req.type in _ALGO_TYPES and not (req.stop_price and req.stop_price > 0):
            raise OrderRejected(None, f"a {req.type} order needs a positive stop_price")
        if req.post_only and req.type != "limit":
            raise OrderRejected(None, "post_only applies to limit orders only")
        rules = self.market_rules(symbol)
        qty = _on_grid("quantity", req.qty, rules.step_size, rules.qty_precision)
        price = (
            _on_grid("price", req.price, rules.tick_size, rules.price_precision)
            if req.type == "limit"
            else None
        )
        params: dict[str, Any] = {"clientOrderId": req.client_id}
        closing = (req.position_side == "LONG") == (req.side == "sell")
        if self._is_hedge():
            params["positionSide"] = req.position_side
            if req.reduce_only and not closing:
                raise OrderRejected(
                    None, f"reduce_only {req.side} on the {req.position_side} side would open a position"
                )
        elif req.reduce_only:
            params["reduceOnly"] = True
        if req.post_only:
            params["timeInForce"] = "GTX"
        # A market close meeting our own resting limit expires that limit (the diff places it again),
        # never the close: sent on every order, so the account's default mode does not matter.
        params["selfTradePreventionMode"] = STP_MODE
        if req.type in _ALGO_TYPES:
            params["triggerPrice"] = _on_grid(
                "stop price", req.stop_price, rules.tick_size, rules.price_precision
            )
        order = self._call(
            f"place {req.client_id}",
            WEIGHTS["order"],
            lambda: self.client.create_order(unified, _TYPES[req.type], req.side, qty, price, params),
            orders=1,
            post_only=req.post_only,
        )
        return self._to_open_order(order, req.type in _ALGO_TYPES)

    def cancel(self, symbol: str, client_id: str) -> None:
        """Cancel by client id, regular or conditional; an order the exchange does not know is fine."""
        unified = self._unified(symbol)
        kinds = [True] if client_id in self._algo_ids else [False, True]
        for algo in kinds:
            params: dict[str, Any] = {"clientOrderId": client_id}
            if algo:
                params["trigger"] = True
            try:
                self._call(
                    f"cancel {client_id}",
                    WEIGHTS["order"],
                    lambda params=params: self.client.cancel_order(None, unified, params),
                )
                return
            except GatewayError as err:
                cause = err.__cause__
                if (
                    not isinstance(cause, ccxt.OrderNotFound)
                    and _error_code(cause or err) not in _UNKNOWN_ORDER_CODES
                ):
                    raise

    # -- history ------------------------------------------------------------------------------------
    def _client_id_of(self, unified: str, order_id: str) -> str:
        """The client id of exchange order ``order_id``; "" when the exchange does not know the order."""
        if order_id not in self._client_ids:
            try:
                order = self._call(
                    f"order {order_id}",
                    WEIGHTS["getOrder"],
                    lambda: self.client.fetch_order(order_id, unified),
                )
            except OrderRejected as err:
                if err.code not in _UNKNOWN_ORDER_CODES:
                    raise
                return ""
            self._client_ids[order_id] = str(order.get("clientOrderId") or order["info"].get("clientOrderId"))
        return self._client_ids[order_id]

    @_fail_closed
    def fills_since(self, symbol: str, since_ms: int, now_ms: int | None = None) -> list[Fill]:
        """User trades at or after ``since_ms``, oldest first (paged by 7-day windows and 1000 rows).

        ``now_ms``: the caller's estimate of the exchange clock (saves a time request on the bar's
        critical path); None asks the exchange.
        """
        unified = self._unified(symbol)
        now = self.server_time_ms() if now_ms is None else int(now_ms)
        seen: dict[str, dict[str, Any]] = {}
        cursor = since_ms
        while cursor <= now:
            until = min(cursor + USER_TRADES_WINDOW_MS, now)
            rows = self._call(
                "user trades",
                WEIGHTS["userTrades"],
                lambda c=cursor, u=until: self.client.fetch_my_trades(unified, c, PAGE, {"until": u}),
            )
            for row in rows:
                seen[str(row["id"])] = row
            if len(rows) >= PAGE:
                cursor = int(rows[-1]["timestamp"])
                if all(int(r["timestamp"]) == cursor for r in rows):
                    cursor += 1
            else:
                cursor = until + 1
        fills = []
        for row in sorted(seen.values(), key=lambda r: (int(r["timestamp"]), int(r["id"]))):
            info = row.get("info", {})
            order_id = str(row.get("order") or info.get("orderId"))
            fee = row.get("fee") or {}
            fills.append(
                Fill(
                    trade_id=str(row["id"]),
                    client_id=self._client_id_of(unified, order_id),
                    exchange_id=order_id,
                    position_side=str(info.get("positionSide", "BOTH")),  # type: ignore[arg-type]
                    side=str(row["side"]),  # type: ignore[arg-type]
                    price=float(row["price"]),
                    qty=float(row["amount"]),
                    fee=float(fee.get("cost") or 0.0),
                    liquidity="maker" if row.get("takerOrMaker") == "maker" else "taker",
                    ts_ms=int(row["timestamp"]),
                )
            )
        return fills

    @_fail_closed
    def funding_payments_since(self, symbol: str, since_ms: int) -> list[tuple[int, float]]:
        """(settlement ms, amount) of FUNDING_FEE income at or after ``since_ms``, oldest first."""
        return self._funding_income(self._unified(symbol), since_ms)[self._unified(symbol)]

    @_fail_closed
    def funding_payments_all(
        self, symbols: Sequence[str], since_ms: int
    ) -> dict[str, list[tuple[int, float]]]:
        """``funding_payments_since`` for every symbol of a basket from ONE income history (asked without
        a symbol: every symbol's rows, weight 30 a page as for one symbol); rows of other symbols dropped."""
        unified = {sym: self._unified(sym) for sym in symbols}
        rows = self._funding_income(None, since_ms)
        return {sym: rows.get(u, []) for sym, u in unified.items()}

    def _funding_income(
        self, unified: str | None, since_ms: int
    ) -> dict[str | None, list[tuple[int, float]]]:
        """Unified symbol -> its FUNDING_FEE rows at or after ``since_ms`` (``unified``: that symbol's only,
        keyed by it even when there are none)."""
        out: dict[str, tuple[str, int, float]] = {}
        cursor = since_ms
        while True:
            rows = self._call(
                "funding income",
                WEIGHTS["income"],
                lambda c=cursor: self.client.fetch_funding_history(unified, c, PAGE),
                essential=False,
            )
            seen = len(out)
            for row in rows:
                key = str(row.get("id") or (row.get("symbol"), row["timestamp"], row["amount"]))
                sym = unified if unified is not None else str(row["symbol"])
                out[key] = (sym, int(row["timestamp"]), float(row["amount"]))
            if len(rows) < PAGE:
                break
            if len(out) == seen:  # a full page of rows already read: the history cannot be walked on
                raise ExchangeUnavailable(f"funding income: more than {PAGE} rows at {cursor}")
            # the next page starts AT the last row's time, not after it: the symbols of a basket settle
            # at the same instant, so a full page can end inside one settlement's rows (seen ones: by key)
            cursor = int(rows[-1]["timestamp"])
        by: dict[str | None, list[tuple[int, float]]] = {unified: []} if unified is not None else {}
        for sym, ts, amount in out.values():
            by.setdefault(sym, []).append((ts, amount))
        return {sym: sorted(v) for sym, v in by.items()}
