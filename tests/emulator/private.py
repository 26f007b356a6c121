"""The private (signed) side of the Binance USD-M emulator: account, orders, matching, funding, income.

``AccountState`` (``state.account``) holds what a futures account knows: credentials, position mode,
leverage and margin type per symbol, the USDT wallet, positions per ``(symbol, positionSide)``, orders
(regular ones on ``/fapi/v1/order``, conditional ones on the Algo service ``/fapi/v1/algoOrder``, which
is where ccxt 4.5 sends STOP_MARKET / TAKE_PROFIT_MARKET), user trades and income rows.

Every private route checks the ``X-MBX-APIKEY`` header (-2014 when wrong) and the HMAC-SHA256
``signature`` of the query string + body without the signature (-1022 when wrong).

Matching: the test loads a bar series with ``state.replay(symbol, interval, frame)`` and calls
``state.advance_bar(symbol)``; that bar is traded along the engine's intrabar path (DESIGN.md
"Intrabar path": ``o, x1, x2, c``, gap fills at the open, nearest trigger first, ties SL before TP
before entry, long before short, older order first), settlements inside the bar are paid, the clock
moves to the bar's close and the bar becomes visible as a closed kline. ``FillModel`` chooses the
engine's knobs (``fill_on_touch``, ``slippage_bps``, maker/taker fees) and what an arriving entry
(an opening limit order) is checked against: ``"last"`` (the last traded price, as a real book) or
``"next_open"`` (the next bar's open, exactly what the backtest does with the entries decided at a
close: post-only check, or a taker fill, at the next open; for parity tests). Closing limits (take-
profits) and market orders always meet the last price: the backtest has a lot's take-profit resting
from its fill, so an open that gaps through it fills it at its limit as maker, as a real book would.

Finer bars (``replay(..., path=...)``): each bar is traded one finer bar at a time by
``advance_step`` (the clock, the last price and the premium index follow the path), so a bridge polling
between steps sees fills, refusals and prices inside the bar; ``advance_bar`` trades what is left of the
bar. ``bars_from_path`` builds the bars the finer ones make up.

The book: under ``post_only_against="book"`` (the default) a limit order meets the best bid / ask, which
are ``spread_ticks`` apart with the last trade on the ask after an up-tick and on the bid otherwise: a
post-only buy is rejected at the ask or above, a sell at the bid or below (a crossing limit without
post-only and a market order fill at the last price). ``MAX_NUM_ORDERS`` / ``MAX_NUM_ALGO_ORDERS`` of
``exchangeInfo`` are enforced per symbol on the regular / conditional orders resting (-2025 "Reach max
open order limit." / -4045 "Reach max stop order limit."). ``PERCENT_PRICE``: a BUY limit above mark x
``multiplierUp`` is rejected -4016, a SELL limit below mark x ``multiplierDown`` -4024. ``MARKET_LOT_SIZE``
bounds market orders (``LOT_SIZE`` the others): above ``maxQty`` -4005, below ``minQty`` -4004.
Self-trade prevention (``selfTradePreventionMode``, default ``DEFAULT_STP``): an arriving order that takes
liquidity meets our own resting limits on the other side at its price or better first (``_self_trade``).

Conditional orders trigger on the contract price and fill as taker at their trigger (the open when
the open gapped through) moved against the account by ``slippage_bps``. A limit that crosses on
arrival is rejected when post-only (GTX, -5022) and otherwise fills at once as taker, never beyond its
own price. Hedge mode: ``reduceOnly`` may not be sent (-1106, as Binance); a closing limit or market
order (SELL LONG, BUY SHORT) for more than the position is rejected (-2022) and no closing fill ever
exceeds the position (the rest expires). Ties between orders at one price: conditional (stop) first,
then closing limits / take-profits, then entries; LONG before SHORT; older order first (the engine's
"lower level first" when the bridge places rungs in level order). No liquidation engine: positions
are never force-closed.

Faults beyond the public ones: ``state.account.partial_fills(fraction, times)`` makes the next fills
execute only part of the remaining quantity (the rest keeps resting), ``FillModel.partial_fill`` does
so for every limit fill (the rest can fill from the next trading step on); ``state.account.freeze_premium()``
stops ``premiumIndex`` from updating (stale mark price and funding), ``mark_premium`` sets the mark
that far from the last trade (PERCENT_PRICE then refuses limits a fast move left outside the band);
status / timeout / ``reject`` (any Binance error code) / ``drop`` (process, then close the connection
unanswered) faults come from ``state.inject``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from emulator.binance_usdm import EmulatorState, Request, Response

DEFAULT_API_KEY = "emu-api-key"
DEFAULT_API_SECRET = "emu-api-secret"
POSITION_SIDES = ("LONG", "SHORT", "BOTH")
MAINT_MARGIN_RATE = 0.004
USER_TRADES_MAX_WINDOW_MS = 7 * 86_400_000
#: selfTradePreventionMode values of POST /fapi/v1/order; an order that sends none gets DEFAULT_STP (the
#: USD-M New Order page lists ``NONE`` as the default; older versions of it said ``EXPIRE_MAKER``).
STP_MODES = ("NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH")
DEFAULT_STP = "NONE"


@dataclass
class FillModel:
    """Matching knobs; the defaults are the engine's defaults with Binance VIP0 fees."""

    fill_on_touch: bool = False
    slippage_bps: float = 0.0
    maker_fee: float = 0.0002
    taker_fee: float = 0.0005
    post_only_against: str = "book"  # "book" (best bid / ask), "last" price, or "next_open" of the replay
    spread_ticks: int = 1  # the book: best bid and ask this many ticks apart, the last trade on one of them
    # every limit fill executes at most this fraction of what remains (below 1: partial fills)
    partial_fill: float = 1.0

    @classmethod
    def like_backtest(cls, strategy: Any, venue: Any) -> FillModel:
        """The backtest's fill settings (``backtest.*``, ``fees.*``); post-only checked at the next open."""
        bt = strategy.backtest
        return cls(
            fill_on_touch=bt.fill_on_touch,
            slippage_bps=bt.slippage_bps,
            maker_fee=venue.fees.maker,
            taker_fee=venue.fees.taker,
            post_only_against="next_open",
        )


@dataclass
class Order:
    """One order (regular or conditional); quantities and prices as floats on the symbol's grid."""

    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY / SELL
    position_side: str  # LONG / SHORT / BOTH
    type: str  # LIMIT / MARKET / STOP_MARKET / TAKE_PROFIT_MARKET
    qty: float
    price: float
    stop_price: float
    tif: str
    reduce_only: bool
    time: int
    status: str = "NEW"
    filled: float = 0.0
    cum_quote: float = 0.0
    update_time: int = 0
    algo: bool = False
    actual_order_id: int = 0
    paused_bar: int = -1  # after a partial fill: no more fills during this bar
    stp: str = "NONE"  # selfTradePreventionMode: what happens when it would trade against our own order

    @property
    def opening(self) -> bool:
        """True for orders that add to the position (hedge mode: BUY LONG / SELL SHORT)."""
        if self.position_side == "LONG":
            return self.side == "BUY"
        if self.position_side == "SHORT":
            return self.side == "SELL"
        return not self.reduce_only

    @property
    def remaining(self) -> float:
        return max(self.qty - self.filled, 0.0)


@dataclass
class Trade:
    trade_id: int
    order_id: int
    symbol: str
    side: str
    position_side: str
    price: float
    qty: float
    commission: float
    realized_pnl: float
    maker: bool
    time: int


