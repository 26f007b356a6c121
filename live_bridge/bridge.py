"""The bar loop: one closed bar in, the engine's step, orders out; ops commands applied between bars.

``Bridge.on_bar`` is the whole per-bar path. Paper and replay: ``EngineSession.step_paper`` (the
engine's own bar step, fills simulated by its fill model). Live: exchange fills since the last bar
are booked (``fill_slot_nb``), then ``EngineSession.step_close`` (the engine's own bar close:
funding, regime, mark, gates, decide, record), then the order diff (``live_bridge.orders``) is sent
through the ``Gateway`` within the venue's rate limits (the gateway's ``RequestPacer``,
``live_bridge.pacing``), with the engine's post-only retry ladder
(``EngineSession.post_only_rejected`` / ``retry_price`` / ``retry_rests``: the kernels the simulated
venue runs; only the sending is done here). A placement the pacer or the exchange refuses for rate
(``RateLimited``) ends the bar's placements (the rest wait for the next bar); a replacement is never
placed while the cancel of the order it replaces failed or has an unknown outcome (no duplicate
resting order). While the exchange bans the IP (418), entries pause with the ban as the reason, and
nothing is sent until it ends.

Fail closed: a stale bar feed, a missing funding rate or next settlement, or an unreadable margin
figure pauses new entries (resting entries are cancelled, exits stay) with the reason on the ops API
and the metrics; the pause lifts by itself when the input is healthy again. An operator pause is
lifted only by ``resume``. Commands from the ops API are applied only here (``apply_commands``, called by
the control loop between bars); a pause or flatten the API accepted holds entry orders at once
(``entries_allowed`` reads the ops state's hold, ``_place`` checks it before every entry order).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from gridctl.configs.errors import GridctlError
from gridctl.engine.enums import Liquidity, RiskState, enum_name
from gridctl.engine.gates import gate_status, held_gates
from gridctl.engine.params import (
    P_CB_COOLDOWN_S,
    P_CB_WINDOW_S,
    P_GRID_STEP_BPS,
    P_ORDER_PRICE_TOL_BPS,
    P_ORDER_QTY_TOL_PCT,
    P_SL_STEPS,
)
from gridctl.engine.state import (
    S_CB_ACTIVE,
    S_CB_UNTIL,
    S_CENTER,
    S_DIRTY,
    S_ERRORS,
    S_FUNDING_NET,
    S_HALTED,
    S_LONG_AVG,
    S_LONG_QTY,
    S_REALIZED,
    S_REGIME,
    S_SHORT_AVG,
    S_SHORT_QTY,
    S_STATE,
    S_THROTTLE,
    S_UNREAL,
    SL_LOT_ON,
    SL_LOT_PRICE,
    SL_LOT_QTY,
    SL_ORD_ON,
    SL_ORD_PRICE,
    SL_ORD_QTY,
    SL_RUNG_PRICE,
    SL_SL,
    SL_TP,
    set_throttle,
)
from gridctl.live_bridge import gateway as gw
from gridctl.live_bridge import killpoint
from gridctl.live_bridge.journal import Journal
from gridctl.live_bridge.ops import OpsState
from gridctl.live_bridge.orders import (
    RestingOrder,
    WantedOrder,
    desired_orders,
    diff_orders,
    encode_client_id,
    parse_client_id,
    stop_coverage,
)
from gridctl.live_bridge.replay import ClosedBar
from gridctl.live_bridge.session import EngineSession

_POS = ("LONG", "SHORT")


def _snap(x: float, unit: float) -> float:
    """``x`` on the grid of ``unit`` (nearest), written with the unit's decimals."""
    decimals = max(0, -Decimal(repr(float(unit))).normalize().as_tuple().exponent)
    return round(round(x / unit) * unit, decimals)


def wall_ms() -> int:
    return int(time.time() * 1000)


def _utc(ms: float) -> str:
    """``ms`` since the epoch as an ISO UTC time (second precision)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000.0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: The bar feed counts as stale (entries paused) when no bar closed for this many bar lengths.
STALE_AFTER_BARS = 2
#: A flatten the exchange could not complete is tried again this many seconds later (so it goes out
#: within a second of the exchange answering again).
FLATTEN_RETRY_S = 0.5

#: Protection failures (a stop refused, a position found without full stop coverage, a protective close
#: that did not go through) within the circuit breaker's window that open the breaker and pause entries.
PROTECTION_FAIL_LIMIT = 3
#: Binance's answer to a stop that would trigger at once ("Order would immediately trigger.").
IMMEDIATE_TRIGGER = -2021


def fills_vwap(rows: list[Any]) -> tuple[float, float, int, int]:
    """(qty, VWAP price, liquidity, last time) of journaled fill rows ``(price, qty, liquidity, ts)``:
    taker if any part was; price and time 0 for no rows."""
    qty = sum(r[1] for r in rows)
    if qty <= 0.0:
        return qty, 0.0, Liquidity.MAKER, 0
    price = sum(r[0] * r[1] for r in rows) / qty
    liq = Liquidity.TAKER if any(r[2] == "taker" for r in rows) else Liquidity.MAKER
    return qty, price, liq, max(r[3] for r in rows)


@dataclass
class BridgeOptions:
    """Per-run settings: mode, run id and the strategy's execution fields (``runner.bridge_options``)."""

    mode: str  # paper | live | replay
    run_id: str
    maker_only: bool = True
    retry_delay_ms: int = 100
    unexplained_position: str = "protect"  # execution.unexplained_position: protect | flatten


def _quantiles(samples: list[float]) -> dict[str, Any]:
    s = sorted(samples)
    if not s:
        return {"n": 0, "median_ms": None, "p99_ms": None, "max_ms": None}
    p99 = s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)]
    return {"n": len(s), "median_ms": statistics.median(s), "p99_ms": p99, "max_ms": s[-1]}


@dataclass
class Latency:
    """Bar received -> orders sent, per bar, and where that time went (``phases``, ms per bar)."""

    samples_ms: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)

    def add(self, ms: float) -> None:
        self.samples_ms.append(ms)

    def phase(self, name: str, ms: float) -> None:
        self.phases.setdefault(name, []).append(ms)

    def summary(self) -> dict[str, Any]:
        out = _quantiles(self.samples_ms)
        out["phases"] = {name: _quantiles(v) for name, v in self.phases.items()}
        return out


