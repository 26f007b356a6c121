"""A Binance USD-M futures HTTP emulator on 127.0.0.1 for driving the real ccxt client in tests.

Structure (extend it here, not in the tests):

- ``EmulatorState`` holds everything the exchange "knows": the markets (``exchangeInfo`` symbols), trade
  and mark-price klines per ``(symbol id, interval)``, funding settlements per symbol, the server clock
  (``now_ms``), the scripted faults and the request log. Tests load data into it and read the log.
- ``ROUTES`` maps ``(method, path)`` to a handler ``(state, request) -> Response``. Handlers answer with
  Binance's JSON shapes and error bodies (``{"code": -1121, "msg": "Invalid symbol."}`` etc.).
- ``BinanceUsdmEmulator`` runs a threaded ``http.server`` on an ephemeral port and dispatches to
  ``ROUTES``; before a handler runs, the first matching ``Fault`` may replace or alter its answer.

Public endpoints served: ``GET /fapi/v1/ping``, ``/fapi/v1/time``, ``/fapi/v1/exchangeInfo``,
``/fapi/v1/klines``, ``/fapi/v1/markPriceKlines``, ``/fapi/v1/fundingRate``, with Binance's documented
parameter rules (klines: limit default 500, max 1500; fundingRate: default 100, max 1000; rows ascending,
from ``startTime`` when given, else the most recent ones; klines never start after the server clock).

Private (SIGNED) endpoints live in ``emulator.private`` and are registered in ``ROUTES`` below: orders
(``/fapi/v1/order``, ``openOrders``, ``allOpenOrders``), conditional orders on the Algo service
(``/fapi/v1/algoOrder``, ``openAlgoOrders``, ``algoOpenOrders``; ccxt 4.5 sends STOP_MARKET /
TAKE_PROFIT_MARKET there), ``/fapi/v2|v3/positionRisk``, ``/fapi/v2|v3/account``, ``/fapi/v2|v3/balance``,
``positionSide/dual``, ``leverage``, ``marginType``, ``leverageBracket``, ``income``, ``userTrades``, plus
the public ``premiumIndex``. The account is ``state.account``; ``state.replay(...)`` loads the bar series
that ``state.advance_bar(...)`` trades bar by bar, or ``state.advance_step(...)`` along a finer price path
inside each bar (see ``emulator.private`` for the matching rules, the book and the order-count limits).

Faults (``state.inject(...)``), each consumed in order by the requests whose path matches:
``status`` (any HTTP status; 429/418 get Binance's ``-1003`` body and ``Retry-After`` when given),
``timeout`` (sleep ``delay_s`` before answering normally, past the client's timeout), ``short`` (cut the
answer to ``rows`` rows although more exist), ``bad_json`` (a truncated JSON body with status 200),
``reject`` (a 400 with Binance error ``code`` / ``msg``, e.g. a -5022 post-only storm), ``drop`` (run the
handler, then close the connection without answering: the request's effect happened, its answer is lost).
``payload`` (status 200 with ``body`` as the JSON answer: well-formed, wrong shape).
``times`` makes any of them a burst; ``method`` limits one to that HTTP method (a refused placement on
``/fapi/v1/algoOrder`` without refusing its cancels). ``state.weight_limit`` (None: off) adds Binance's
per-minute IP request-weight limit on the server clock (``ROUTE_WEIGHTS``; klines by their ``limit``, as
Binance: 1 below 100 rows, 2 below 500, 5 up to 1000, 10 above): over it, 429 / -1003 with
``Retry-After`` until the next minute; every answer carries ``X-MBX-USED-WEIGHT-1M``.

Rate limits as Binance enforces them (``state.limits = ExchangeLimits(...)``; None: off, as before): every
order placement is counted in fixed 10 s and 1 min windows of the server clock and its answer carries
``X-MBX-ORDER-COUNT-10S`` / ``-1M`` (counted whether or not limits are set); over ``orders_10s`` /
``orders_1m`` the placement gets 429 / -1015 with ``Retry-After`` to the window's end. Every 429 (weight,
order count, or an injected one) blocks that kind of request (order placements, or everything for a
weight 429) until its Retry-After; a request that ignores it is answered 429 again, and the
``ban_after``-th one bans the IP: 418 / -1003 with Retry-After to every request until the ban ends
(``first_ban_s`` = 2 min, doubling per ban up to ``max_ban_s`` = 3 days). An injected 418 bans too.
``limits.strict_recv_window`` applies the recvWindow rule (-1021) on a scripted clock as well.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import polars as pl

from emulator import private as _private

INTERVAL_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}
KLINES_DEFAULT_LIMIT, KLINES_MAX_LIMIT = 500, 1500
FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT = 100, 1000
FAULT_KINDS = ("status", "timeout", "short", "bad_json", "reject", "drop", "payload")


@dataclass
class Request:
    """One parsed HTTP request as handlers see it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    raw_query: str = ""