@dataclass
class _Replay:
    interval: str
    ts: np.ndarray
    ohlcv: np.ndarray
    cursor: int = 0  # index of the next bar to trade
    path_ts: np.ndarray | None = None  # finer bars inside the bars: the price path traded step by step
    path_ohlc: np.ndarray | None = None
    path_ms: int = 0  # length of one finer bar
    path_cursor: int = 0  # index of the next finer bar to trade


@dataclass
class _Premium:
    mark_price: float
    time: int


class ApiError(Exception):
    """A Binance error answer (HTTP status, code, msg) raised inside a private handler."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class AccountState:
    """The emulated futures account."""

    api_key: str = DEFAULT_API_KEY
    api_secret: str = DEFAULT_API_SECRET
    dual_side: bool = False
    wallet: float = 10_000.0
    fill_model: FillModel = field(default_factory=FillModel)
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)
    positions: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # [signed qty, entry]
    orders: dict[int, Order] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    income: list[dict] = field(default_factory=list)
    last_price: dict[str, float] = field(default_factory=dict)
    premium: dict[str, _Premium] = field(default_factory=dict)
    premium_frozen: bool = False
    # the mark price is the last trade x (1 + mark_premium): a mark (index based) that lags a fast move
    mark_premium: float = 0.0
    replays: dict[str, _Replay] = field(default_factory=dict)
    funded_until: dict[str, int] = field(default_factory=dict)  # settlements up to here are paid
    partial_fraction: float = 1.0
    partial_times: int = 0
    next_id: int = 1_000_000
    steps: int = 0  # trading steps so far (a bar, or a finer bar of its path): a partial fill waits one
    last_up: dict[str, bool] = field(default_factory=dict)  # last trade on an up-tick (at the ask)

    # -- test controls ------------------------------------------------------------------------------
    def partial_fills(self, fraction: float, times: int = 1) -> None:
        """The next ``times`` fills execute only ``fraction`` of the order's remaining quantity."""
        self.partial_fraction, self.partial_times = fraction, times

    def freeze_premium(self, frozen: bool = True) -> None:
        """Stop (or resume) premiumIndex updates: mark price, funding rate and its ``time`` go stale."""
        self.premium_frozen = frozen

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def position(self, symbol: str, side: str) -> list[float]:
        return self.positions.setdefault((symbol, side), [0.0, 0.0])

    def open_orders(self, symbol: str | None = None, algo: bool | None = None) -> list[Order]:
        return [
            o
            for o in self.orders.values()
            if o.status in ("NEW", "PARTIALLY_FILLED")
            and (symbol is None or o.symbol == symbol)
            and (algo is None or o.algo == algo)
        ]


# -- helpers ----------------------------------------------------------------------------------------
def _num(x: float) -> str:
    return repr(float(x))


def _filters(state: EmulatorState, symbol: str) -> dict[str, dict]:
    for m in state.markets:
        if m["symbol"] == symbol:
            return {f["filterType"]: f for f in m["filters"]}
    raise ApiError(400, -1121, "Invalid symbol.")


def _on_grid(value: float, unit: float) -> bool:
    n = value / unit
    return abs(n - round(n)) < 1e-6