class Bridge:
    """Drives one ``EngineSession`` from closed bars; live mode also talks to a ``Gateway``."""

    def __init__(
        self,
        session: EngineSession,
        options: BridgeOptions,
        ops: OpsState | None = None,
        journal: Journal | None = None,
        gateway: gw.Gateway | None = None,
        now_ms: Callable[[], int] = wall_ms,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if options.mode not in ("paper", "live", "replay"):
            raise GridctlError(f"mode must be paper, live or replay, got {options.mode!r}")
        if options.mode == "live" and gateway is None:
            raise GridctlError("live mode needs a gateway")
        self.s = session
        self.o = options
        self.ops = ops
        self.journal = journal
        self.gw = gateway
        # Live: the gateway's request pacer (the one live pacing: live_bridge.pacing), if it has one.
        self.pacer = getattr(gateway, "pacer", None)
        self._rate_limited = False  # a placement was refused for rate in this sync_orders
        self.last_deferred: list[tuple[int, int, str]] = []
        self.now_ms = now_ms
        self.sleep = sleep
        self.operator_paused = False
        self.fail_reasons: dict[str, str] = {}
        self.errors: Counter[str] = Counter()
        self.latency = Latency()
        self.fills_cursor: int | None = None
        # A basket's symbol: its checkpoint is the basket's (every symbol and the account, one transaction)
        self.checkpoint_with: Callable[[], None] | None = None
        # a basket's one account read per poll and per bar (live_bridge.basket.SharedAccountRead): this
        # symbol's view of it, served once per read; None (one symbol) reads the account itself
        self.shared_account: Any = None
        self.account: gw.Account | None = None  # live: the last exchange account read
        # Live: funding the account was paid / received (FUNDING_FEE income) since this bridge started,
        # read incrementally after each bar; unknown while unreadable (the reason in income_problem).
        self.funding_income = 0.0
        self.income_problem: str | None = None
        self._income_cursor = now_ms()
        self.open_orders: list[gw.OpenOrder] = []
        self._orders_unknown = True  # no exchange read yet: the first sync reads the open orders
        self.deferred = 0
        self.held = 0  # entry orders not sent because entries were paused after they were planned
        self.sent = 0
        self.last_bar_close_ms: int | None = None
        self.log: list[str] = []
        self._booked_flatten: set[str] = set()
        # Exchange exposure the engine cannot explain (foreign or unbookable trades, positions that differ
        # after every trade was booked): entries refused under the "reconcile" reason, exposure guarded.
        self.unexplained: list[str] = []
        self.unexplained_qty = [0.0, 0.0]  # exchange minus engine position per side, when last compared
        self._retries: list[WantedOrder] = []  # post-only rejected entries waiting for their retries
        self._retried_ms: float | None = None
        self._flatten_retry_at = 0.0  # monotonic time before which a refused flatten is not tried again
        self.funding_stale: str | None = None  # why the funding input is not current (premium index)
        self._live_rules: gw.MarketRules | None = None  # the exchange's rules of the symbol, read once
        # Recent refusals of our orders by the exchange (client id, code, message): /status only.
        self.rejections: list[dict[str, Any]] = []
        # Protection invariant (``check_protection``): stops refused as immediately triggering (closed at
        # market after the diff), partly filled entries whose rest is cancelled before they are booked,
        # recent protection failures (ms), what the last check found and the last events with reasons.
        self._refused: list[WantedOrder] = []
        self._closing = False  # inside _close_at_market: refusals wait for the next diff
        self._partial_entries: set[str] = set()
        self._protect_failed_ms: list[int] = []
        self._protect_pause_until = 0
        self.protect_checks = 0
        self.uncovered: dict[str, float] = {}
        self.protection_events: list[dict[str, Any]] = []
        self.stale_after_ms = STALE_AFTER_BARS * session.bar_ms
        self.publish()

    # --- state the ops API and metrics see

    @property
    def entries_allowed(self) -> bool:
        """No operator pause (applied, or accepted by the ops API and not yet applied), no input problem."""
        held = self.ops is not None and self.ops.entries_held()
        return not self.operator_paused and not held and not self.fail_reasons

    def pause_reasons(self) -> list[str]:
        out = ["operator pause"] if self.operator_paused else []
        return out + [f"{k}: {v}" for k, v in sorted(self.fail_reasons.items())]

    def _note(self, kind: str, detail: str) -> None:
        self.log.append(f"{kind}: {detail}")
        del self.log[:-200]
        if self.journal is not None:
            self.journal.note(self.now_ms(), kind, detail)

    # --- ops commands (queued by the API thread, applied here)

    def apply_commands(self) -> list[dict[str, Any]]:
        """Apply every queued ops command in order; returns what each did.

        A flatten the exchange could not complete (unreachable, a close refused) stays queued, with the
        commands behind it, and is tried again ``FLATTEN_RETRY_S`` later: it goes on when the exchange
        answers, and a resume sent after it does not overtake it.
        """
        if self.ops is None:
            return []
        done = []
        cmds = self.ops.drain()
        for i, cmd in enumerate(cmds):
            result: dict[str, Any] = {"id": cmd.id, "kind": cmd.kind}
            try:
                if cmd.kind == "throttle":
                    set_throttle(self.s.state, cmd.value)
                    result["throttle"] = float(self.s.state[S_THROTTLE])
                elif cmd.kind == "pause":
                    self.operator_paused = True
                    self._block_entries()
                elif cmd.kind == "resume":
                    self.operator_paused = False
                    self.s.state[S_DIRTY] = 1.0
                elif cmd.kind == "flatten":
                    self.operator_paused = True
                    if time.monotonic() < self._flatten_retry_at:
                        self.ops.requeue(cmds[i:])
                        break
                    problem = self.flatten()
                    if problem:
                        self._flatten_retry_at = time.monotonic() + FLATTEN_RETRY_S
                        self._note("ops", f"flatten {cmd.id} not complete, retrying: {problem}")
                        self.ops.requeue(cmds[i:])
                        break
                result["ok"] = True
            except (GridctlError, gw.GatewayError) as err:  # e.g. a flatten refused during a 418 ban
                result.update(ok=False, error=str(err))
            self._note("ops", str(result))
            self.ops.settle(cmd, result)
            done.append(result)
        if cmds:  # a flatten put back too: why it is not complete shows at once
            self.publish()
        return done

    def _block_entries(self) -> None:
        self.s.block_entries()
        if self.o.mode == "live":
            self.sync_orders()

    def flatten(self) -> str | None:
        """Cancel entries and close both sides: paper at the last close, live with market orders.

        Live: entries are cancelled first, then both positions are closed with market orders; their
        fills are booked at once and the lots' TP/SL (now without a position) are cancelled. A close
        that did not go through leaves its lots and their exits in place, and the reason is returned
        (None: every position was closed or there was none).
        """
        ts = self.s.last_ts or self.now_ms()
        if self.o.mode != "live":
            self.s.paper_flatten(ts)
            return None
        self.s.block_entries()
        self.sync_orders()
        try:
            closed = self._send_flatten(booked=False)
        except gw.GatewayError as err:
            self._error("flatten", err)
            return f"account unreadable: {err}"
        self.sync_fills()
        self.sync_orders()
        return None if closed else "a closing market order did not go through"

    def _send_flatten(self, booked: bool) -> bool:
        """Market orders closing both positions of the account; False when one did not go through.

        A side larger than the symbol's MARKET_LOT_SIZE maximum goes out as market orders of at most that
        each (``market_chunks``), one after the other; the first that does not go through ends the side
        (the rest of it is what the next flatten reads on the exchange). ``booked``: the engine already
        closed the side (a drawdown halt), so no chunk is booked (``_not_booked``). Otherwise the engine
        closes the side once, when its last chunk completes, at the VWAP of all of them (``_maybe_book``):
        the last chunk is journaled as such before it is sent (``flatten-last:<id>``). A kill between
        chunks leaves the earlier chunks' fills journaled but unbooked (``pending_flatten``): the restart
        counts them against the engine's position, the flatten command is still queued, and it reads the
        exchange's position again and closes what is left, no more.
        """
        assert self.gw is not None
        acct = self.gw.account(self.s.symbol)
        ok = True
        for side, pos in enumerate(_POS):
            p = acct.positions.get(pos)
            if p is None or p.qty <= 0.0:
                if not booked and self.pending_flatten(side):
                    self._book_flatten_chunks(side)  # its last chunk was the position's end
                continue
            order_side = "sell" if side == 0 else "buy"
            chunks = self.market_chunks(p.qty)
            for i, qty in enumerate(chunks):
                cid = encode_client_id(self.o.run_id, side, 0, "flatten", self._seq())
                req = gw.OrderRequest(cid, pos, order_side, "market", qty, reduce_only=True)
                if booked:
                    self._not_booked(cid)
                elif i == len(chunks) - 1 and self.journal is not None:
                    self.journal.set_meta(f"flatten-last:{cid}", "1")  # durable before it is sent
                want = WantedOrder(side, 0, "flatten", order_side, "market", 0.0, qty, False, True)
                if not self._place(req, want):
                    ok = False
                    break
                if i < len(chunks) - 1:
                    killpoint.hit("chunk")  # test-only: die between two chunks of one side
        return ok

    # --- live: market orders within MARKET_LOT_SIZE

    def market_lot_max(self) -> float:
        """MARKET_LOT_SIZE maxQty of the symbol: the exchange's, read from its markets once (the readiness
        checklist compared it with the venue file's), and never above the venue file's."""
        venue_max = float(self.s.venue.rules_for(self.s.symbol).market_max_qty)
        if self._live_rules is None and self.gw is not None:
            try:
                self._live_rules = self.gw.market_rules(self.s.symbol)
            except gw.GatewayError as err:
                self._note("rules", f"exchange rules unreadable, the venue file's used: {err}")
        live_max = self._live_rules.market_max_qty if self._live_rules is not None else venue_max
        return min(venue_max, live_max)

    def market_chunks(self, qty: float) -> list[float]:
        """``qty`` as market order sizes of at most the market lot maximum (on the step grid): full chunks
        first, the rest last, as the backtest's flatten (``close_side_charged_nb``)."""
        step = float(self.s.venue.rules_for(self.s.symbol).step_size)
        top = max(step, math.floor(self.market_lot_max() / step + 1e-9) * step)
        left, out = _snap(qty, step), []
        while left > top + step / 2:
            out.append(_snap(top, step))
            left = _snap(left - top, step)
        if left > step / 2:
            out.append(left)
        return out

    def pending_flatten(self, side: int) -> list[str]:
        """Flatten chunks of ``side`` that filled but wait for the side's last chunk to be booked."""
        if self.journal is None:
            return []
        out = []
        for row in self.journal.orders(("sending", "open", "canceled"), kind="flatten"):
            cid = row["client_id"]
            if (
                int(row["side"]) == side
                and cid not in self._booked_flatten
                and not self.journal.meta(f"not-booked:{cid}")
                and self.journal.unbooked_fills(cid)
            ):
                out.append(cid)
        return out

    def _pending_flatten_qty(self, side: int) -> float:
        assert self.journal is not None
        return sum(r[1] for cid in self.pending_flatten(side) for r in self.journal.unbooked_fills(cid))

    def _book_flatten_chunks(self, side: int, last: str | None = None) -> None:
        """Book the flatten of ``side``: every pending chunk (and ``last``) at their VWAP, in one close."""
        assert self.journal is not None
        cids = self.pending_flatten(side) + ([last] if last else [])
        rows = [r for cid in dict.fromkeys(cids) for r in self.journal.unbooked_fills(cid)]
        qty, price, liq, ts = fills_vwap(rows)
        if qty <= 0.0:
            return
        self._book_waiting_entries(side)  # filled before the flatten, which closed them on the exchange
        self.s.book_flatten(side, price, ts, liq)
        for cid in dict.fromkeys(cids):
            self.journal.mark_booked(cid)
            self.journal.order_status(cid, "booked", self.now_ms())
        self._note("fill", f"flatten {_POS[side]} {round(qty, 12)} @ {price} in {len(set(cids))} order(s)")

    def _close_waiting_entries_at_halt(self) -> None:
        """A drawdown halt closes the exchange's whole sides, the filled part of an entry still waiting for
        its rest's cancel included: that part is booked as its lot (``_book_waiting_entries``) and closed
        as the halt closed the engine's lots (at the close, less the slippage, as taker), so the halted
        engine holds none of it, as the exchange will not."""
        if self.journal is None:
            return
        ts = self.s.last_ts or self.now_ms()
        for side in range(2):
            if self._pending_entries_qty(side) <= 0.0:
                continue
            self._book_waiting_entries(side)
            self.s.book_flatten(side, self.s.taker_close_price(side), ts)
            self._note("halt", f"{_POS[side]}: filled part of entries awaiting their cancel closed too")

    def _book_waiting_entries(self, side: int) -> None:
        """Book what filled of ``side``'s partly filled entries still waiting for their rest's cancel
        (``_partial_entries``; a cancel the exchange refused), before a flatten of that side: the flatten
        closed that quantity on the exchange, so the engine must hold it as lots first. Each stays in
        ``_partial_entries`` until its rest is cancelled (then nothing is left to book); a fill of the
        rest after this is exposure the engine cannot book (flagged unexplained, guarded). A part the
        engine refuses is flagged unexplained and its order journaled ``unbookable`` (as ``_maybe_book``
        does) and leaves ``_partial_entries``: its rest is cancelled by the order diff."""
        assert self.journal is not None
        for client_id in sorted(self._partial_entries):
            cid = parse_client_id(client_id)
            qty, price, liq, ts = fills_vwap(self.journal.unbooked_fills(client_id))
            if cid is None or cid.side != side or qty <= 0.0:
                continue
            self.journal.mark_booked(client_id)
            try:
                self.s.book_fill(cid.side, cid.level, cid.kind, price, qty, liq, ts)
            except GridctlError as err:
                self._note("fill-not-booked", f"{client_id}: {err}")
                self.journal.order_status(client_id, "unbookable", self.now_ms())
                self._partial_entries.discard(client_id)  # its rest goes with the order diff
                self._flag_unexplained(f"fill of {client_id} ({qty} @ {price}) not bookable: {err}")
                continue
            self._note(
                "fill", f"{client_id} {qty} @ {price} (part, its rest not cancelled yet: before a flatten)"
            )

    # --- fail-closed inputs

    def set_input_health(self, name: str, problem: str | None) -> None:
        """Record an input problem (pauses entries) or its recovery."""
        if problem:
            if self.fail_reasons.get(name) != problem:
                self._note("fail-closed", f"{name}: {problem}")
            self.fail_reasons[name] = problem
        elif name in self.fail_reasons:
            del self.fail_reasons[name]
            self._note("recovered", name)
            self.s.state[S_DIRTY] = 1.0

    def check_rate_limits(self) -> None:
        """Pause entries while the exchange bans the IP (418), with the ban as the reason; lift after."""
        if self.pacer is None:
            return
        ban = self.pacer.ban()
        was = "rate limit" in self.fail_reasons
        self.set_input_health("rate limit", ban)
        if bool(ban) != was:
            self.publish()

    def check_stale(self, now_ms: int | None = None) -> bool:
        """Pause entries when no bar closed for ``stale_after_ms``; True while stale (the between-bar
        health check: an exchange ban is looked at here too)."""
        self.check_rate_limits()
        now = self.now_ms() if now_ms is None else now_ms
        last = self.last_bar_close_ms
        stale = last is not None and now - last > self.stale_after_ms
        was = "bar feed" in self.fail_reasons
        self.set_input_health(
            "bar feed",
            f"no closed bar for {(now - last) / 1000:.0f} s (limit {self.stale_after_ms / 1000:.0f} s)"
            if stale
            else None,
        )
        if stale and not was:
            self._block_entries()
            self.publish()
        return stale

    def _check_funding(self, bar: ClosedBar) -> None:
        book = self.s.funding
        self.funding_stale = bar.funding_problem
        if bar.funding_problem:
            self.set_input_health("funding", bar.funding_problem)
        elif not book.ts:
            self.set_input_health("funding", "no settled funding rate known")
        elif bar.next_funding_ms is None:
            self.set_input_health("funding", "next funding settlement time unknown")
        elif not math.isfinite(book.rate[-1]):
            self.set_input_health("funding", "last funding rate is not a number")
        else:
            self.set_input_health("funding", None)

    # --- the bar

    def on_bar(self, bar: ClosedBar) -> None:
        """Process one closed bar end to end (see module docstring)."""
        t0 = time.perf_counter()
        self.open_bar(bar)
        if self.o.mode == "live":
            t2, halted_before = self.book_bar(t0)
            self.s.step_close(bar.ts, bar.open, bar.high, bar.low, bar.close, self.entries_allowed)
            killpoint.hit("bar")
            self.send_bar(t0, t2, halted_before)
        else:
            self.s.step_paper(bar.ts, bar.open, bar.high, bar.low, bar.close)
            if not self.entries_allowed:
                self.s.block_entries()
            self.latency.add((time.perf_counter() - t0) * 1000.0)
        self.end_bar()

    # The pieces of ``on_bar``, in order; a basket (``live_bridge.basket.BasketBridge``) runs each piece
    # for every symbol's bridge, with the account's one bar close between ``book_bar`` and ``send_bar``.

    def open_bar(self, bar: ClosedBar) -> None:
        """A closed bar arrived: queued ops commands applied, its funding merged, the inputs checked."""
        self.apply_commands()
        self.s.set_funding(bar.settled, bar.next_funding_ms)
        self.last_bar_close_ms = bar.ts + self.s.bar_ms
        self.check_rate_limits()
        if self.o.mode != "replay":
            # Stored data was validated when loaded (data.market); a live feed is checked every bar.
            self._check_funding(bar)
            self.check_stale()

    def book_bar(self, t0: float) -> tuple[float, bool]:
        """Live, before the engine's bar close: the exchange's fills since the last bar booked.

        Critical path: book the fills, decide, send. The open-order view is the last exchange read kept
        current with our own placements, cancels and fills; it and the margin figure are read again after
        the orders went out (for the next bar). Returns (the time the fills were booked, whether the
        engine was halted before the close)."""
        lat, t1 = self.latency, time.perf_counter()
        lat.phase("before", (t1 - t0) * 1000.0)
        self.sync_fills()
        t2 = time.perf_counter()
        lat.phase("fills", (t2 - t1) * 1000.0)
        return t2, self.s.state[S_HALTED] != 0.0

    def send_bar(self, t0: float, t2: float, halted_before: bool, read: bool = True) -> None:
        """Live, after the engine's bar close: the order diff sent, a new halt flattened on the exchange,
        the retries, then (``read``; a basket runs it after every symbol sent) ``read_after_bar``: the
        books and the account read again, the protection invariant checked."""
        lat, t3 = self.latency, time.perf_counter()
        lat.phase("engine", (t3 - t2) * 1000.0)
        self.sync_orders(refresh=self._orders_unknown, defer_retries=True)
        if self.s.state[S_HALTED] != 0.0 and not halted_before:
            self._note("halt", "drawdown halt: closing both sides on the exchange")
            self._close_waiting_entries_at_halt()
            self._send_flatten(booked=True)
        t4 = time.perf_counter()
        lat.phase("orders", (t4 - t3) * 1000.0)
        lat.add((t4 - t0) * 1000.0)
        self.run_retries()
        if self._retried_ms is not None:
            lat.phase("retries", self._retried_ms)
        if read:
            self.read_after_bar()

    def read_after_bar(self) -> None:
        """The last piece of ``send_bar``: the books and the account read again (for the next bar), the
        unexplained exposure reviewed, the protection invariant checked on those reads. A basket runs it
        for every symbol after every symbol's orders went out, on one account read (``shared_account``)."""
        self.refresh_orders()
        self.read_account()
        if self.unexplained:
            self.review_unexplained()
        self.check_protection("bar close", read=False)

    def end_bar(self) -> None:
        """After the bar: the checkpoint and the published state."""
        self.checkpoint()
        if self.o.mode != "replay" or self.ops is not None:
            self.publish()

    def protect_fills(self) -> int:
        """Between bar closes (``--live``): book the exchange fills that came in and send the new lots'
        TP/SL, and cancel the exits of closed lots, at once instead of at the next close.

        Only what the fills changed goes out: the entries are decided at the close, as in the backtest
        (whose simulated venue attaches a lot's exits at its fill). The poll is the protection check
        (``check_protection``: positions and open orders read, then the fills). Returns the bookings made.
        """
        if self.o.mode != "live":
            return 0
        booked = self.check_protection("fills poll")  # books the fills since and sends their exits
        if self.journal is not None and (booked or self.journal.pending):
            self.checkpoint()  # the bookings and the state they produced, in one transaction
        return booked

    def resume_after_restart(self) -> None:
        """First thing after a reconciled restart (live): the order diff from a fresh read (exits for
        lots booked while down, orders of a lost state cancelled), unexplained exposure guarded, and a
        checkpoint."""
        self.sync_orders()
        if self.unexplained:
            self.guard_exposure()
        self.check_protection("restart")  # every position covered by stops before the first bar
        self.checkpoint()

    def checkpoint(self) -> None:
        """Commit the engine state with every fill and order status since the last checkpoint (journal);
        a basket's symbol commits the basket's checkpoint (``checkpoint_with``)."""
        if self.checkpoint_with is not None:
            self.checkpoint_with()
        elif self.journal is not None:
            self.journal.save_bar(self.s, self.checkpoint_extra())

    def checkpoint_extra(self) -> dict[str, Any]:
        """What the checkpoint journals beside the engine state: the operator pause and fills cursor."""
        return {"operator_paused": self.operator_paused, "fills_cursor": self.fills_cursor}

    # --- live: the protection invariant

    def check_protection(self, where: str, read: bool = True) -> int:
        """Every open position has reduce-side stop coverage equal to its real size on the exchange.

        Reads the exchange's positions and open orders (``read``; else the bar's reads just made), books
        the fills since (so the engine is not behind the read), and compares each side's position with the
        unfilled quantity of our resting stops on it. A gap is repaired once (the diff places the missing
        stops) and read again; what is still uncovered is a protection failure and is closed at market:
        exposure the engine holds no lot for, and each lot whose stop is not resting (booked as that lot's
        stop fill). ``PROTECTION_FAIL_LIMIT`` failures within the breaker's window open the breaker and
        pause entries. Returns the engine bookings made; ``uncovered`` holds what the check found.
        """
        if self.o.mode != "live":
            return 0
        assert self.gw is not None
        booked = 0
        gaps: dict[int, float] = {}
        for attempt in range(2):
            must_read = read or attempt or self.account is None or self._orders_unknown
            if must_read and not self._read_books(where):
                return booked
            got = self.sync_fills()
            booked += got
            if got:
                self.sync_orders(refresh=False)  # the exits of the lots just booked
            if self._orders_unknown and not self._read_books(where):
                return booked  # an order's answer was lost: coverage is judged on the book as it is
            gaps = self._coverage_gaps()
            if not gaps or attempt:
                break
            self.sync_orders(refresh=False)  # the repair: the missing stops placed again
            read = True  # and the books read again before calling it a failure
        self.protect_checks += 1
        self.uncovered = {_POS[side]: gap for side, gap in gaps.items()}
        if gaps:
            booked += self._repair(where, gaps)
        elif "protection" in self.fail_reasons and self.now_ms() >= self._protect_pause_until:
            self.set_input_health("protection", None)
        return booked

    def _read_books(self, where: str) -> bool:
        """Read positions and open orders; False when they could not be read.

        A read our own pacer or the exchange's rate limit refused (a 429 wait, a 418 ban) is not a
        protection failure: nothing was learned, the stops resting stay as they were, entries are
        already paused under "rate limit", and the check runs again at the next poll.
        """
        assert self.gw is not None
        try:
            self.account = self._exchange_account()
        except gw.RateLimited as err:
            self._error("rate_limit", err)
            return False
        except gw.GatewayError as err:
            self._protection_failure(where, f"positions unreadable: {err}")
            return False
        if not self.refresh_orders():
            if "rate limit" not in self.fail_reasons:
                self._protection_failure(where, "open orders unreadable")
            return False
        return True

    def _coverage_gaps(self) -> dict[int, float]:
        """Engine side -> quantity of the exchange position not covered by our resting stops."""
        acct = self.account
        if acct is None:
            return {}
        half = float(self.s.venue.rules_for(self.s.symbol).step_size) / 2.0
        covered = stop_coverage(self.open_orders, self.o.run_id)
        out = {}
        for side, pos in enumerate(_POS):
            p = acct.positions.get(pos)
            held = p.qty if p is not None else 0.0
            gap = held - covered.get(pos, 0.0)
            if gap > half:
                out[side] = round(gap, 12)
        return out

    def _repair(self, where: str, gaps: dict[int, float]) -> int:
        """Close what cannot be protected (see ``check_protection``); returns the bookings made."""
        assert self.account is not None
        half = float(self.s.venue.rules_for(self.s.symbol).step_size) / 2.0
        unknown_closed = False
        for side, gap in gaps.items():
            pos = _POS[side]
            p = self.account.positions.get(pos)
            held = p.qty if p is not None else 0.0
            # partly filled entries whose rest could not be cancelled yet are the engine's, not unknown
            unknown = min(gap, held - self.s.lots_qty(side) - self._pending_entries_qty(side))
            if unknown > half:
                # exposure the engine holds no lot (and so no stop) for: unexplained, so guarded as
                # execution.unexplained_position says (a stop for that size, or closed at market) and
                # new entries refused until the exchange's positions equal the engine's again
                qty = _snap(unknown, self.s.venue.rules_for(self.s.symbol).step_size)
                self._flag_unexplained(f"{pos} {qty} held on the exchange without an engine lot ({where})")
                self.unexplained_qty = self.position_gap(self.account)
                self.guard_exposure()
                done = "guarded by a stop" if self.o.unexplained_position == "protect" else "closed at market"
                self._protection_event(
                    where, f"{pos} {qty} held on the exchange without an engine lot: {done}"
                )
                unknown_closed = True
                gap -= unknown
            if gap > half:
                self._protection_failure(
                    where, f"{pos} {round(gap, 12)} of {round(held, 12)} without a resting stop"
                )
        booked = self.sync_fills() if unknown_closed else 0
        return booked + self._close_unprotected_lots(where)

    def _close_unprotected_lots(self, where: str) -> int:
        """Close at market every lot whose stop is not resting after the repair: it cannot be protected."""
        resting = {
            (p.side, p.level)
            for o in self.open_orders
            if (p := parse_client_id(o.client_id)) and p.run_id == self.o.run_id and p.kind == "sl"
        }
        wants = [
            w
            for w in desired_orders(self.s.slots, self.o.maker_only)
            if w.kind == "sl" and (w.side, w.level) not in resting
        ]
        return self._close_at_market(wants, where, "its stop could not be placed")

    def _close_at_market(self, wants: list[WantedOrder], where: str, why: str) -> int:
        """Close each lot of ``wants`` (their stops) at market, booked as that lot's stop fill; then the
        diff runs again (the closed lots' take-profits cancelled, entries too if protection paused them).
        Stops refused meanwhile wait for the next diff (no nesting)."""
        sent = 0
        done: set[tuple[int, int]] = set()
        self._closing = True
        try:
            for want in wants:
                if (want.side, want.level) in done:
                    continue
                done.add((want.side, want.level))
                sent += self._close_lot(want, where, why)
            booked = self.sync_fills() if sent else 0
            self.sync_orders(refresh=False)
        finally:
            self._closing = False
        return booked

    def _close_lot(self, want: WantedOrder, where: str, why: str) -> int:
        """One lot closed at market (1 when the order went through)."""
        slot = self.s.slots[want.side, want.level - 1]
        if slot[SL_LOT_ON] == 0.0:
            return 0
        pos = _POS[want.side]
        qty = _snap(float(slot[SL_LOT_QTY]), self.s.venue.rules_for(self.s.symbol).step_size)
        ok = True
        for part in self.market_chunks(qty):  # each booked as a part of the lot's stop fill
            cid = encode_client_id(self.o.run_id, want.side, want.level, "sl", self._seq())
            req = gw.OrderRequest(cid, pos, want.order_side, "market", part, reduce_only=True)
            if not self._place(req, replace(want, type="market", qty=part)):
                ok = False
                break
        reason = f"{pos} level {want.level} {qty}: {why}: " + (
            "closed at market" if ok else "the market close failed"
        )
        if ok:
            self._protection_event(where, reason)
        else:
            self._protection_failure(where, reason)
        return 1 if ok else 0

    def _not_booked(self, cid: str) -> None:
        """A close whose fills the engine must not book (it holds none of that exposure); journaled
        before the order is sent, so a restart does not book it either."""
        self._booked_flatten.add(cid)
        if self.journal is not None:
            self.journal.set_meta(f"not-booked:{cid}", "1")

    def _pending_entries_qty(self, side: int) -> float:
        """Filled quantity of partly filled entries of ``side`` waiting for their rest to be cancelled, not
        booked yet (a flatten books what filled before it: ``_book_waiting_entries``)."""
        if self.journal is None:
            return 0.0
        total = 0.0
        for cid in self._partial_entries:
            p = parse_client_id(cid)
            if p is not None and p.side == side:
                total += sum(r[1] for r in self.journal.unbooked_fills(cid))
        return total

    def _protection_event(self, where: str, reason: str) -> None:
        self._note("protection", f"{where}: {reason}")
        self.protection_events.append({"ts": self.now_ms(), "where": where, "reason": reason})
        del self.protection_events[:-20]

    def _protection_failure(self, where: str, reason: str) -> bool:
        """Record a protection failure; True when it opened the breaker (``PROTECTION_FAIL_LIMIT``)."""
        self._protection_event(where, reason)
        self.errors["protection"] += 1
        now = self.now_ms()
        window = float(self.s.vec[P_CB_WINDOW_S]) * 1000.0
        self._protect_failed_ms = [t for t in self._protect_failed_ms if t > now - window] + [now]
        n = len(self._protect_failed_ms)
        if n < PROTECTION_FAIL_LIMIT:
            return False
        self._protect_pause_until = now + int(float(self.s.vec[P_CB_COOLDOWN_S]) * 1000.0)
        first = "protection" not in self.fail_reasons
        self.s.trip_breaker(now, self.s.last_ts or now)
        self.s.block_entries()  # the exchange's entries go with the next diff (this one's closes run it)
        self.set_input_health(
            "protection", f"{n} protection failures in {window / 1000:.0f} s; last: {where}: {reason}"
        )
        return first

    def _exchange_account(self) -> gw.Account:
        """The exchange account and this symbol's positions, read now: a basket's shared read of this
        poll or bar when it holds one for this symbol not yet used (its failure raised here, for every
        symbol), else this symbol's own read (``Gateway.account``)."""
        assert self.gw is not None
        if self.shared_account is not None:
            acct = self.shared_account.take(self.s.symbol)
            if acct is not None:
                return acct
        return self.gw.account(self.s.symbol)

    def read_account(self) -> None:
        """Read the exchange account (live): the figures the status and metrics report, and the margin
        input of the fail-closed check (unreadable or no margin ratio pauses entries)."""
        assert self.gw is not None
        try:
            acct = self._exchange_account()
        except gw.GatewayError as err:
            self.account = None
            self.set_input_health("margin", f"account unreadable: {err}")
            return
        self.account = acct
        self.read_funding_income()
        if acct.margin_ratio is None or not math.isfinite(acct.margin_ratio):
            self.set_input_health("margin", "exchange reports no margin ratio")
        else:
            self.set_input_health("margin", None)

    def read_funding_income(self) -> None:
        """Add the account's funding income booked since the last read (live; off the bar's critical path).

        The engine books funding from the rate and its own positions; this is what the exchange actually
        credited or debited, reported beside it. An unreadable history makes the figure unknown until a
        read succeeds again (it is a report, not a trading input: entries are not paused for it).
        """
        assert self.gw is not None
        try:
            # a basket's one income read for every symbol at this bar (since its earliest cursor)
            shared = self.shared_account.take_income(self.s.symbol) if self.shared_account else None
            rows = (
                shared
                if shared is not None
                else self.gw.funding_payments_since(self.s.symbol, self._income_cursor)
            )
        except gw.GatewayError as err:
            self.income_problem = f"funding income unreadable: {err}"
            return
        self.income_problem = None
        for ts, amount in rows:
            if ts < self._income_cursor:
                continue  # booked at an earlier read (a shared read starts at the basket's earliest cursor)
            self.funding_income += amount
            self._income_cursor = max(self._income_cursor, ts + 1)
        seen = self.shared_account.income_seen_ts if shared is not None else None
        if seen is not None:
            # the shared read starts at the basket's earliest cursor: a symbol paid nothing moves up to the
            # latest row the read saw (rows AT it still taken), or every bar reads the history from its start
            self._income_cursor = max(self._income_cursor, seen)

    # --- live: fills

    def _seq(self) -> int:
        if self.journal is not None:
            return self.journal.next_seq()
        self._mem_seq = getattr(self, "_mem_seq", 0) + 1
        return self._mem_seq

    def sync_fills(self) -> int:
        """Book exchange fills not yet booked; returns how many engine bookings were made.

        A partly filled entry is not booked as it stands: the rest of it is cancelled first, the fills
        are read again, and its lot is what filled (so its TP and SL are sized to that).
        """
        booked = self._read_fills()
        if self._partial_entries:
            booked += self._settle_partial_entries()
        return booked

    def _read_fills(self) -> int:
        assert self.gw is not None
        since = (
            self.fills_cursor
            if self.fills_cursor is not None
            else (self.s.last_ts or self.now_ms()) - 86_400_000
        )
        try:
            # the bridge's clock is the exchange's (offset measured at the feed's time read this bar);
            # a margin of one bar covers drift, the exchange only has trades up to its own now
            fills = self.gw.fills_since(self.s.symbol, since, self.now_ms() + self.s.bar_ms)
        except gw.GatewayError as err:
            self._error("fills", err)
            return 0
        killpoint.hit("fills")
        gone = self._gone_partial_entries(fills)
        # booked in the order they happened; a gone entry's own fill before another trade of its ms
        fills = sorted(fills, key=lambda f: (f.ts_ms, f.client_id not in gone))
        booked = 0
        for f in fills:
            self.fills_cursor = max(self.fills_cursor or 0, f.ts_ms)
            if self.journal is not None and self.journal.fill_known(f.trade_id):
                continue
            if f.client_id in gone:  # a gone entry's own fill: booked with its last one, below
                assert self.journal is not None
                self.journal.add_fill(f)
                continue
            booked += self._book_gone_entries(gone, f.ts_ms)
            cid = parse_client_id(f.client_id)
            if self.journal is not None:
                self.journal.add_fill(f)  # ours or not: seen once, committed with the state it produced
            if cid is None or cid.run_id != self.o.run_id:
                self._flag_unexplained(
                    f"foreign trade {f.trade_id} ({f.position_side} {f.side} {f.qty} @ {f.price}, "
                    f"order {f.client_id or 'unknown'})"
                )
                continue
            booked += self._maybe_book(f.client_id, cid)
            killpoint.hit("booked")
        return booked + self._book_gone_entries(gone, None)

    def _gone_partial_entries(self, fills: list[gw.Fill]) -> dict[str, int]:
        """The partly filled entries of ``_partial_entries`` already gone from the exchange (journaled
        ``canceled``: only a restart's ``reconcile`` leaves such an entry there), each with the time of
        its last fill, journaled or among ``fills``: it can fill no more, so its lot is what filled then."""
        if self.journal is None:
            return {}
        gone = {}
        for client_id in self._partial_entries:
            order = self.journal.order(client_id)
            if order is None or order["status"] != "canceled":
                continue
            ts = [r[3] for r in self.journal.fills_for(client_id)]
            ts += [f.ts_ms for f in fills if f.client_id == client_id]
            gone[client_id] = max(ts, default=0)
        return gone

    def _book_gone_entries(self, gone: dict[str, int], until_ms: int | None) -> int:
        """Book each entry of ``gone`` whose last fill is at or before ``until_ms`` (None: every one) as
        its lot, and drop it from ``gone`` and ``_partial_entries``: a trade after it (its lot's TP or SL,
        a flatten of its side) is booked after it, as it happened. Returns the bookings made."""
        booked = 0
        for client_id, last_ms in sorted(gone.items(), key=lambda kv: kv[1]):
            if until_ms is not None and last_ms > until_ms:
                continue
            del gone[client_id]
            self._partial_entries.discard(client_id)
            parsed = parse_client_id(client_id)
            if parsed is not None:
                booked += self._maybe_book(client_id, parsed)
        return booked

    def _settle_partial_entries(self) -> int:
        """Cancel the rest of each partly filled entry, read the fills again, book what filled."""
        assert self.gw is not None and self.journal is not None
        pending, self._partial_entries = self._partial_entries, set()
        cancelled = []
        for client_id in sorted(pending):
            try:
                self.gw.cancel(self.s.symbol, client_id)
            except gw.GatewayError as err:
                self._error("cancel", err)
                self._partial_entries.add(client_id)  # tried again at the next poll
                continue
            self.journal.order_status(client_id, "canceled", self.now_ms())
            self.open_orders = [o for o in self.open_orders if o.client_id != client_id]
            cancelled.append(client_id)
            self._note("partial-fill", f"{client_id}: partly filled entry, the rest cancelled")
        booked = self._read_fills() if cancelled else 0  # fills that came in before the cancel
        for client_id in cancelled:
            parsed = parse_client_id(client_id)
            if parsed is not None:
                booked += self._maybe_book(client_id, parsed)
        return booked

    def _maybe_book(self, client_id: str, cid: Any) -> int:
        """Book an order's fills not booked yet (VWAP price; taker if any part was taker).

        An entry is booked once, when it is complete or cancelled (a partly filled one that still rests
        is cancelled first: ``sync_fills``); a TP / SL books each part as it fills (``book_partial_exit``:
        the lot keeps the rest); a market flatten when complete.
        """
        if self.journal is None:
            return 0
        order = self.journal.order(client_id)
        if order is None:
            return 0
        rows = self.journal.fills_for(client_id)
        new = self.journal.unbooked_fills(client_id)
        total = sum(r[1] for r in rows)
        qty, price, liq, ts = fills_vwap(new)
        if qty <= 0.0:
            return 0
        filled = total >= order["qty"] * (1.0 - 1e-9)
        done = filled or order["status"] in ("canceled", "booked")
        if cid.kind == "guard":
            # the guard of exposure the engine never held: its fill closes that, not an engine lot
            if not done:
                return 0
            self.journal.mark_booked(client_id)
            self.journal.order_status(client_id, "guard-filled", self.now_ms())
            self.open_orders = [o for o in self.open_orders if o.client_id != client_id]
            self._note("guard-fill", f"{client_id} {qty} @ {price}")
            return 0
        try:
            if cid.kind == "flatten":
                if not done:
                    return 0
                if client_id not in self._booked_flatten and not (
                    self.journal.meta(f"not-booked:{client_id}")
                ):
                    if not self.journal.meta(f"flatten-last:{client_id}"):
                        return 0  # an earlier chunk: booked with the side's last one
                    self._book_flatten_chunks(cid.side, client_id)
                    self.open_orders = [o for o in self.open_orders if o.client_id != client_id]
                    return 1
            elif cid.kind == "entry":
                if not done:
                    self._partial_entries.add(client_id)  # the rest is cancelled, then it is booked
                    return 0
                if total - qty > 1e-12:
                    raise GridctlError(f"entry fill of {qty} after its lot was booked")
                self.s.book_fill(cid.side, cid.level, cid.kind, price, qty, liq, ts)
            else:
                self.s.book_partial_exit(cid.side, cid.level, cid.kind, price, qty, liq, ts)
        except GridctlError as err:
            self._note("fill-not-booked", f"{client_id}: {err}")
            self.journal.mark_booked(client_id)
            self.journal.order_status(client_id, "unbookable", self.now_ms())
            self._flag_unexplained(f"fill of {client_id} ({qty} @ {price}) not bookable: {err}")
            return 0
        self.journal.mark_booked(client_id)
        if done:
            self.journal.order_status(client_id, "booked", self.now_ms())
            self.open_orders = [o for o in self.open_orders if o.client_id != client_id]
        else:  # a partly filled exit keeps resting: the local view knows what is left of it
            self.open_orders = [
                replace(o, filled_qty=total) if o.client_id == client_id else o for o in self.open_orders
            ]
        self._note(
            "fill", f"{client_id} {qty} @ {price}" + ("" if done else f" (part: {total} of {order['qty']})")
        )
        return 1

    # --- live: exposure the engine cannot explain

    def _flag_unexplained(self, detail: str) -> None:
        """Refuse new entries under the ``reconcile`` reason, say why (log, /status, metrics)."""
        self.unexplained.append(detail)
        del self.unexplained[:-20]
        self._note("unexplained", detail)
        self.set_input_health("reconcile", f"{len(self.unexplained)} unexplained: {self.unexplained[-1]}")
        self.s.block_entries()

    def position_gap(self, acct: gw.Account) -> list[float]:
        """Exchange minus engine position per side (0 long, 1 short), below half a step taken as 0."""
        half = float(self.s.venue.rules_for(self.s.symbol).step_size) / 2.0
        out = []
        for side, pos in enumerate(_POS):
            p = acct.positions.get(pos)
            # flatten chunks that filled but are booked with the side's last chunk are already gone
            pending = self._pending_flatten_qty(side) if self.journal is not None else 0.0
            gap = (p.qty if p else 0.0) - (self.s.position()[side] - pending)
            out.append(
                0.0
                if abs(gap) <= half
                else _snap(gap, float(self.s.venue.rules_for(self.s.symbol).step_size))
            )
        return out

    def review_unexplained(self) -> None:
        """At a bar close while flagged: lift the flag once the exchange's positions equal the engine's
        (guards cancelled), else keep the unexplained exposure guarded."""
        if self.account is None:
            return
        self.unexplained_qty = self.position_gap(self.account)
        if self.unexplained_qty == [0.0, 0.0]:
            self._cancel_guards(None)
            self._note("explained", "exchange positions equal the engine's again")
            self.unexplained.clear()
            self.set_input_health("reconcile", None)
        else:
            self.guard_exposure()

    def _guards(self, side: int | None) -> list[gw.OpenOrder]:
        out = []
        for o in self.open_orders:
            p = parse_client_id(o.client_id)
            if p is not None and p.run_id == self.o.run_id and p.kind == "guard" and side in (None, p.side):
                out.append(o)
        return out

    def _cancel_guards(self, side: int | None) -> None:
        assert self.gw is not None
        for o in self._guards(side):
            try:
                self.gw.cancel(self.s.symbol, o.client_id)
            except gw.GatewayError as err:
                self._error("cancel", err)
                continue
            self.open_orders = [x for x in self.open_orders if x.client_id != o.client_id]
            if self.journal is not None:
                self.journal.order_status(o.client_id, "canceled", self.now_ms())

    def guard_exposure(self) -> None:
        """Protect exchange exposure beyond the engine's (``unexplained_qty`` > 0) per
        ``execution.unexplained_position``: ``protect`` rests a reduce-side stop for exactly that size
        ``exit.sl_steps`` grid steps from the last close (closed at market when the exchange says it
        would trigger at once); ``flatten`` closes it at market. A side where the engine holds more
        than the exchange has its lots' own exits resting (more than covered); it only stays flagged."""
        step = float(self.s.venue.rules_for(self.s.symbol).step_size)
        dist = float(self.s.vec[P_SL_STEPS]) * float(self.s.vec[P_GRID_STEP_BPS]) * 1e-4
        close = self.s.last_close
        for side, pos in enumerate(_POS):
            gap = self.unexplained_qty[side]
            have = self._guards(side)
            if gap <= 0.0:
                self._cancel_guards(side)
                continue
            order_side = "sell" if side == 0 else "buy"
            if self.o.unexplained_position == "protect" and math.isfinite(close):
                if len(have) == 1 and abs(float(have[0].qty) - gap) <= step / 2:
                    continue
                self._cancel_guards(side)
                stop = _snap(
                    close * (1.0 - dist if side == 0 else 1.0 + dist),
                    self.s.venue.rules_for(self.s.symbol).tick_size,
                )
                cid = encode_client_id(self.o.run_id, side, 0, "guard", self._seq())
                req = gw.OrderRequest(
                    cid, pos, order_side, "stop_market", gap, stop_price=stop, reduce_only=True
                )
                want = WantedOrder(side, 0, "guard", order_side, "stop_market", stop, gap, False, True)
                try:
                    if self._place_strict(req, want):
                        self._note("guard", f"{pos} {gap} unexplained: stop at {stop}")
                        continue
                except gw.OrderRejected as err:
                    self._note("guard", f"{pos} stop refused ({err}): closing {gap} at market")
            else:
                self._cancel_guards(side)
            closed = 0.0
            for part in self.market_chunks(gap):
                cid = encode_client_id(self.o.run_id, side, 0, "guard", self._seq())
                req = gw.OrderRequest(cid, pos, order_side, "market", part, reduce_only=True)
                want = WantedOrder(side, 0, "guard", order_side, "market", 0.0, part, False, True)
                if not self._place(req, want):
                    break
                closed += part
            if closed:
                self._note("guard", f"{pos} {round(closed, 12)} of {gap} unexplained: closed at market")

    def _place_strict(self, req: gw.OrderRequest, want: WantedOrder) -> bool:
        """``_place`` that raises an exchange refusal (``OrderRejected``) instead of only recording it."""
        assert self.gw is not None
        if self.journal is not None:
            self.journal.order_sending(req.client_id, want, self.now_ms())
        try:
            o = self.gw.place(self.s.symbol, req)
        except gw.OrderRejected:
            if self.journal is not None:
                self.journal.order_status(req.client_id, "rejected", self.now_ms())
            raise
        except gw.GatewayError as err:
            self._error("place", err)
            return False
        self.sent += 1
        self.open_orders.append(o)
        if self.journal is not None:
            self.journal.order_status(req.client_id, "open", self.now_ms(), o.exchange_id)
        return True

    # --- live: orders

    def _error(self, kind: str, err: Exception) -> None:
        self.errors[kind] += 1
        self._note("error", f"{kind}: {err}")
        now = self.now_ms()
        self.s.record_error(float(now), self.s.last_ts or now)

    def _resting(self) -> list[RestingOrder]:
        out = []
        for o in self.open_orders:
            px = o.price if o.type == "limit" else o.stop_price
            out.append(RestingOrder(o.client_id, float(px or 0.0), float(o.qty) - float(o.filled_qty or 0.0)))
        return out

    def refresh_orders(self) -> bool:
        """Read the exchange's open orders into the local view; False (view unknown) on failure."""
        assert self.gw is not None
        try:
            self.open_orders = self.gw.open_orders(self.s.symbol)
        except gw.GatewayError as err:
            self._error("open_orders", err)
            self._orders_unknown = True
            return False
        self._orders_unknown = False
        return True

    def sync_orders(self, refresh: bool = True, defer_retries: bool = False) -> None:
        """Send the diff between the slot array and the open orders (rate limited).

        ``refresh`` reads the exchange's open orders first, then books the fills up to that read (an exit
        that filled since the last fills poll is missing from the read: diffed before its fill is booked,
        its lot would get the exit again, a duplicate that closes another lot's position); otherwise the
        local view is used (the last read, updated with every placement, cancel and completed fill
        since). ``defer_retries`` leaves post-only retries to the caller's ``run_retries`` (the bar loop:
        after the latency sample).
        """
        assert self.gw is not None
        if refresh:
            if not self.refresh_orders():
                return
            self.sync_fills()
        wanted = desired_orders(self.s.slots, self.o.maker_only)
        plan = diff_orders(
            wanted,
            self._resting(),
            self.o.run_id,
            float(self.s.vec[P_ORDER_PRICE_TOL_BPS]),  # the engine's own tolerances (decide_nb)
            float(self.s.vec[P_ORDER_QTY_TOL_PCT]),
            self.pacer.orders_available() if self.pacer is not None else len(wanted),
        )
        held: set[tuple[int, int, str]] = set()  # keys whose old order may still rest: no replacement
        for cid in plan.cancels:
            killpoint.hit("cancel")
            try:
                self.gw.cancel(self.s.symbol, cid)
            except gw.GatewayError as err:
                self._error("cancel", err)
                parsed = parse_client_id(cid)
                if parsed is not None:
                    held.add((parsed.side, parsed.level, parsed.kind))
                if isinstance(err, gw.ExchangeUnavailable):
                    self._orders_unknown = True  # it may have gone through: read the book next time
                continue
            killpoint.hit("canceled")
            self.open_orders = [o for o in self.open_orders if o.client_id != cid]
            if self.journal is not None:
                self.journal.order_status(cid, "canceled", self.now_ms())
                parsed = parse_client_id(cid)
                if parsed is not None:
                    self._maybe_book(cid, parsed)  # a partly filled order: book what filled
        self._rate_limited = False
        for want in plan.places:
            # (an entry planned before a pause, such as a protection failure during this diff, is
            # held by _place and counted)
            if want.key in held or self._rate_limited:
                plan.deferred.append(want)
                continue
            if want.kind == "entry" and self.s.slots[want.side, want.level - 1, SL_ORD_ON] == 0.0:
                continue  # the engine took it back during this diff (a rejection tripped the breaker)
            if self._place_wanted(want):
                self._retries.append(want)
        if held:
            self._note("replacement-held", f"cancel failed or unknown, not replaced yet: {sorted(held)}")
        self.deferred += len(plan.deferred)
        self.last_deferred = [w.key for w in plan.deferred]
        if self._refused and not self._closing:
            refused, self._refused = self._refused, []
            self._close_at_market(
                refused, "stop refused", f"stop refused as immediately triggering ({IMMEDIATE_TRIGGER})"
            )
        if not defer_retries:
            self.run_retries()

    def _request(self, want: WantedOrder, cid: str, price: float) -> gw.OrderRequest:
        """The exchange request; price and qty snapped to the venue's tick / step (kernel floats drift)."""
        pos = _POS[want.side]
        rules = self.s.venue.rules_for(self.s.symbol)  # the session symbol's own tick and step
        price = _snap(price, rules.tick_size)
        want = replace(want, qty=_snap(want.qty, rules.step_size))
        if want.type == "limit":
            return gw.OrderRequest(
                cid,
                pos,
                want.order_side,
                "limit",
                want.qty,
                price=price,
                post_only=want.post_only,
                reduce_only=want.reduce_only,
            )  # type: ignore[arg-type]
        return gw.OrderRequest(
            cid, pos, want.order_side, "stop_market", want.qty, stop_price=price, reduce_only=True
        )  # type: ignore[arg-type]

    def _place(self, req: gw.OrderRequest, want: WantedOrder) -> bool:
        assert self.gw is not None
        if want.kind == "entry" and not self.entries_allowed:
            # paused since this bar's plan was made (the ops API's hold acts before the loop applies it)
            self.held += 1
            return False
        now = self.now_ms()
        if self.journal is not None:
            self.journal.order_sending(req.client_id, want, now)  # before sending: a crash cannot lose it
        killpoint.hit("send")
        try:
            o = self.gw.place(self.s.symbol, req)
        except gw.PostOnlyRejected:
            if self.journal is not None:
                self.journal.order_status(req.client_id, "rejected", self.now_ms())
            raise
        except gw.ExchangeUnavailable as err:
            # Outcome unknown: the journal keeps it as 'sending'; the next open-orders read settles it,
            # and no diff runs on the local view before that read (it may lack a resting order).
            self._error("place", err)
            self._orders_unknown = True
            return False
        except gw.RateLimited as err:
            # Not accepted (refused by the pacer before sending, or a 429/418): no more this round.
            if self.journal is not None:
                self.journal.order_status(req.client_id, "rejected", self.now_ms())
            self._error("rate_limit", err)
            self._rate_limited = True
            return False
        except gw.GatewayError as err:
            if self.journal is not None:
                self.journal.order_status(req.client_id, "rejected", self.now_ms())
            self._error("place", err)
            self._rejected(req, err)
            if (
                want.kind == "sl"
                and req.type == "stop_market"
                and getattr(err, "code", None) == IMMEDIATE_TRIGGER
            ):
                # the price is already beyond the stop: its lot is closed at market after this diff
                self._protection_failure("stop refused", f"{req.client_id} at {req.stop_price}: {err}")
                self._refused.append(want)
            return False
        killpoint.hit("sent")
        self.sent += 1
        step = float(self.s.venue.rules_for(self.s.symbol).step_size)
        ended = o.status in ("expired", "canceled", "rejected")
        if req.type == "market" and ended and o.filled_qty < req.qty - step / 2:
            # the exchange ended it (self-trade prevention expiring the taker, nothing left to close):
            # what filled is booked as the order's whole; the rest did not go through
            if self.journal is not None:
                self.journal.order_status(req.client_id, "canceled", self.now_ms(), o.exchange_id)
                if want.kind == "flatten":  # not the side's end: the flatten's next try books it
                    self.journal.set_meta(f"flatten-last:{req.client_id}", "")
            err = gw.OrderRejected(None, f"market order {o.status}: {o.filled_qty} of {req.qty} filled")
            self._error("place", err)
            self._rejected(req, err)
            return False
        if req.type != "market":
            self.open_orders.append(o)
        if self.journal is not None:
            self.journal.order_status(req.client_id, "open", self.now_ms(), o.exchange_id)
        return True

    def _rejected(self, req: gw.OrderRequest, err: Exception) -> None:
        """Keep the exchange's refusal of an order (code and message) for /status (the metrics count it)."""
        parsed = parse_client_id(req.client_id)
        self.rejections.append(
            {
                "ts": self.now_ms(),
                "client_id": req.client_id,
                "kind": parsed.kind if parsed is not None else "",
                "type": req.type,
                "qty": req.qty,
                "price": req.price if req.type == "limit" else req.stop_price,
                "code": getattr(err, "code", None),
                "reason": str(err),
            }
        )
        del self.rejections[:-20]

    def _place_wanted(self, want: WantedOrder) -> bool:
        """First attempt; True when a post-only rejection left a retry to make (``run_retries``)."""
        cid = encode_client_id(self.o.run_id, want.side, want.level, want.kind, self._seq())
        try:
            self._place(self._request(want, cid, want.price), want)
            return False
        except gw.PostOnlyRejected as err:
            if want.kind != "entry":
                self._error("post_only", err)
                return False
            tripped = self._post_only_rejected(want, want.price, 0, err)
        return self.s.retries_enabled() and not tripped

    def _post_only_rejected(self, want: WantedOrder, price: float, attempt: int, err: Exception) -> bool:
        """The engine books an entry's post-only rejection (``post_only_reject_nb``: slot off, event,
        breaker window); True when it tripped the breaker."""
        self.errors["post_only"] += 1
        self._note("error", f"post_only: {err}")
        return self.s.post_only_rejected(
            want.side, want.level, price, attempt, self.now_ms(), self._retry_ts()
        )

    def _retry_ts(self) -> int:
        """Ledger time of the retry ladder's records: the open of the bar after the last close (the
        backtest's simulated venue retries at that open)."""
        last = self.s.last_ts
        return int(last + self.s.bar_ms) if last is not None else self.now_ms()

    def run_retries(self) -> None:
        """Post-only retries of this bar's rejected entries, ``retry_delay_ms`` apart.

        They run after every first attempt went out, so one rejection's waits do not hold back the
        bar's other orders. None run while entries are paused or the breaker is open.
        """
        pending, self._retries = self._retries, []
        self._retried_ms = None
        if not pending:
            return
        t0 = time.perf_counter()
        for want in pending:
            if not self.entries_allowed or self.s.state[S_CB_ACTIVE] != 0.0:
                continue
            self._retry(want)
        self._retried_ms = (time.perf_counter() - t0) * 1000.0

    def _retry(self, want: WantedOrder) -> None:
        """The engine's retry ladder against the exchange: ``retry_price`` gives retry j's price (NaN:
        stop, the engine recorded why), the answer goes back as ``retry_rests`` / ``post_only_rejected``."""
        j = 1
        while True:
            pj = self.s.retry_price(want.side, want.level, want.price, j, self.now_ms(), self._retry_ts())
            if math.isnan(pj):
                self._note("retry-limit", f"{want.key}: no retry {j} (see the engine's events)")
                return
            self.sleep(self.o.retry_delay_ms / 1000.0)
            cid = encode_client_id(self.o.run_id, want.side, want.level, want.kind, self._seq())
            try:
                if self._place(self._request(want, cid, pj), want):
                    self.s.retry_rests(want.side, want.level, pj)
                return
            except gw.PostOnlyRejected as err:
                if self._post_only_rejected(want, pj, j, err):
                    return
            j += 1

    # --- snapshot for the ops API / metrics

    def snapshot(self) -> dict[str, Any]:
        """What /status and the metrics show, as one JSON-ready dict: account figures (the exchange's
        when live), positions, funding, orders, the ladder, gates and pauses, errors, latency. A figure
        that cannot be known is None, with why in ``unknown`` and a fixed label in ``unknown_labels``."""
        st = self.s.state
        have_bar = self.s.n > 0
        unknown: dict[str, str] = {}
        labels: dict[str, str] = {}
        snap: dict[str, Any] = {"mode": self.o.mode, "run_id": self.o.run_id, "symbol": self.s.symbol}
        state_code = int(st[S_STATE]) if have_bar else None
        snap["state"] = enum_name(RiskState, state_code).lower() if state_code is not None else "starting"
        self._snap_account(snap, unknown, labels)
        self._snap_positions_and_funding(snap, unknown, labels)
        self._snap_orders(snap)
        snap["ladder"] = self._snap_ladder()
        self._snap_gates_and_pauses(snap)
        if self.last_bar_close_ms is None:
            snap["last_bar_age_seconds"] = None
            unknown["last_bar_age_seconds"] = "no bar processed yet"
            labels["last_bar_age_seconds"] = "no bar yet"
        else:
            snap["last_bar_age_seconds"] = (self.now_ms() - self.last_bar_close_ms) / 1000.0
        snap["error_counts"] = {
            "engine": int(st[S_ERRORS]),
            **{f"exchange_{k}": v for k, v in self.errors.items()},
        }
        if self.pacer is not None:
            snap["rate_limits"] = self.pacer.describe()
        if self.o.mode == "live":
            # the protection invariant: what the last check found uncovered (base qty per position side),
            # and the last refusals, failures and protective closes with their reasons
            snap["protection"] = {
                "checks": self.protect_checks,
                "uncovered": dict(self.uncovered),
                "events": list(self.protection_events[-10:]),
            }
            snap["rejections"] = list(self.rejections[-10:])  # the exchange's refusals, with its code
        snap["orders_sent"] = self.sent
        snap["orders_deferred"] = self.deferred
        snap["entry_orders_held"] = self.held
        snap["latency"] = self.latency.summary()
        snap["bars"] = self.s.n
        snap["commands"] = list(self.ops.applied) if self.ops is not None else []
        snap["unknown"] = unknown  # the detail (may quote the exchange's error): /status only
        snap["unknown_labels"] = labels  # a fixed set (metrics.UNKNOWN_LABELS): the metrics' reason label
        return snap

    def _snap_account(self, snap: dict[str, Any], unknown: dict[str, str], labels: dict[str, str]) -> None:
        """Equity, wallet, PnL, risk state code, margin ratio and funding income: the engine's, or the
        exchange's account when live (the engine's then kept under ``engine`` for comparison). Equity,
        wallet and margin ratio are the account's (``EngineSession.account_figures``), in a basket too;
        PnL, state and funding are the symbol's."""
        st = self.s.state
        have_bar = self.s.n > 0
        state_code = int(st[S_STATE]) if have_bar else None
        if have_bar:
            # equity, wallet and margin ratio are the account's (a basket's, not one symbol's view of it)
            equity, wallet, ratio = self.s.account_figures()
            snap.update(
                equity=equity,
                wallet_balance=wallet,
                realized_pnl=float(st[S_REALIZED]),
                unrealized_pnl=float(st[S_UNREAL]),
                trading_state=state_code,
                margin_ratio=ratio,
            )
        else:
            for k in (
                "equity",
                "wallet_balance",
                "realized_pnl",
                "unrealized_pnl",
                "trading_state",
                "margin_ratio",
            ):
                snap[k] = None
                unknown[k], labels[k] = "no bar processed yet", "no bar yet"
        if self.o.mode == "live":
            # Live: the account figures are the exchange's, not the engine's model of them (kept under
            # "engine" for comparison). Realized PnL stays the engine's: it books the exchange's fills.
            snap["engine"] = {
                k: snap[k] for k in ("equity", "wallet_balance", "unrealized_pnl", "margin_ratio")
            }
            acct = self.account
            if acct is None:
                why = self.fail_reasons.get("margin", "no account read yet")
                label = "account unreadable" if "margin" in self.fail_reasons else "no account read yet"
                for k in ("equity", "wallet_balance", "unrealized_pnl", "margin_ratio"):
                    snap[k] = None
                    unknown[k], labels[k] = why, label
            else:
                snap["equity"] = acct.equity
                snap["wallet_balance"] = acct.wallet_balance
                snap["unrealized_pnl"] = sum(p.unrealized_pnl for p in acct.positions.values())
                snap["margin_ratio"] = acct.margin_ratio
                if acct.margin_ratio is None:
                    unknown["margin_ratio"] = "exchange reports no margin ratio"
                    labels["margin_ratio"] = "no margin ratio"
        # Funding cash flow since the start: the account's (live) or the engine's simulated venue's.
        snap["funding_income"] = float(st[S_FUNDING_NET]) if have_bar else 0.0
        if self.o.mode == "live":
            snap["engine"]["funding_income"] = snap["funding_income"]
            snap["funding_income"] = None if self.income_problem else self.funding_income
            if self.income_problem:
                unknown["funding_income"] = self.income_problem
                labels["funding_income"] = "income unreadable"
        if "margin" in self.fail_reasons:
            snap["margin_ratio"] = None
            unknown["margin_ratio"] = self.fail_reasons["margin"]
            labels["margin_ratio"] = "no margin ratio" if self.account is not None else "account unreadable"

    def _snap_positions_and_funding(
        self, snap: dict[str, Any], unknown: dict[str, str], labels: dict[str, str]
    ) -> None:
        """Both positions, the last settled funding rate and what it would cost the positions held."""
        st = self.s.state
        lq, sq = float(st[S_LONG_QTY]), float(st[S_SHORT_QTY])
        snap["position_long"], snap["position_short"] = lq, sq
        snap["positions"] = {
            "long": {"qty": lq, "avg": float(st[S_LONG_AVG])},
            "short": {"qty": sq, "avg": float(st[S_SHORT_AVG])},
        }
        book = self.s.funding
        rate = book.rate[-1] if book.rate else None
        if rate is None or not math.isfinite(rate):
            snap["funding_rate"] = None
            snap["funding_projected_cost"] = None
            unknown["funding_rate"] = unknown["funding_projected_cost"] = "no settled funding rate known"
            labels["funding_rate"] = labels["funding_projected_cost"] = "no funding rate"
        elif self.funding_stale:
            # the exchange stopped updating its premium index: the last rate is not current any more
            snap["funding_rate"] = None
            snap["funding_projected_cost"] = None
            unknown["funding_rate"] = unknown["funding_projected_cost"] = self.funding_stale
            labels["funding_rate"] = labels["funding_projected_cost"] = "funding input stale"
        else:
            c = self.s.last_close
            snap["funding_rate"] = rate
            if math.isfinite(c):
                snap["funding_projected_cost"] = (lq - sq) * c * rate
            else:
                snap["funding_projected_cost"] = None
                unknown["funding_projected_cost"] = "no close price yet"
                labels["funding_projected_cost"] = "no bar yet"
        snap["next_funding_ms"] = book.next_ts

    def _snap_orders(self, snap: dict[str, Any]) -> None:
        """The run's open orders (live: the exchange's, with the symbol's foreign ones counted apart;
        paper: the engine's wanted orders)."""
        slots = self.s.slots
        if self.o.mode == "live":
            mine = [
                o
                for o in self.open_orders
                if (p := parse_client_id(o.client_id)) and p.run_id == self.o.run_id
            ]
            snap["open_orders"] = len(mine)
            snap["foreign_open_orders"] = len(self.open_orders) - len(mine)  # on the symbol, never touched
            snap["orders"] = [o.__dict__ for o in mine]
        else:
            snap["open_orders"] = len(desired_orders(slots, self.o.maker_only))
            snap["orders"] = [w.__dict__ for w in desired_orders(slots, self.o.maker_only)]

    def _snap_ladder(self) -> dict[str, Any]:
        """The ladder: its center, regime and every rung's entry order and lot."""
        st, slots = self.s.state, self.s.slots
        center = float(st[S_CENTER])
        ladder = []
        for idx in range(slots.shape[1]):
            for side in range(2):
                s = slots[side, idx]
                ladder.append(
                    {
                        "side": "long" if side == 0 else "short",
                        "level": idx + 1,
                        "rung_price": None if math.isnan(s[SL_RUNG_PRICE]) else float(s[SL_RUNG_PRICE]),
                        "entry": {"price": float(s[SL_ORD_PRICE]), "qty": float(s[SL_ORD_QTY])}
                        if s[SL_ORD_ON]
                        else None,
                        "lot": {
                            "price": float(s[SL_LOT_PRICE]),
                            "qty": float(s[SL_LOT_QTY]),
                            "tp": None if math.isnan(s[SL_TP]) else float(s[SL_TP]),
                            "sl": None if math.isnan(s[SL_SL]) else float(s[SL_SL]),
                        }
                        if s[SL_LOT_ON]
                        else None,
                    }
                )
        return {
            "center": None if math.isnan(center) else center,
            "regime": int(st[S_REGIME]),
            "rungs": ladder,
        }

    def _snap_gates_and_pauses(self, snap: dict[str, Any]) -> None:
        """Each gate's fields, the circuit breaker, throttle and every reason entries are paused."""
        st = self.s.state
        cb_until = float(st[S_CB_UNTIL])
        snap["gates"] = {
            **gate_status(st),  # each gate's live fields, from the gate table (configs/gates.py)
            "operator_paused": self.operator_paused,
            "fail_closed": dict(self.fail_reasons),
            "disabled": self.s.strategy.gates_disabled(),
        }
        snap["circuit_breaker_active"] = 1.0 if st[S_CB_ACTIVE] else 0.0
        snap["throttle"] = float(st[S_THROTTLE])
        snap["entries_paused"] = 0.0 if self.entries_allowed else 1.0
        snap["pause_reasons"] = self.pause_reasons()
        snap["unexplained"] = {
            "details": list(self.unexplained),
            "long_qty": self.unexplained_qty[0],
            "short_qty": self.unexplained_qty[1],
        }
        snap["unexplained_exposure"] = 1.0 if self.unexplained else 0.0
        snap["pause_keys"] = (["operator pause"] if self.operator_paused else []) + sorted(self.fail_reasons)
        if st[S_CB_ACTIVE]:  # the engine's circuit breaker blocks entries until its cooldown ends
            until = f" until {_utc(cb_until)}" if math.isfinite(cb_until) else ""
            snap["entries_paused"] = 1.0
            snap["pause_keys"].append("circuit breaker")
            snap["pause_reasons"].append(
                f"circuit breaker: {int(st[S_ERRORS])} errors counted, entries blocked{until}"
            )
        for gate in held_gates(st):  # a gate of the gate table holding entries (risk state COOLDOWN)
            snap["entries_paused"] = 1.0
            snap["pause_keys"].append(gate.name)
            snap["pause_reasons"].append(f"{gate.title}: entries blocked by the engine's gate")

    def publish(self) -> None:
        if self.ops is not None:
            self.ops.publish(self.snapshot())