@dataclass
class Response:
    """What a handler answers: status, JSON-able payload (or raw text) and extra headers."""

    status: int
    payload: object = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | None = None
    content_type: str = "application/json"

    def body(self) -> bytes:
        text = self.raw if self.raw is not None else json.dumps(self.payload, separators=(",", ":"))
        return text.encode("utf-8")


@dataclass
class Fault:
    """A scripted misbehaviour: applies to the matching requests after ``skip`` of them, ``times`` times."""

    kind: str
    path: str | None = None
    times: int = 1
    skip: int = 0
    status: int = 500
    retry_after: int | None = None
    delay_s: float = 0.0
    rows: int = 1
    body: object = None
    code: int = -1000
    msg: str = "An unknown error occured while processing the request."
    method: str | None = None  # None: any method (e.g. "POST": placements on a path, not its cancels)


@dataclass
class LoggedRequest:
    """One entry of the request log: what was asked, what was answered, which fault (if any) fired."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    fault: str | None
    ts_ms: int = 0  # the server clock when the request arrived


@dataclass
class _Klines:
    ts: np.ndarray  # int64 open times, ascending
    ohlcv: np.ndarray  # float64, shape (n, 5)


@dataclass
class _Funding:
    funding_time: np.ndarray  # int64 raw fundingTime (with the exchange's ms jitter)
    rate: np.ndarray
    mark_price: np.ndarray  # NaN -> served as "" like Binance's oldest rows


def _error(status: int, code: int, msg: str) -> Response:
    return Response(status, {"code": code, "msg": msg})


def _market_entry(
    symbol: str, base: str, tick: str, step: str, min_notional: str, min_price: str, onboard: int,
    max_qty: str, market_max_qty: str,
) -> dict:  # fmt: skip
    """An exchangeInfo symbol entry with the fields and filters Binance USD-M publishes."""
    return {
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": onboard,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": ["PoW"] if base == "BTC" else ["Layer-1"],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": min_price, "maxPrice": "4529764", "tickSize": tick},
            {"filterType": "LOT_SIZE", "stepSize": step, "maxQty": max_qty, "minQty": step},
            {"filterType": "MARKET_LOT_SIZE", "stepSize": step, "maxQty": market_max_qty, "minQty": step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": min_notional},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


def default_markets() -> list[dict]:
    """BTCUSDT (tick 0.10, step 0.001, min notional 100, max qty 1000, market max 120) and ETHUSDT (tick
    0.01, min notional 20, max qty 10000, market max 2000): each with its own filters, as the shipped
    venue snapshot has them, so a basket's readiness checks each symbol against its own."""
    return [
        _market_entry("BTCUSDT", "BTC", "0.10", "0.001", "100", "556.80", 1569398400000, "1000", "120"),
        _market_entry("ETHUSDT", "ETH", "0.01", "0.001", "20", "39.86", 1569398400000, "10000", "2000"),
    ]