def _param(request: Request, name: str, required: bool = True) -> str | None:
    value = request.query.get(name)
    if (value is None or value == "") and required:
        raise ApiError(
            400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    return value


def _float_param(request: Request, name: str, required: bool = True) -> float | None:
    value = _param(request, name, required)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None


def _int_param(request: Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None


def _bool_param(request: Request, name: str) -> bool | None:
    value = request.query.get(name)
    if value is None:
        return None
    if value.lower() not in ("true", "false"):
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.")
    return value.lower() == "true"


def _symbol(state: EmulatorState, request: Request) -> str:
    symbol = _param(request, "symbol")
    assert symbol is not None
    _filters(state, symbol)
    return symbol


def check_signature(state: EmulatorState, request: Request) -> None:
    """Binance's SIGNED rule: API key header, then HMAC-SHA256(secret, query + body) == signature."""
    acct = state.account
    key = next((v for k, v in request.headers.items() if k.lower() == "x-mbx-apikey"), None)
    if key != acct.api_key:
        raise ApiError(401, -2014, "API-key format invalid.")
    payload = request.raw_query + request.body.decode("utf-8")
    signed, sep, signature = payload.rpartition("&signature=")
    if not sep:
        if payload.startswith("signature="):
            signed, signature = "", payload[len("signature=") :]
        else:
            raise ApiError(
                400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
            )
    expected = hmac.new(acct.api_secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise ApiError(400, -1022, "Signature for this request is not valid.")
    stamp = request.query.get("timestamp", "")
    if not stamp.isdigit():
        raise ApiError(
            400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
        )
    strict = state.limits is not None and state.limits.strict_recv_window  # rate-limit block's switch
    if state.now_ms is None or strict:  # on the wall clock (or when asked), Binance's recvWindow rule
        now, window = state.server_time(), int(request.query.get("recvWindow") or 5000)
        if int(stamp) >= now + 1000 or now - int(stamp) > window:
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")


# -- accounting -------------------------------------------------------------------------------------
def _book_fill(state: EmulatorState, order: Order, price: float, qty: float, maker: bool, ts: int) -> None:
    """Execute ``qty`` of ``order`` at ``price``: position, realized PnL, fee, trade and income rows."""
    acct = state.account
    fm = acct.fill_model
    pos = acct.position(order.symbol, order.position_side)
    signed = qty if order.side == "BUY" else -qty
    q, entry = pos
    realized = 0.0
    if q == 0 or (q > 0) == (signed > 0):  # opening / adding
        new_q = q + signed
        pos[1] = (abs(q) * entry + qty * price) / abs(new_q)
        pos[0] = new_q
    else:  # reducing (hedge: closing order; one-way: opposite side)
        closed = min(abs(signed), abs(q))
        realized = closed * (price - entry) if q > 0 else closed * (entry - price)
        pos[0] = q + signed
        if abs(pos[0]) < 1e-12:
            pos[0], pos[1] = 0.0, 0.0
        elif (pos[0] > 0) != (q > 0):  # one-way flip
            pos[1] = price
    fee = price * qty * (fm.maker_fee if maker else fm.taker_fee)
    acct.wallet += realized - fee
    order.filled += qty
    order.cum_quote += price * qty
    order.update_time = ts
    order.status = "FILLED" if order.remaining <= 1e-12 else "PARTIALLY_FILLED"
    trade_id = acct.new_id()
    acct.trades.append(
        Trade(
            trade_id,
            order.actual_order_id or order.order_id,
            order.symbol,
            order.side,
            order.position_side,
            price,
            qty,
            fee,
            realized,
            maker,
            ts,
        )
    )
    if realized != 0.0:
        _income(acct, order.symbol, "REALIZED_PNL", realized, ts, str(trade_id))
    _income(acct, order.symbol, "COMMISSION", -fee, ts, str(trade_id))
    acct.last_price[order.symbol] = price


def _income(acct: AccountState, symbol: str, kind: str, amount: float, ts: int, trade_id: str = "") -> None:
    acct.income.append(
        {
            "symbol": symbol,
            "incomeType": kind,
            "income": f"{amount:.8f}",
            "asset": "USDT",
            "info": kind,
            "time": ts,
            "tranId": acct.new_id(),
            "tradeId": trade_id,
        }
    )


def _fill_qty(state: EmulatorState, order: Order, step: float) -> tuple[float, bool]:
    """(quantity that executes now, True when capped by the position a closing order reduces).

    A partial-fill fault cuts limit orders only (market and triggered stop orders fill whole).
    """
    acct = state.account
    qty = order.remaining
    capped = False
    if not order.opening:
        held = abs(acct.position(order.symbol, order.position_side)[0])
        capped = held < qty - 1e-12
        qty = min(qty, held)
    if order.type == "LIMIT" and acct.partial_times > 0 and qty > step:
        acct.partial_times -= 1
        part = math.floor(qty * acct.partial_fraction / step + 1e-9) * step
        qty, capped = max(step, min(part, qty)), False
    elif order.type == "LIMIT" and acct.fill_model.partial_fill < 1.0 and qty > step:
        part = math.floor(qty * acct.fill_model.partial_fill / step + 1e-9) * step
        qty, capped = max(step, min(part, qty)), False
    return qty, capped


def _execute(state: EmulatorState, order: Order, price: float, maker: bool, ts: int, bar: int) -> None:
    step = float(_filters(state, order.symbol)["LOT_SIZE"]["stepSize"])
    qty, capped = _fill_qty(state, order, step)
    if qty <= 1e-12:
        order.status, order.update_time = "EXPIRED", ts  # closing order with nothing left to close
        return
    _book_fill(state, order, price, qty, maker, ts)
    if order.remaining <= 1e-12:
        return
    if capped or order.type != "LIMIT":
        order.status = "EXPIRED"  # the position is closed: the rest of a reduce order is cancelled
    else:
        order.paused_bar = bar  # partial fill: the rest rests, no more fills during this bar


def _trigger(state: EmulatorState, order: Order) -> None:
    """A conditional order fires: it becomes a market order on the matching engine."""
    order.actual_order_id = state.account.new_id()
    order.status = "NEW"


# -- matching ---------------------------------------------------------------------------------------
_RANK_STOP, _RANK_TP, _RANK_ENTRY = 0, 1, 2


def _rank(order: Order) -> int:
    if order.type == "STOP_MARKET":
        return _RANK_STOP
    if order.type == "TAKE_PROFIT_MARKET" or not order.opening:
        return _RANK_TP
    return _RANK_ENTRY


def _key(order: Order) -> tuple[int, int, int]:
    return (_rank(order), 0 if order.position_side in ("LONG", "BOTH") else 1, order.order_id)


def _buy_trigger(order: Order) -> tuple[float, bool]:
    """(trigger price, True when it is hit by the price falling)."""
    if order.type == "LIMIT":
        return order.price, order.side == "BUY"
    if order.type == "STOP_MARKET":
        return order.stop_price, order.side == "SELL"
    return order.stop_price, order.side == "BUY"  # TAKE_PROFIT_MARKET


def _fill_price(state: EmulatorState, order: Order, at: float) -> tuple[float, bool]:
    """(price, maker) when ``order`` fills with its trigger at ``at`` (the open on a gap)."""
    if order.type == "LIMIT":
        return order.price, True
    slip = state.account.fill_model.slippage_bps * 1e-4
    return (at * (1 + slip) if order.side == "BUY" else at * (1 - slip)), False


def _active(state: EmulatorState, symbol: str, bar: int) -> list[Order]:
    return [o for o in state.account.open_orders(symbol) if o.type != "MARKET" and o.paused_bar != bar]


def _gap_fills(state: EmulatorState, symbol: str, o: float, ts: int, bar: int) -> None:
    touch = state.account.fill_model.fill_on_touch
    while True:
        hits = []
        for order in _active(state, symbol, bar):
            px, down = _buy_trigger(order)
            if order.type != "LIMIT":
                hit = o <= px if down else o >= px
            elif down:
                hit = o <= px if touch else o < px
            else:
                hit = o >= px if touch else o > px
            if hit:
                hits.append(order)
        if not hits:
            return
        order = min(hits, key=_key)
        price, maker = _fill_price(state, order, o)
        if order.algo:
            _trigger(state, order)
        _execute(state, order, price, maker, ts, bar)


def _walk(state: EmulatorState, symbol: str, a: float, b: float, ts: int, bar: int) -> None:
    if a == b:
        return
    touch = state.account.fill_model.fill_on_touch
    down = b < a
    cur = a
    while True:
        best: tuple[float, tuple[int, int, int], Order] | None = None
        for order in _active(state, symbol, bar):
            px, falls = _buy_trigger(order)
            if falls != down:
                continue
            limit = order.type == "LIMIT"
            if down:
                hit = (b <= px if (touch or not limit) else b < px) and px <= cur
            else:
                hit = (px <= b if (touch or not limit) else px < b) and cur <= px
            if not hit:
                continue
            cand = (abs(cur - px), _key(order), order)
            if best is None or cand[:2] < best[:2]:
                best = cand
        if best is None:
            return
        order = best[2]
        px, _ = _buy_trigger(order)
        price, maker = _fill_price(state, order, px)
        if order.algo:
            _trigger(state, order)
        _execute(state, order, price, maker, ts, bar)
        cur = px


def _path(o: float, h: float, lo: float, c: float) -> tuple[float, float, float, float]:
    x1, x2 = (h, lo) if h - o <= o - lo else (lo, h)
    return o, x1, x2, c


def _settle_funding(state: EmulatorState, symbol: str, end: int, bar_open: float) -> None:
    """At a bar's open ``end``: pay every settlement since the last one paid, on the positions held."""
    data = state.funding.get(symbol)
    acct = state.account
    start = acct.funded_until.get(symbol, end)
    acct.funded_until[symbol] = end
    if data is None:
        return
    for t, rate, mark in zip(
        data.funding_time.tolist(), data.rate.tolist(), data.mark_price.tolist(), strict=True
    ):
        if not start < t <= end:
            continue
        px = bar_open if np.isnan(mark) else mark
        for (sym, _side), (q, _e) in list(acct.positions.items()):
            if sym != symbol or q == 0:
                continue
            amount = -q * px * rate  # long (q > 0) pays a positive rate, short (q < 0) receives it
            acct.wallet += amount
            _income(acct, symbol, "FUNDING_FEE", amount, t)


def _refresh_premium(state: EmulatorState, symbol: str, mark: float) -> None:
    if not state.account.premium_frozen:
        mark *= 1.0 + state.account.mark_premium
        state.account.premium[symbol] = _Premium(mark, state.server_time())


# -- replay -----------------------------------------------------------------------------------------
def replay(
    state: EmulatorState,
    symbol: str,
    interval: str,
    frame: pl.DataFrame,
    start_ms: int | None = None,
    path: pl.DataFrame | None = None,
) -> None:
    """Load the bar series ``advance_bar`` trades; bars before the clock are history (already closed).

    ``path`` (finer bars, ``ts open high low close``, a fixed interval dividing the bar's) is the price
    path inside the bars: ``advance_step`` trades one finer bar at a time (the clock at its close, the
    last price and the premium index following it), and a bar closes with its last finer bar. A bar with
    no finer bars is traded whole along its own path.
    """
    from emulator.binance_usdm import INTERVAL_MS

    frame = frame.sort("ts")
    ts = frame["ts"].to_numpy().astype(np.int64)
    ohlcv = frame.select(["open", "high", "low", "close", "volume"]).to_numpy().astype(np.float64)
    bar_ms = INTERVAL_MS[interval]
    now = state.server_time() if start_ms is None else start_ms
    cursor = int(np.searchsorted(ts + bar_ms, now, side="right"))
    state.now_ms = now
    rp = _Replay(interval, ts, ohlcv, cursor)
    if path is not None:
        path = path.sort("ts")
        rp.path_ts = path["ts"].to_numpy().astype(np.int64)
        rp.path_ohlc = path.select(["open", "high", "low", "close"]).to_numpy().astype(np.float64)
        gaps = np.diff(rp.path_ts)
        rp.path_ms = int(gaps.min()) if gaps.size else bar_ms
        if rp.path_ms <= 0 or bar_ms % rp.path_ms:
            raise ValueError(f"path bars of {rp.path_ms} ms do not divide {interval} bars")
    state.account.replays[symbol] = rp
    state.account.funded_until[symbol] = now  # settlements before the replay's start are history
    _publish(state, symbol)


def bars_from_path(path: pl.DataFrame, interval: str) -> pl.DataFrame:
    """The ``interval`` bars (ts open high low close volume) the finer ``path`` bars make up."""
    from emulator.binance_usdm import INTERVAL_MS

    ms = INTERVAL_MS[interval]
    if "volume" not in path.columns:
        path = path.with_columns(pl.lit(1.0).alias("volume"))
    return (
        path.sort("ts")
        .group_by((pl.col("ts") // ms * ms).alias("bar"), maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .rename({"bar": "ts"})
    )


def _publish(state: EmulatorState, symbol: str) -> None:
    rp = state.account.replays[symbol]
    shown = pl.DataFrame(
        {
            "ts": rp.ts[: rp.cursor],
            "open": rp.ohlcv[: rp.cursor, 0],
            "high": rp.ohlcv[: rp.cursor, 1],
            "low": rp.ohlcv[: rp.cursor, 2],
            "close": rp.ohlcv[: rp.cursor, 3],
            "volume": rp.ohlcv[: rp.cursor, 4],
        }
    )
    state.set_klines(symbol, rp.interval, shown)
    if rp.cursor > 0:
        o, h, lo, c = (float(x) for x in rp.ohlcv[rp.cursor - 1, :4])
        _traded_to(state, symbol, _path(o, h, lo, c))


def _traded_to(state: EmulatorState, symbol: str, points: tuple[float, float, float, float]) -> None:
    """The last price is the path's end, on the side of the book its last move traded on."""
    acct = state.account
    acct.last_price[symbol] = points[-1]
    for a, b in itertools.pairwise(points):
        if a != b:
            acct.last_up[symbol] = b > a
    _refresh_premium(state, symbol, points[-1])


def _trade(state: EmulatorState, symbol: str, ts: int, o: float, h: float, lo: float, c: float) -> None:
    """One trading step along ``o, x1, x2, c``: gap fills at the open, then the path's legs."""
    acct = state.account
    acct.steps += 1
    step = acct.steps
    _gap_fills(state, symbol, o, ts, step)
    points = _path(o, h, lo, c)
    for a, b in itertools.pairwise(points):
        _walk(state, symbol, a, b, ts, step)


def advance_step(state: EmulatorState, symbol: str) -> bool:
    """Trade the next finer bar of the current bar's path (the whole bar when it has none).

    The clock moves to the finer bar's close and the last price to its close; True when this step
    closed the bar (it is then visible as a closed kline).
    """
    from emulator.binance_usdm import INTERVAL_MS

    rp = state.account.replays[symbol]
    if rp.cursor >= len(rp.ts):
        raise IndexError(f"replay of {symbol} has no bar after {rp.cursor}")
    k = rp.cursor
    ts = int(rp.ts[k])
    bar_ms = INTERVAL_MS[rp.interval]
    o, h, lo, c, _v = (float(x) for x in rp.ohlcv[k])
    lo_i = hi_i = 0
    if rp.path_ts is not None:
        lo_i = int(np.searchsorted(rp.path_ts, ts, side="left"))
        hi_i = int(np.searchsorted(rp.path_ts, ts + bar_ms, side="left"))
        rp.path_cursor = max(rp.path_cursor, lo_i)
    with state.lock:
        if rp.path_cursor == lo_i or lo_i == hi_i:
            _settle_funding(state, symbol, ts, o)
        if lo_i == hi_i:  # no finer bars: the whole bar at once
            _trade(state, symbol, ts, o, h, lo, c)
            closed = True
        else:
            assert rp.path_ohlc is not None and rp.path_ts is not None
            j = rp.path_cursor
            fo, fh, fl, fc = (float(x) for x in rp.path_ohlc[j])
            fts = int(rp.path_ts[j])
            _trade(state, symbol, fts, fo, fh, fl, fc)
            rp.path_cursor = j + 1
            closed = rp.path_cursor >= hi_i
            if not closed:
                state.now_ms = fts + rp.path_ms
                _traded_to(state, symbol, _path(fo, fh, fl, fc))
        if closed:
            state.now_ms = ts + bar_ms
            rp.cursor += 1
    if closed:
        _publish(state, symbol)
        if lo_i != hi_i:  # the book's side is the last finer bar's last move, not the whole bar's
            with state.lock:
                _traded_to(state, symbol, _path(fo, fh, fl, fc))
    return closed


def advance_bar(state: EmulatorState, symbol: str) -> tuple[int, float, float, float, float]:
    """Trade the rest of the next bar of the replay: funding, path fills, clock to its close. Returns it."""
    rp = state.account.replays[symbol]
    if rp.cursor >= len(rp.ts):
        raise IndexError(f"replay of {symbol} has no bar after {rp.cursor}")
    k = rp.cursor
    while not advance_step(state, symbol):
        pass
    o, h, lo, c, _v = (float(x) for x in rp.ohlcv[k])
    return int(rp.ts[k]), o, h, lo, c


def _mid_bar(rp: _Replay) -> bool:
    """True when part of the current bar's finer path has traded already."""
    if rp.path_ts is None or rp.cursor >= len(rp.ts):
        return False
    return rp.path_cursor > int(np.searchsorted(rp.path_ts, rp.ts[rp.cursor], side="left"))


def _book(state: EmulatorState, symbol: str) -> tuple[float, float]:
    """(best bid, best ask): ``spread_ticks`` apart, the last trade at the ask after an up-tick, else at
    the bid."""
    acct = state.account
    tick = float(_filters(state, symbol)["PRICE_FILTER"]["tickSize"])
    last = acct.last_price[symbol]
    spread = acct.fill_model.spread_ticks * tick
    if acct.last_up.get(symbol, False):
        return last - spread, last
    return last, last + spread


def _reference_price(state: EmulatorState, symbol: str, entry: bool = False) -> float:
    """The price an arriving order meets: the last trade; an entry (``entry``: an opening limit order)
    meets the next bar's open under ``post_only_against="next_open"``."""
    acct = state.account
    rp = acct.replays.get(symbol)
    next_open = acct.fill_model.post_only_against == "next_open"
    if entry and next_open and rp is not None and rp.cursor < len(rp.ts) and not _mid_bar(rp):
        return float(rp.ohlcv[rp.cursor, 0])
    if symbol in acct.last_price:
        return acct.last_price[symbol]
    raise ApiError(
        400, -1008, "Server is currently overloaded with other requests. Please try again in a few minutes."
    )


# -- order placement --------------------------------------------------------------------------------
_TYPES = ("LIMIT", "MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET")


def _new_order(state: EmulatorState, request: Request, algo: bool) -> Order:
    acct = state.account
    symbol = _symbol(state, request)
    side = _param(request, "side")
    otype = _param(request, "type")
    if side not in ("BUY", "SELL"):
        raise ApiError(400, -1117, "Invalid side.")
    if otype not in _TYPES or (algo != (otype in ("STOP_MARKET", "TAKE_PROFIT_MARKET"))):
        raise ApiError(400, -1116, "Invalid orderType.")
    pside = request.query.get("positionSide", "BOTH")
    if pside not in POSITION_SIDES:
        raise ApiError(400, -4003, "Invalid positionSide.")
    if acct.dual_side != (pside != "BOTH"):
        raise ApiError(400, -4061, "Order's position side does not match user's setting.")
    reduce_only = _bool_param(request, "reduceOnly")
    if acct.dual_side and reduce_only is not None:
        raise ApiError(400, -1106, "Parameter 'reduceOnly' sent when not required.")
    qty = _float_param(request, "quantity")
    assert qty is not None
    filters = _filters(state, symbol)
    lot, pf = filters["LOT_SIZE"], filters["PRICE_FILTER"]
    if qty <= 0:
        raise ApiError(400, -4003, "Quantity less than or equal to zero.")
    if not _on_grid(qty, float(lot["stepSize"])) or qty < float(lot["minQty"]):
        raise ApiError(400, -1111, "Precision is over the maximum defined for this asset.")
    # LOT_SIZE bounds limit and conditional orders, MARKET_LOT_SIZE market orders (same codes as Binance)
    bounds = filters.get("MARKET_LOT_SIZE", lot) if otype == "MARKET" else lot
    if qty > float(bounds["maxQty"]) + 1e-12:
        raise ApiError(400, -4005, "Quantity greater than max quantity.")
    if qty < float(bounds["minQty"]) - 1e-12:
        raise ApiError(400, -4004, "Quantity less than min quantity.")
    stp = request.query.get("selfTradePreventionMode", DEFAULT_STP)
    if stp not in STP_MODES:
        raise ApiError(400, -1100, "Illegal characters found in parameter 'selfTradePreventionMode'.")
    price = stop = 0.0
    tif = request.query.get("timeInForce", "GTC")
    if otype == "LIMIT":
        price = _float_param(request, "price") or 0.0
        if "timeInForce" not in request.query:
            raise ApiError(
                400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."
            )
        if tif not in ("GTC", "IOC", "FOK", "GTX"):
            raise ApiError(400, -1115, "Invalid timeInForce.")
    if algo:
        stop = _float_param(request, "triggerPrice") or 0.0
    for value in (price, stop):
        if value and (not _on_grid(value, float(pf["tickSize"])) or value < float(pf["minPrice"])):
            raise ApiError(400, -4014, "Price not increased by tick size.")
    if otype == "LIMIT" and "PERCENT_PRICE" in filters:
        # PERCENT_PRICE: a BUY limit may not exceed mark * multiplierUp, a SELL limit may not be below
        # mark * multiplierDown (-4016 / -4024, Binance's PRICE_HIGHER/LOWER_THAN_MULTIPLIER_UP/DOWN)
        pp, mark = filters["PERCENT_PRICE"], _mark(state, symbol)
        cap, floor = mark * float(pp["multiplierUp"]), mark * float(pp["multiplierDown"])
        if mark > 0 and side == "BUY" and price > cap * (1 + 1e-12):
            raise ApiError(400, -4016, f"Limit price can't be higher than {cap:.2f}.")
        if mark > 0 and side == "SELL" and price < floor * (1 - 1e-12):
            raise ApiError(400, -4024, f"Limit price can't be lower than {floor:.2f}.")
    client_id = request.query.get("clientAlgoId" if algo else "newClientOrderId") or f"emu{acct.next_id + 1}"
    if any(o.client_id == client_id for o in acct.open_orders(symbol)):
        raise ApiError(400, -4116, "ClientOrderId is duplicated.")
    now = state.server_time()
    order = Order(
        acct.new_id(),
        client_id,
        symbol,
        side,
        pside,
        otype,
        qty,
        price,
        stop,
        tif,
        bool(reduce_only),
        now,
        update_time=now,
        algo=algo,
        stp=stp,
    )
    ref = _reference_price(state, symbol)
    notional = qty * (price or stop or ref)
    if order.opening and notional < float(filters["MIN_NOTIONAL"]["notional"]):
        raise ApiError(
            400,
            -4164,
            f"Order's notional must be no smaller than {filters['MIN_NOTIONAL']['notional']} "
            "(unless you choose reduce only).",
        )
    if pside == "BOTH" and reduce_only:
        q = acct.position(symbol, "BOTH")[0]
        if q == 0 or (q > 0) == (side == "BUY") or qty > abs(q) + 1e-12:
            raise ApiError(400, -2022, "ReduceOnly Order is rejected.")
    if not order.opening:
        # Each closing order on its own may not exceed the position (resting ones are not summed: a lot's
        # take-profit limit and its stop both cover it); fills are capped at the position anyway.
        held = abs(acct.position(symbol, pside)[0])
        if pside != "BOTH" and qty > held + 1e-12 and otype in ("LIMIT", "MARKET"):
            raise ApiError(400, -2022, "ReduceOnly Order is rejected.")
    if order.opening:
        lev = acct.leverage.get(symbol, 20)
        if notional / lev > _available(state) + 1e-9:
            raise ApiError(400, -2019, "Margin is insufficient.")
    if otype != "MARKET":
        # MAX_NUM_ALGO_ORDERS (conditional orders) / MAX_NUM_ORDERS (regular orders) resting on the symbol
        key, code, what = (
            ("MAX_NUM_ALGO_ORDERS", -4045, "Reach max stop order limit.")
            if algo
            else ("MAX_NUM_ORDERS", -2025, "Reach max open order limit.")
        )
        if key in filters and len(acct.open_orders(symbol, algo=algo)) >= int(filters[key]["limit"]):
            raise ApiError(400, code, what)
    return order


def _initial_margins(state: EmulatorState) -> tuple[float, float]:
    """(positions' initial margin at their entry, resting opening limits' initial margin), in USDT."""
    acct = state.account
    positions = sum(abs(q) * e / acct.leverage.get(s, 20) for (s, _), (q, e) in acct.positions.items())
    orders = sum(
        o.remaining * o.price / acct.leverage.get(o.symbol, 20)
        for o in acct.open_orders()
        if o.opening and o.type == "LIMIT"
    )
    return positions, orders


def _available(state: EmulatorState) -> float:
    acct = state.account
    equity = acct.wallet + sum(_upnl(state, s, p) for (s, _), p in acct.positions.items())
    return equity - sum(_initial_margins(state))


def _upnl(state: EmulatorState, symbol: str, pos: list[float]) -> float:
    q, e = pos
    if q == 0:
        return 0.0
    mark = _mark(state, symbol)
    return q * (mark - e)


def _mark(state: EmulatorState, symbol: str) -> float:
    prem = state.account.premium.get(symbol)
    if prem is not None:
        return prem.mark_price
    return state.account.last_price.get(symbol, 0.0)


def _crosses(order: Order, ref: float) -> bool:
    return order.price >= ref if order.side == "BUY" else order.price <= ref


def handle_new_order(state: EmulatorState, request: Request) -> dict:
    acct = state.account
    order = _new_order(state, request, algo=False)
    ref = _reference_price(state, order.symbol, entry=order.type == "LIMIT" and order.opening)
    fm = acct.fill_model
    meets = ref
    if fm.post_only_against == "book" and order.type == "LIMIT":
        # a limit meets the book: a buy crosses at the best ask or above, a sell at the best bid or below
        # (a crossing one fills as taker at the last price, as before the book was modelled)
        bid, ask = _book(state, order.symbol)
        meets = ask if order.side == "BUY" else bid
    if order.type == "LIMIT" and _crosses(order, meets):
        if order.tif == "GTX":
            raise ApiError(
                400,
                -5022,
                "Due to the order could not be executed as maker, the Post Only order will be rejected. "
                "The order will not be recorded in the order history",
            )
        slip = fm.slippage_bps * 1e-4
        px = min(order.price, ref * (1 + slip)) if order.side == "BUY" else max(order.price, ref * (1 - slip))
        acct.orders[order.order_id] = order
        if _self_trade(state, order, px):
            _execute(state, order, px, False, order.time, -2)
    elif order.type == "MARKET":
        slip = fm.slippage_bps * 1e-4
        px = ref * (1 + slip) if order.side == "BUY" else ref * (1 - slip)
        acct.orders[order.order_id] = order
        if _self_trade(state, order, px):
            _execute(state, order, px, False, order.time, -2)
    else:
        acct.orders[order.order_id] = order
    return order_json(order)


def _self_trade(state: EmulatorState, taker: Order, px: float) -> bool:
    """Self-trade prevention for an arriving order that takes liquidity at ``px``: our own resting limit
    orders on the other side at ``px`` or better are what it would meet first. Per the taker's
    ``selfTradePreventionMode``: ``EXPIRE_MAKER`` expires those resting orders (status EXPIRED_IN_MATCH)
    and the taker trades on; ``EXPIRE_TAKER`` expires the taker unfilled; ``EXPIRE_BOTH`` both; ``NONE``
    lets it trade with them (each fills at its own price, as maker, against the taker). True when the
    taker goes on to fill what is left of it at ``px``."""
    acct = state.account
    own = sorted(
        (
            o
            for o in acct.open_orders(taker.symbol, algo=False)
            if o.type == "LIMIT"
            and o.order_id != taker.order_id
            and o.side != taker.side
            and (o.price <= px + 1e-9 if taker.side == "BUY" else o.price >= px - 1e-9)
        ),
        key=lambda o: (o.price if taker.side == "BUY" else -o.price, o.order_id),
    )
    if not own:
        return True
    now = taker.time
    if taker.stp in ("EXPIRE_MAKER", "EXPIRE_BOTH"):
        for o in own:
            o.status, o.update_time = "EXPIRED_IN_MATCH", now
    if taker.stp in ("EXPIRE_TAKER", "EXPIRE_BOTH"):
        taker.status, taker.update_time = "EXPIRED_IN_MATCH", now
        return False
    if taker.stp == "NONE":
        for o in own:
            held = [abs(acct.position(x.symbol, x.position_side)[0]) for x in (o, taker) if not x.opening]
            q = min([o.remaining, taker.remaining, *held])
            if q <= 1e-12:
                break
            _book_fill(state, o, o.price, q, True, now)
            _book_fill(state, taker, o.price, q, False, now)
        return taker.remaining > 1e-12
    return True


def handle_new_algo_order(state: EmulatorState, request: Request) -> dict:
    if request.query.get("algoType") != "CONDITIONAL":
        raise ApiError(
            400, -1102, "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed."
        )
    order = _new_order(state, request, algo=True)
    # Trigger check against the last trade even under "next_open": a stop the next open gaps through
    # rests and fills at that open, as in the backtest.
    ref = _reference_price(state, order.symbol)
    px, falls = _buy_trigger(order)
    if (falls and ref <= px) or (not falls and ref >= px):
        raise ApiError(400, -2021, "Order would immediately trigger.")
    state.account.orders[order.order_id] = order
    return algo_json(order)


def order_json(o: Order) -> dict:
    avg = o.cum_quote / o.filled if o.filled > 0 else 0.0
    return {
        "orderId": o.actual_order_id or o.order_id,
        "symbol": o.symbol,
        "status": o.status,
        "clientOrderId": o.client_id,
        "price": _num(o.price),
        "avgPrice": _num(avg),
        "origQty": _num(o.qty),
        "executedQty": _num(o.filled),
        "cumQuote": _num(o.cum_quote),
        "timeInForce": o.tif,
        "type": "MARKET" if o.algo else o.type,
        "reduceOnly": o.reduce_only,
        "closePosition": False,
        "side": o.side,
        "positionSide": o.position_side,
        "stopPrice": _num(o.stop_price),
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": o.type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": o.stp,
        "goodTillDate": 0,
        "time": o.time,
        "updateTime": o.update_time,
    }


_ALGO_STATUS = {"NEW": "NEW", "CANCELED": "CANCELED", "EXPIRED": "EXPIRED"}


def algo_json(o: Order) -> dict:
    status = _ALGO_STATUS.get(o.status, "FINISHED") if not o.actual_order_id else "FINISHED"
    if o.status in ("NEW",) and not o.actual_order_id:
        status = "NEW"
    return {
        "algoId": o.order_id,
        "clientAlgoId": o.client_id,
        "algoType": "CONDITIONAL",
        "orderType": o.type,
        "symbol": o.symbol,
        "side": o.side,
        "positionSide": o.position_side,
        "timeInForce": o.tif,
        "quantity": _num(o.qty),
        "algoStatus": status,
        "actualOrderId": str(o.actual_order_id) if o.actual_order_id else "",
        "actualPrice": _num(o.cum_quote / o.filled) if o.filled else "0",
        "triggerPrice": _num(o.stop_price),
        "price": "0",
        "icebergQuantity": None,
        "selfTradePreventionMode": o.stp,
        "workingType": "CONTRACT_PRICE",
        "priceMatch": "NONE",
        "closePosition": False,
        "priceProtect": False,
        "reduceOnly": o.reduce_only,
        "activatePrice": "",
        "callbackRate": "",
        "createTime": o.time,
        "updateTime": o.update_time,
        "triggerTime": o.update_time if o.actual_order_id else 0,
        "goodTillDate": 0,
    }


def _find(state: EmulatorState, request: Request, algo: bool) -> Order:
    symbol = _symbol(state, request) if not algo or "symbol" in request.query else None
    oid = _int_param(request, "algoId" if algo else "orderId")
    cid = request.query.get("clientAlgoId" if algo else "origClientOrderId")
    if oid is None and not cid:
        raise ApiError(
            400, -1102, "Param orderId or origClientOrderId must be sent, but both were empty/null!"
        )
    candidates = [
        o
        for o in state.account.orders.values()
        if (o.algo == algo or (not algo and o.actual_order_id))  # a triggered conditional is a regular order
        and (symbol is None or o.symbol == symbol)
        and (oid is None or o.order_id == oid or (not algo and o.actual_order_id == oid))
        and (not cid or o.client_id == cid)
    ]
    if not candidates:
        raise ApiError(400, -2013, "Order does not exist.")
    return max(candidates, key=lambda o: o.order_id)  # the newest with a reused client id


def handle_get_order(state: EmulatorState, request: Request) -> dict:
    return order_json(_find(state, request, algo=False))


def _cancel(state: EmulatorState, request: Request, algo: bool) -> Order:
    try:
        order = _find(state, request, algo)
    except ApiError:
        raise ApiError(400, -2011, "Unknown order sent.") from None
    if order.status not in ("NEW", "PARTIALLY_FILLED"):
        raise ApiError(400, -2011, "Unknown order sent.")
    order.status, order.update_time = "CANCELED", state.server_time()
    return order


def handle_cancel_order(state: EmulatorState, request: Request) -> dict:
    return order_json(_cancel(state, request, algo=False))


def handle_cancel_algo_order(state: EmulatorState, request: Request) -> dict:
    o = _cancel(state, request, algo=True)
    return {"algoId": o.order_id, "clientAlgoId": o.client_id, "code": "200", "msg": "success"}


def handle_open_orders(state: EmulatorState, request: Request) -> list:
    symbol = _symbol(state, request) if "symbol" in request.query else None
    return [order_json(o) for o in state.account.open_orders(symbol, algo=False)]


def handle_open_algo_orders(state: EmulatorState, request: Request) -> list:
    symbol = _symbol(state, request) if "symbol" in request.query else None
    return [algo_json(o) for o in state.account.open_orders(symbol, algo=True)]


def _cancel_all(state: EmulatorState, request: Request, algo: bool) -> dict:
    symbol = _symbol(state, request)
    now = state.server_time()
    for o in state.account.open_orders(symbol, algo=algo):
        o.status, o.update_time = "CANCELED", now
    return {"code": 200, "msg": "The operation of cancel all open order is done."}


def handle_cancel_all(state: EmulatorState, request: Request) -> dict:
    return _cancel_all(state, request, algo=False)


def handle_cancel_all_algo(state: EmulatorState, request: Request) -> dict:
    return _cancel_all(state, request, algo=True)


# -- account ----------------------------------------------------------------------------------------
def _liquidation_price(state: EmulatorState, symbol: str) -> float:
    """Cross-margin price where equity meets maintenance margin with both sides held (0 when none)."""
    acct = state.account
    ql = max(acct.position(symbol, "LONG")[0], 0.0) + max(acct.position(symbol, "BOTH")[0], 0.0)
    qs = -min(acct.position(symbol, "SHORT")[0], 0.0) - min(acct.position(symbol, "BOTH")[0], 0.0)
    if ql == 0 and qs == 0:
        return 0.0
    el = acct.position(symbol, "LONG")[1] if acct.dual_side else acct.position(symbol, "BOTH")[1]
    es = acct.position(symbol, "SHORT")[1] if acct.dual_side else acct.position(symbol, "BOTH")[1]
    denom = MAINT_MARGIN_RATE * (ql + qs) - ql + qs
    if denom == 0:
        return 0.0
    px = (acct.wallet - ql * el + qs * es) / denom
    return px if px > 0 else 0.0


def _position_rows(state: EmulatorState, symbol: str | None) -> list[dict]:
    acct = state.account
    rows = []
    sides = ("LONG", "SHORT") if acct.dual_side else ("BOTH",)
    symbols = sorted(
        {s for (s, _), p in acct.positions.items() if p[0] != 0} | {o.symbol for o in acct.open_orders()}
    )
    if symbol is not None:
        symbols = [symbol]
    for sym in symbols:
        liq = _liquidation_price(state, sym)
        mark = _mark(state, sym)
        for side in sides:
            q, e = acct.position(sym, side)
            lev = acct.leverage.get(sym, 20)
            rows.append(
                {
                    "symbol": sym,
                    "positionSide": side,
                    "positionAmt": _num(q),
                    "entryPrice": _num(e),
                    "breakEvenPrice": _num(e),
                    "markPrice": _num(mark),
                    "unRealizedProfit": _num(_upnl(state, sym, [q, e])),
                    "liquidationPrice": _num(liq if q != 0 else 0.0),
                    "isolatedMargin": "0",
                    "notional": _num(q * mark),
                    "marginAsset": "USDT",
                    "isolatedWallet": "0",
                    "initialMargin": _num(abs(q) * mark / lev),
                    "maintMargin": _num(abs(q) * mark * MAINT_MARGIN_RATE),
                    "positionInitialMargin": _num(abs(q) * mark / lev),
                    "openOrderInitialMargin": "0",
                    "adl": 0,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "leverage": str(lev),
                    "marginType": "isolated" if acct.margin_type.get(sym) == "ISOLATED" else "cross",
                    "maxNotionalValue": "1000000",
                    "isAutoAddMargin": "false",
                    "updateTime": state.server_time(),
                }
            )
    return rows


def handle_position_risk(state: EmulatorState, request: Request) -> list:
    symbol = _symbol(state, request) if "symbol" in request.query else None
    return _position_rows(state, symbol)


def _totals(state: EmulatorState) -> dict[str, float]:
    acct = state.account
    upnl = sum(_upnl(state, s, p) for (s, _), p in acct.positions.items())
    maint = sum(abs(p[0]) * _mark(state, s) * MAINT_MARGIN_RATE for (s, _), p in acct.positions.items())
    pos_im, order_im = _initial_margins(state)
    return {
        "wallet": acct.wallet,
        "upnl": upnl,
        "margin": acct.wallet + upnl,
        "maint": maint,
        "available": _available(state),
        "position_im": pos_im,
        "order_im": order_im,
    }


def handle_account(state: EmulatorState, request: Request) -> dict:
    t = _totals(state)
    now = state.server_time()
    asset = {
        "asset": "USDT",
        "walletBalance": _num(t["wallet"]),
        "unrealizedProfit": _num(t["upnl"]),
        "marginBalance": _num(t["margin"]),
        "maintMargin": _num(t["maint"]),
        "initialMargin": _num(t["position_im"] + t["order_im"]),
        "positionInitialMargin": _num(t["position_im"]),
        "openOrderInitialMargin": _num(t["order_im"]),
        "crossWalletBalance": _num(t["wallet"]),
        "crossUnPnl": _num(t["upnl"]),
        "availableBalance": _num(t["available"]),
        "maxWithdrawAmount": _num(t["available"]),
        "marginAvailable": True,
        "updateTime": now,
    }
    return {
        "feeTier": 0,
        "canTrade": True,
        "canDeposit": True,
        "canWithdraw": True,
        "updateTime": 0,
        "multiAssetsMargin": False,
        "tradeGroupId": -1,
        "totalInitialMargin": _num(t["position_im"] + t["order_im"]),
        "totalMaintMargin": _num(t["maint"]),
        "totalWalletBalance": _num(t["wallet"]),
        "totalUnrealizedProfit": _num(t["upnl"]),
        "totalMarginBalance": _num(t["margin"]),
        "totalPositionInitialMargin": _num(t["position_im"]),
        "totalOpenOrderInitialMargin": _num(t["order_im"]),
        "totalCrossWalletBalance": _num(t["wallet"]),
        "totalCrossUnPnl": _num(t["upnl"]),
        "availableBalance": _num(t["available"]),
        "maxWithdrawAmount": _num(t["available"]),
        "assets": [asset],
        "positions": [
            {
                k: r[k]
                for k in (
                    "symbol",
                    "positionSide",
                    "positionAmt",
                    "unRealizedProfit",
                    "notional",
                    "maintMargin",
                    "entryPrice",
                )
            }
            | {
                "isolatedMargin": "0",
                "isolatedWallet": "0",
                "initialMargin": r["initialMargin"],
                "updateTime": r["updateTime"],
            }
            for r in _position_rows(state, None)
        ],
    }


def handle_balance(state: EmulatorState, request: Request) -> list:
    t = _totals(state)
    return [
        {
            "accountAlias": "emu",
            "asset": "USDT",
            "balance": _num(t["wallet"]),
            "crossWalletBalance": _num(t["wallet"]),
            "crossUnPnl": _num(t["upnl"]),
            "availableBalance": _num(t["available"]),
            "maxWithdrawAmount": _num(t["available"]),
            "marginAvailable": True,
            "updateTime": state.server_time(),
        }
    ]


def _has_exposure(state: EmulatorState, symbol: str | None) -> bool:
    acct = state.account
    return any(p[0] != 0 for (s, _), p in acct.positions.items() if symbol is None or s == symbol) or bool(
        acct.open_orders(symbol)
    )


def handle_get_dual(state: EmulatorState, request: Request) -> dict:
    return {"dualSidePosition": state.account.dual_side}


def handle_post_dual(state: EmulatorState, request: Request) -> dict:
    on = _bool_param(request, "dualSidePosition")
    if on is None:
        raise ApiError(
            400, -1102, "Mandatory parameter 'dualSidePosition' was not sent, was empty/null, or malformed."
        )
    if on == state.account.dual_side:
        raise ApiError(400, -4059, "No need to change position side.")
    if _has_exposure(state, None):
        raise ApiError(400, -4068, "Position side cannot be changed if there exists position.")
    state.account.dual_side = on
    return {"code": 200, "msg": "success"}


def handle_leverage(state: EmulatorState, request: Request) -> dict:
    symbol = _symbol(state, request)
    lev = _int_param(request, "leverage")
    if lev is None:
        raise ApiError(
            400, -1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed."
        )
    if not 1 <= lev <= 125:
        raise ApiError(400, -4028, f"Leverage {lev} is not valid")
    state.account.leverage[symbol] = lev
    return {"leverage": lev, "maxNotionalValue": "1000000", "symbol": symbol}


def handle_margin_type(state: EmulatorState, request: Request) -> dict:
    symbol = _symbol(state, request)
    kind = _param(request, "marginType")
    if kind not in ("ISOLATED", "CROSSED"):
        raise ApiError(400, -4044, "The margin type is invalid.")
    if state.account.margin_type.get(symbol, "CROSSED") == kind:
        raise ApiError(400, -4046, "No need to change margin type.")
    if _has_exposure(state, symbol):
        raise ApiError(400, -4048, "Margin type cannot be changed if there exists position.")
    state.account.margin_type[symbol] = kind
    return {"code": 200, "msg": "success"}


def _time_window(request: Request, default_limit: int, max_limit: int) -> tuple[int | None, int | None, int]:
    start, end = _int_param(request, "startTime"), _int_param(request, "endTime")
    limit = _int_param(request, "limit") or default_limit
    if limit <= 0 or limit > max_limit:
        raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    if start is not None and end is not None and start > end:
        raise ApiError(400, -1023, "Start time is greater than end time.")
    return start, end, limit


def handle_income(state: EmulatorState, request: Request) -> list:
    symbol = _symbol(state, request) if "symbol" in request.query else None
    kind = request.query.get("incomeType")
    start, end, limit = _time_window(request, 100, 1000)
    rows = [
        r
        for r in state.account.income
        if (symbol is None or r["symbol"] == symbol)
        and (kind is None or r["incomeType"] == kind)
        and (start is None or r["time"] >= start)
        and (end is None or r["time"] <= end)
    ]
    rows.sort(key=lambda r: (r["time"], r["tranId"]))
    return rows[:limit] if start is not None else rows[-limit:]


def handle_user_trades(state: EmulatorState, request: Request) -> list:
    symbol = _symbol(state, request)
    start, end, limit = _time_window(request, 500, 1000)
    if start is not None and end is not None and end - start > USER_TRADES_MAX_WINDOW_MS:
        raise ApiError(400, -4181, "The time between startTime and endTime can not be longer than 7 days.")
    from_id = _int_param(request, "fromId")
    rows = [
        t
        for t in state.account.trades
        if t.symbol == symbol
        and (start is None or t.time >= start)
        and (end is None or t.time <= end)
        and (from_id is None or t.trade_id >= from_id)
    ]
    rows = rows[:limit] if (start is not None or from_id is not None) else rows[-limit:]
    return [
        {
            "symbol": t.symbol,
            "id": t.trade_id,
            "orderId": t.order_id,
            "side": t.side,
            "price": _num(t.price),
            "qty": _num(t.qty),
            "realizedPnl": _num(t.realized_pnl),
            "quoteQty": _num(t.price * t.qty),
            "commission": _num(t.commission),
            "commissionAsset": "USDT",
            "time": t.time,
            "positionSide": t.position_side,
            "buyer": t.side == "BUY",
            "maker": t.maker,
        }
        for t in rows
    ]


def handle_premium_index(state: EmulatorState, request: Request) -> dict:
    symbol = _symbol(state, request)
    prem = state.account.premium.get(symbol)
    now = state.server_time()
    rate, next_t = "", 0
    data = state.funding.get(symbol)
    ref_time = prem.time if prem is not None else now
    if data is not None:
        i = int(np.searchsorted(data.funding_time, ref_time, side="right"))
        if i < len(data.funding_time):
            rate, next_t = f"{data.rate[i]:.8f}", int(data.funding_time[i])
    mark = _num(prem.mark_price) if prem is not None else ""
    return {
        "symbol": symbol,
        "markPrice": mark,
        "indexPrice": mark,
        "estimatedSettlePrice": mark,
        "lastFundingRate": rate,
        "interestRate": "0.00010000",
        "nextFundingTime": next_t,
        "time": ref_time,
    }


def handle_leverage_bracket(state: EmulatorState, request: Request) -> list:
    symbols = [_symbol(state, request)] if "symbol" in request.query else [m["symbol"] for m in state.markets]
    brackets = [
        {
            "bracket": 1,
            "initialLeverage": 125,
            "notionalCap": 50000,
            "notionalFloor": 0,
            "maintMarginRatio": MAINT_MARGIN_RATE,
            "cum": 0.0,
        },
        {
            "bracket": 2,
            "initialLeverage": 100,
            "notionalCap": 600000,
            "notionalFloor": 50000,
            "maintMarginRatio": 0.005,
            "cum": 50.0,
        },
    ]
    return [{"symbol": s, "notionalCoef": 1.0, "brackets": brackets} for s in symbols]


Handler = Callable[["EmulatorState", "Request"], object]

#: (method, path) -> handler answering the JSON payload; every one is SIGNED except premiumIndex.
PRIVATE_ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/fapi/v1/order"): handle_new_order,
    ("GET", "/fapi/v1/order"): handle_get_order,
    ("DELETE", "/fapi/v1/order"): handle_cancel_order,
    ("GET", "/fapi/v1/openOrders"): handle_open_orders,
    ("DELETE", "/fapi/v1/allOpenOrders"): handle_cancel_all,
    ("POST", "/fapi/v1/algoOrder"): handle_new_algo_order,
    ("DELETE", "/fapi/v1/algoOrder"): handle_cancel_algo_order,
    ("GET", "/fapi/v1/openAlgoOrders"): handle_open_algo_orders,
    ("DELETE", "/fapi/v1/algoOpenOrders"): handle_cancel_all_algo,
    ("GET", "/fapi/v2/positionRisk"): handle_position_risk,
    ("GET", "/fapi/v3/positionRisk"): handle_position_risk,
    ("GET", "/fapi/v2/account"): handle_account,
    ("GET", "/fapi/v3/account"): handle_account,
    ("GET", "/fapi/v2/balance"): handle_balance,
    ("GET", "/fapi/v3/balance"): handle_balance,
    ("GET", "/fapi/v1/positionSide/dual"): handle_get_dual,
    ("POST", "/fapi/v1/positionSide/dual"): handle_post_dual,
    ("POST", "/fapi/v1/leverage"): handle_leverage,
    ("POST", "/fapi/v1/marginType"): handle_margin_type,
    ("GET", "/fapi/v1/income"): handle_income,
    ("GET", "/fapi/v1/userTrades"): handle_user_trades,
    ("GET", "/fapi/v1/leverageBracket"): handle_leverage_bracket,
}
PUBLIC_ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/fapi/v1/premiumIndex"): handle_premium_index,
}


def run(state: EmulatorState, request: Request, handler: Handler, signed: bool) -> Response:
    """Check the signature (SIGNED routes), run the handler under the state lock, map ApiError."""
    from emulator.binance_usdm import Response

    try:
        with state.lock:
            if signed:
                check_signature(state, request)
            payload = handler(state, request)
    except ApiError as err:
        return Response(err.status, {"code": err.code, "msg": err.msg})
    return Response(200, payload)