class EmulatorState:
    """Everything the emulated exchange knows, plus the fault script and the request log."""

    def __init__(self, now_ms: int | None = None) -> None:
        self.lock = threading.Lock()
        self.now_ms = now_ms  # None: the wall clock
        self.markets: list[dict] = default_markets()
        self.klines: dict[tuple[str, str, str], _Klines] = {}  # (kind, symbol id, interval)
        self.funding: dict[str, _Funding] = {}
        self.faults: list[Fault] = []
        self.log: list[LoggedRequest] = []
        self.account = _private.AccountState()
        self.weight_limit: int | None = None  # None: no server-side request-weight limit
        self.weight_minute, self.weight_used = -1, 0
        self.limits: ExchangeLimits | None = None  # None: 429s never block, never escalate (see module doc)
        self.order_counts: dict[int, tuple[int, int]] = {}  # window ms -> (window index, orders in it)

    # -- bar replay (private side: emulator.private) ---------------------------------------------------
    def replay(
        self,
        symbol_id: str,
        interval: str,
        frame: pl.DataFrame,
        start_ms: int | None = None,
        path: pl.DataFrame | None = None,
    ) -> None:
        """Trade ``frame`` bar by bar with ``advance_bar``; bars closed by ``start_ms`` are history.
        ``path``: finer bars inside them, traded one at a time by ``advance_step``."""
        _private.replay(self, symbol_id, interval, frame, start_ms, path)

    def advance_step(self, symbol_id: str) -> bool:
        """Trade the next finer bar of the current bar's path; True when it closed the bar."""
        return _private.advance_step(self, symbol_id)

    def advance_bar(self, symbol_id: str) -> tuple[int, float, float, float, float]:
        """Trade the next replayed bar (funding, fills on the intrabar path); the clock moves to its close."""
        return _private.advance_bar(self, symbol_id)

    # -- data ---------------------------------------------------------------------------------------
    def server_time(self) -> int:
        return self.now_ms if self.now_ms is not None else int(time.time() * 1000)

    def set_klines(self, symbol_id: str, interval: str, frame: pl.DataFrame, kind: str = "trade") -> None:
        """Serve ``frame`` (``ts open high low close volume``) as trade (or ``kind="mark"``) klines."""
        if kind not in ("trade", "mark") or interval not in INTERVAL_MS:
            raise ValueError(f"bad kind/interval {kind!r}/{interval!r}")
        frame = frame.sort("ts")
        cols = ["open", "high", "low", "close", "volume"] if "volume" in frame.columns else None
        if cols is None:
            frame = frame.with_columns(pl.lit(0.0).alias("volume"))
            cols = ["open", "high", "low", "close", "volume"]
        ohlcv = frame.select(cols).to_numpy().astype(np.float64)
        with self.lock:
            self.klines[(kind, symbol_id, interval)] = _Klines(frame["ts"].to_numpy().astype(np.int64), ohlcv)

    def set_funding(self, symbol_id: str, frame: pl.DataFrame) -> None:
        """Serve settlements from ``frame`` (``funding_time`` raw ms, ``rate``, optional ``mark_price``)."""
        frame = frame.sort("funding_time")
        mark = (
            frame["mark_price"].to_numpy().astype(np.float64)
            if "mark_price" in frame.columns
            else np.full(frame.height, np.nan)
        )
        with self.lock:
            self.funding[symbol_id] = _Funding(
                frame["funding_time"].to_numpy().astype(np.int64),
                frame["rate"].to_numpy().astype(np.float64),
                mark,
            )

    # -- request weight (Binance's per-minute IP limit) ----------------------------------------------
    def spend_weight(self, request: Request) -> Response | None:
        """Count the request's weight in its server-clock minute; a 429 (-1003) once over ``weight_limit``."""
        weight = ROUTE_WEIGHTS.get((request.method, request.path), 1)
        if request.path in ("/fapi/v1/klines", "/fapi/v1/markPriceKlines"):  # by its limit, as Binance
            raw = str(request.query.get("limit") or "500")
            limit = int(raw) if raw.isdigit() else 500  # a malformed limit is the handler's -1100
            weight = 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
        now = self.server_time()
        with self.lock:
            minute = now // 60_000
            if minute != self.weight_minute:
                self.weight_minute, self.weight_used = minute, 0
            if self.weight_limit is not None and self.weight_used + weight > self.weight_limit:
                retry = str(max(1, -(-((minute + 1) * 60_000 - now) // 1000)))
                msg = f"Too many requests; current limit of IP is {self.weight_limit} requests per minute."
                return Response(429, {"code": -1003, "msg": msg}, {"Retry-After": retry})
            self.weight_used += weight
        return None

    # -- faults and log -----------------------------------------------------------------------------
    def inject(self, kind: str, path: str | None = None, **kwargs: object) -> Fault:
        """Script a fault for the next requests to ``path`` (None: any path); see ``Fault``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {FAULT_KINDS}")
        fault = Fault(kind=kind, path=path, **kwargs)  # type: ignore[arg-type]
        with self.lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, path: str, method: str | None = None) -> Fault | None:
        """The fault that fires for this request, consuming one use of it (or one skip)."""
        with self.lock:
            for fault in self.faults:
                if fault.times <= 0 or (fault.path is not None and fault.path != path):
                    continue
                if fault.method is not None and method is not None and fault.method != method:
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                fault.times -= 1
                return fault
        return None

    def requests(self, path: str | None = None) -> list[LoggedRequest]:
        """Logged requests (optionally only those to ``path``), oldest first."""
        with self.lock:
            return [r for r in self.log if path is None or r.path == path]

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()


# -- rate limits as Binance enforces them (order counts, Retry-After blocks, 418 bans) -----------------
ORDER_PLACEMENTS = {
    ("POST", "/fapi/v1/order"),
    ("POST", "/fapi/v1/algoOrder"),
    ("POST", "/fapi/v1/batchOrders"),
}
ORDER_WINDOWS = {
    10_000: ("X-MBX-ORDER-COUNT-10S", "TEN_SECONDS"),
    60_000: ("X-MBX-ORDER-COUNT-1M", "ONE_MINUTE"),
}


@dataclass
class ExchangeLimits:
    """Binance's enforcement of its limits (``state.limits``): order counts, Retry-After, IP bans."""

    orders_10s: int | None = None  # None: that order window is not limited (still counted)
    orders_1m: int | None = None
    ban_after: int = 2  # requests ignoring a 429's Retry-After; this many bans the IP (418)
    first_ban_s: int = 120
    max_ban_s: int = 259_200
    strict_recv_window: bool = False  # apply the recvWindow rule on a scripted clock too
    blocked: dict[str, int] = field(default_factory=dict)  # "all" | "orders" -> until (server ms)
    ignored: int = 0
    banned_until: int = 0
    bans: int = 0

    def ban(self, now: int, seconds: int | None = None) -> Response:
        """Ban the IP from ``now`` (escalating length unless ``seconds``); the 418 to answer."""
        if seconds is None:
            seconds = min(self.first_ban_s * 2**self.bans, self.max_ban_s)
        self.bans += 1
        self.banned_until = max(self.banned_until, now + seconds * 1000)
        self.ignored = 0
        return self.banned(now)

    def banned(self, now: int) -> Response:
        left = max(1, -(-(self.banned_until - now) // 1000))
        msg = f"Way too many requests; IP banned until {self.banned_until}. Please use the websocket."
        return Response(418, {"code": -1003, "msg": msg}, {"Retry-After": str(left)})


def _retry_after_s(response: Response) -> int | None:
    value = response.headers.get("Retry-After")
    return int(value) if value is not None and str(value).isdigit() else None


def limits_before(state: EmulatorState, request: Request) -> Response | None:
    """Under ``state.limits``: the ban's 418, or the 429 (escalating to a ban) for a request that
    ignores a Retry-After still in force; None when the request may proceed."""
    limits = state.limits
    if limits is None:
        return None
    now = state.server_time()
    with state.lock:
        if now < limits.banned_until:
            return limits.banned(now)
        placing = (request.method, request.path) in ORDER_PLACEMENTS
        until = max(limits.blocked.get("all", 0), limits.blocked.get("orders", 0) if placing else 0)
        if now >= until:
            return None
        limits.ignored += 1
        if limits.ignored >= limits.ban_after:
            return limits.ban(now)
        left = str(max(1, -(-(until - now) // 1000)))
        return Response(
            429, {"code": -1003, "msg": "Too many requests; Retry-After ignored."}, {"Retry-After": left}
        )


def count_order(state: EmulatorState, request: Request) -> Response | None:
    """Count an order placement in the 10 s / 1 min windows; the -1015 429 when over a limit."""
    if (request.method, request.path) not in ORDER_PLACEMENTS:
        return None
    now = state.server_time()
    limits = state.limits
    with state.lock:
        counts = {w: (c if i == now // w else 0) for w, (i, c) in state.order_counts.items()}
        for window, (_header, name) in ORDER_WINDOWS.items():
            limit = None if limits is None else (limits.orders_10s if window == 10_000 else limits.orders_1m)
            if limit is not None and counts.get(window, 0) + 1 > limit:
                retry = str(max(1, -(-((now // window + 1) * window - now) // 1000)))
                msg = f"Too many new orders; current limit is {limit} orders per {name}."
                return Response(429, {"code": -1015, "msg": msg}, {"Retry-After": retry})
        for window in ORDER_WINDOWS:
            state.order_counts[window] = (now // window, counts.get(window, 0) + 1)
    return None


def limits_after(state: EmulatorState, request: Request, response: Response) -> None:
    """Order-count headers on placements; a 429 starts a Retry-After block, an injected 418 a ban."""
    now = state.server_time()
    with state.lock:
        if (request.method, request.path) in ORDER_PLACEMENTS:
            for window, (header, _name) in ORDER_WINDOWS.items():
                index, count = state.order_counts.get(window, (-1, 0))
                response.headers.setdefault(header, str(count if index == now // window else 0))
        limits = state.limits
        if limits is None or response.status not in (418, 429):
            return
        retry = _retry_after_s(response)
        if response.status == 418:
            if now >= limits.banned_until:
                limits.ban(now, retry)
            return
        payload = response.payload if isinstance(response.payload, dict) else {}
        kind = "orders" if payload.get("code") == -1015 else "all"
        until = now + 1000 * (retry if retry is not None else 1)
        limits.blocked[kind] = max(limits.blocked.get(kind, 0), until)


# -- handlers ---------------------------------------------------------------------------------------
def _int_param(request: Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        msg = f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        raise _BadRequestError(-1100, msg) from None


class _BadRequestError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _symbol(state: EmulatorState, request: Request) -> str:
    symbol = request.query.get("symbol")
    if symbol is None:
        raise _BadRequestError(
            -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    if symbol not in {m["symbol"] for m in state.markets}:
        raise _BadRequestError(-1121, "Invalid symbol.")
    return symbol


def _limit(request: Request, default: int, maximum: int) -> int:
    limit = _int_param(request, "limit")
    if limit is None:
        return default
    if limit <= 0 or limit > maximum:
        raise _BadRequestError(-1130, "Data sent for parameter 'limit' is not valid.")
    return limit


def _window(values: np.ndarray, start: int | None, end: int | None, limit: int) -> slice:
    """Rows with ``start <= v <= end``: the first ``limit`` from ``start`` if given, else the last ones."""
    lo = 0 if start is None else int(np.searchsorted(values, start, side="left"))
    hi = len(values) if end is None else int(np.searchsorted(values, end, side="right"))
    if hi <= lo:
        return slice(lo, lo)
    return slice(lo, min(hi, lo + limit)) if start is not None else slice(max(lo, hi - limit), hi)


def _num(x: float) -> str:
    return repr(float(x))


def _klines(state: EmulatorState, request: Request, kind: str) -> Response:
    symbol = _symbol(state, request)
    interval = request.query.get("interval")
    if interval not in INTERVAL_MS:
        raise _BadRequestError(-1120, "Invalid interval.")
    limit = _limit(request, KLINES_DEFAULT_LIMIT, KLINES_MAX_LIMIT)
    start, end = _int_param(request, "startTime"), _int_param(request, "endTime")
    if start is not None and end is not None and start > end:
        raise _BadRequestError(-1023, "Start time is greater than end time.")
    now = state.server_time()
    end = now if end is None else min(end, now)  # klines opening after the server clock do not exist yet
    data = state.klines.get((kind, symbol, interval))
    if data is None:
        return Response(200, [])
    sel = _window(data.ts, start, end, limit)
    bar = INTERVAL_MS[interval]
    rows = []
    for ts, (o, h, lo, c, v) in zip(data.ts[sel].tolist(), data.ohlcv[sel].tolist(), strict=True):
        volume = _num(v) if kind == "trade" else "0"
        quote = _num(v * c) if kind == "trade" else "0"
        rows.append([ts, _num(o), _num(h), _num(lo), _num(c), volume, ts + bar - 1, quote, 0, "0", "0", "0"])
    return Response(200, rows)


def handle_ping(state: EmulatorState, request: Request) -> Response:
    return Response(200, {})


def handle_time(state: EmulatorState, request: Request) -> Response:
    return Response(200, {"serverTime": state.server_time()})


def handle_exchange_info(state: EmulatorState, request: Request) -> Response:
    return Response(
        200,
        {
            "timezone": "UTC",
            "serverTime": state.server_time(),
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [
                {"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"},
                {"asset": "BTC", "marginAvailable": True, "autoAssetExchange": "-0.10000000"},
            ],
            "symbols": state.markets,
        },
    )


def handle_klines(state: EmulatorState, request: Request) -> Response:
    return _klines(state, request, "trade")


def handle_mark_price_klines(state: EmulatorState, request: Request) -> Response:
    return _klines(state, request, "mark")


def handle_funding_rate(state: EmulatorState, request: Request) -> Response:
    symbol = _symbol(state, request)
    limit = _limit(request, FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT)
    start, end = _int_param(request, "startTime"), _int_param(request, "endTime")
    data = state.funding.get(symbol)
    if data is None:
        return Response(200, [])
    sel = _window(data.funding_time, start, end, limit)
    rows = [
        {
            "symbol": symbol,
            "fundingTime": t,
            "fundingRate": f"{r:.8f}",
            "markPrice": "" if np.isnan(m) else _num(m),
        }
        for t, r, m in zip(
            data.funding_time[sel].tolist(),
            data.rate[sel].tolist(),
            data.mark_price[sel].tolist(),
            strict=True,
        )
    ]
    return Response(200, rows)


#: Binance's request weights of the heavier routes (every other route weighs 1).
ROUTE_WEIGHTS: dict[tuple[str, str], int] = {
    ("GET", "/fapi/v2/account"): 5,
    ("GET", "/fapi/v3/account"): 5,
    ("GET", "/fapi/v2/balance"): 5,
    ("GET", "/fapi/v3/balance"): 5,
    ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v3/positionRisk"): 5,
    ("GET", "/fapi/v1/userTrades"): 5,
    ("GET", "/fapi/v1/income"): 30,
    ("GET", "/fapi/v1/positionSide/dual"): 30,
    ("GET", "/fapi/v1/klines"): 5,
    ("GET", "/fapi/v1/markPriceKlines"): 5,
}

Handler = Callable[[EmulatorState, Request], Response]
ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/fapi/v1/ping"): handle_ping,
    ("GET", "/fapi/v1/time"): handle_time,
    ("GET", "/fapi/v1/exchangeInfo"): handle_exchange_info,
    ("GET", "/fapi/v1/klines"): handle_klines,
    ("GET", "/fapi/v1/markPriceKlines"): handle_mark_price_klines,
    ("GET", "/fapi/v1/fundingRate"): handle_funding_rate,
}


def _private_route(handler: _private.Handler, signed: bool) -> Handler:
    return lambda state, request: _private.run(state, request, handler, signed)


ROUTES.update({key: _private_route(h, signed=True) for key, h in _private.PRIVATE_ROUTES.items()})
ROUTES.update({key: _private_route(h, signed=False) for key, h in _private.PUBLIC_ROUTES.items()})


def dispatch(state: EmulatorState, request: Request) -> tuple[Response, Fault | None]:
    """Route one request through the rate limits (``ExchangeLimits``), the fault script and ``ROUTES``."""
    refused = limits_before(state, request)
    if refused is not None:
        return refused, None
    response, fault = _dispatch(state, request)
    limits_after(state, request, response)
    return response, fault


def _dispatch(state: EmulatorState, request: Request) -> tuple[Response, Fault | None]:
    """Route one request through the fault script and ``ROUTES``; never raises."""
    fault = state.take_fault(request.path, request.method)
    if fault is not None and fault.kind == "status":
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        if fault.status in (418, 429):
            return Response(fault.status, {"code": -1003, "msg": "Too many requests."}, headers), fault
        if fault.status == 500:
            body = {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
            return Response(500, body, headers), fault
        page = f"<html><body><h1>{fault.status} Service Unavailable</h1></body></html>"
        return Response(fault.status, raw=page, headers=headers, content_type="text/html"), fault
    limited = state.spend_weight(request) or count_order(state, request)
    if limited is not None:
        return limited, fault
    if fault is not None and fault.kind == "payload":
        return Response(200, fault.body), fault
    if fault is not None and fault.kind == "reject":
        return _error(400, fault.code, fault.msg), fault
    if fault is not None and fault.kind == "timeout":
        time.sleep(fault.delay_s)
    handler = ROUTES.get((request.method, request.path))
    if handler is None:
        return Response(
            404, raw="<html><body><h2>404 Not found</h2></body></html>", content_type="text/html"
        ), fault
    try:
        response = handler(state, request)
    except _BadRequestError as err:
        return _error(400, err.code, err.msg), fault
    if fault is not None and fault.kind == "short" and isinstance(response.payload, list):
        response.payload = response.payload[: fault.rows]
    if fault is not None and fault.kind == "bad_json":
        text = response.body().decode("utf-8")
        response.raw = text[: max(1, len(text) // 2)]
    return response, fault


class _HttpHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms each.
    disable_nagle_algorithm = True

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if method != "GET" and body:
            query.update(dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True)))
        request = Request(method, parts.path, query, dict(self.headers.items()), body, parts.query)
        state = self.server.state
        response, fault = dispatch(state, request)
        with state.lock:
            state.log.append(
                LoggedRequest(
                    method,
                    parts.path,
                    query,
                    response.status,
                    None if fault is None else fault.kind,
                    state.server_time(),
                )
            )
        if fault is not None and fault.kind == "drop":
            self.close_connection = True  # processed, but the answer is lost with the connection
            return
        response.headers.setdefault("X-MBX-USED-WEIGHT-1M", str(state.weight_used))
        payload = response.body()
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout fault); nothing to answer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default stderr access log; the state's request log records everything."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: EmulatorState


class BinanceUsdmEmulator:
    """The HTTP server around an ``EmulatorState``; ``start()`` binds 127.0.0.1 on a free port."""

    def __init__(self, state: EmulatorState | None = None) -> None:
        self.state = state if state is not None else EmulatorState()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL (scheme, host, port) to put in front of ``/fapi/v1/...``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BinanceUsdmEmulator:
        self._server = _Server(("127.0.0.1", 0), _HttpHandler)
        self._server.state = self.state
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="binance-usdm-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def advance_bar(self, symbol_id: str) -> tuple[int, float, float, float, float]:
        """Trade the next replayed bar of ``symbol_id`` (``EmulatorState.advance_bar``)."""
        return self.state.advance_bar(symbol_id)

    def __enter__(self) -> BinanceUsdmEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
