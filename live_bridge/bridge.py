"""The bar loop: one closed bar in, the engine's step, orders out; ops commands applied between bars.

``Bridge.on_bar`` is the whole per-bar path. Paper and replay: ``EngineSession.step_paper`` (the
engine's own bar step, fills simulated by its fill model). Live: exchange fills since the last bar
are booked (``fill_slot_nb``), then ``EngineSession.step_live`` (funding, regime, mark, gates,
decide), then the order diff (``live_bridge.orders``) is sent through the ``Gateway`` within the
venue's rate limits, with bounded post-only retries.

Fail closed: a stale bar feed, a missing funding rate or next settlement, or an unreadable margin
figure pauses new entries (resting entries are cancelled, exits stay) with the reason on the ops API
and the metrics; the pause lifts by itself when the input is healthy again. An operator pause is
lifted only by ``resume``. Commands from the ops API are applied only here, between bars.
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
from gridctl.engine.enums import Liquidity, RiskState, Side, enum_name
from gridctl.engine.params import (
    P_GRID_STEP_BPS,
    P_ORDER_PRICE_TOL_BPS,
    P_ORDER_QTY_TOL_PCT,
    P_RETRY_ATTEMPTS,
    P_RETRY_MAX_DEV_BPS,
    P_SL_STEPS,
    P_TICK,
)
from gridctl.engine.state import (
    S_CB_ACTIVE,
    S_CB_UNTIL,
    S_CENTER,
    S_DIRTY,
    S_EQUITY,
    S_ERRORS,
    S_FUNDING_NET,
    S_HALTED,
    S_LONG_AVG,
    S_LONG_QTY,
    S_MARGIN_RATIO,
    S_REALIZED,
    S_REDUCING,
    S_REGIME,
    S_SHORT_AVG,
    S_SHORT_QTY,
    S_STATE,
    S_THROTTLE,
    S_UNREAL,
    S_WALLET,
    SL_LOT_ON,
    SL_LOT_PRICE,
    SL_LOT_QTY,
    SL_ORD_ON,
    SL_ORD_PRICE,
    SL_ORD_QTY,
    SL_RUNG_PRICE,
    SL_SL,
    SL_TP,
)
from gridctl.engine.throttle import set_throttle
from gridctl.live_bridge import gateway as gw
from gridctl.live_bridge import killpoint
from gridctl.live_bridge.journal import Journal
from gridctl.live_bridge.ops import OpsState
from gridctl.live_bridge.orders import (
    RateLimiter,
    RestingOrder,
    WantedOrder,
    desired_orders,
    diff_orders,
    encode_client_id,
    parse_client_id,
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


#: The bar feed counts as stale (entries paused) when no bar closed for this many bar lengths.
STALE_AFTER_BARS = 2


@dataclass
class BridgeOptions:
    """Per-run settings: mode, run id and the strategy's execution fields (``cli._options``)."""

    mode: str  # paper | live | replay
    run_id: str
    maker_only: bool = True
    post_only_retries: bool = True
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
        limiter: RateLimiter | None = None,
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
        v = session.venue.rate_limits
        # Paced on the bridge's clock (the exchange's time; real time in production).
        self.limiter = limiter or RateLimiter(
            v.orders_per_second, v.orders_per_minute, clock=lambda: now_ms() / 1000.0
        )
        self.last_deferred: list[tuple[int, int, str]] = []
        self.now_ms = now_ms
        self.sleep = sleep
        self.operator_paused = False
        self.fail_reasons: dict[str, str] = {}
        self.errors: Counter[str] = Counter()
        self.latency = Latency()
        self.fills_cursor: int | None = None
        self.account: gw.Account | None = None  # live: the last exchange account read
        # Live: funding the account was paid / received (FUNDING_FEE income) since this bridge started,
        # read incrementally after each bar; unknown while unreadable (the reason in income_problem).
        self.funding_income = 0.0
        self.income_problem: str | None = None
        self._income_cursor = now_ms()
        self.open_orders: list[gw.OpenOrder] = []
        self._orders_unknown = True  # no exchange read yet: the first sync reads the open orders
        self.deferred = 0
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
        self.stale_after_ms = STALE_AFTER_BARS * session.bar_ms
        self.publish()

    # --- state the ops API and metrics see

    @property
    def entries_allowed(self) -> bool:
        return not self.operator_paused and not self.fail_reasons

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
        """Apply every queued ops command in order; returns what each did."""
        if self.ops is None:
            return []
        done = []
        for cmd in self.ops.drain():
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
                    self.flatten()
                result["ok"] = True
            except GridctlError as err:
                result.update(ok=False, error=str(err))
            self._note("ops", str(result))
            done.append(result)
        self.ops.record(done)
        if done:
            self.publish()
        return done

    def _block_entries(self) -> None:
        self.s.block_entries()
        if self.o.mode == "live":
            self.sync_orders()

    def flatten(self) -> None:
        """Cancel entries and close both sides: paper at the last close, live with market orders.

        Live: entries are cancelled first, then both positions are closed with market orders; their
        fills are booked at once and the lots' TP/SL (now without a position) are cancelled. A close
        that did not go through leaves its lots and their exits in place.
        """
        ts = self.s.last_ts or self.now_ms()
        if self.o.mode != "live":
            self.s.paper_flatten(ts)
            return
        self.s.block_entries()
        self.sync_orders()
        self._send_flatten(booked=False)
        self.sync_fills()
        self.sync_orders()

    def _send_flatten(self, booked: bool) -> None:
        assert self.gw is not None
        acct = self.gw.account(self.s.symbol)
        for side, pos in enumerate(_POS):
            p = acct.positions.get(pos)
            if p is None or p.qty <= 0.0:
                continue
            cid = encode_client_id(self.o.run_id, side, 0, "flatten", self._seq())
            req = gw.OrderRequest(cid, pos, "sell" if side == 0 else "buy", "market", p.qty, reduce_only=True)
            if booked:
                self._booked_flatten.add(cid)
            self._place(req, WantedOrder(side, 0, "flatten", req.side, "market", 0.0, p.qty, False, True))

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

    def check_stale(self, now_ms: int | None = None) -> bool:
        """Pause entries when no bar closed for ``stale_after_ms``; True while stale."""
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
        self.apply_commands()
        self.s.set_funding(bar.settled, bar.next_funding_ms)
        self.last_bar_close_ms = bar.ts + self.s.bar_ms
        if self.o.mode != "replay":
            # Stored data was validated when loaded (data.market); a live feed is checked every bar.
            self._check_funding(bar)
            self.check_stale()
        if self.o.mode == "live":
            # Critical path: book the fills, decide, send. The open-order view is the last exchange read
            # kept current with our own placements, cancels and fills; it and the margin figure are
            # read again after the orders went out (for the next bar).
            lat, t1 = self.latency, time.perf_counter()
            lat.phase("before", (t1 - t0) * 1000.0)
            self.sync_fills()
            t2 = time.perf_counter()
            lat.phase("fills", (t2 - t1) * 1000.0)
            halted_before = self.s.state[S_HALTED] != 0.0
            self.s.step_live(bar.ts, bar.open, bar.high, bar.low, bar.close, self.entries_allowed)
            killpoint.hit("bar")
            t3 = time.perf_counter()
            lat.phase("engine", (t3 - t2) * 1000.0)
            self.sync_orders(refresh=self._orders_unknown, defer_retries=True)
            if self.s.state[S_HALTED] != 0.0 and not halted_before:
                self._note("halt", "drawdown halt: closing both sides on the exchange")
                self._send_flatten(booked=True)
            t4 = time.perf_counter()
            lat.phase("orders", (t4 - t3) * 1000.0)
            lat.add((t4 - t0) * 1000.0)
            self.run_retries()
            if self._retried_ms is not None:
                lat.phase("retries", self._retried_ms)
            self.refresh_orders()
            self.read_account()
            if self.unexplained:
                self.review_unexplained()
        else:
            self.s.step_paper(bar.ts, bar.open, bar.high, bar.low, bar.close)
            if not self.entries_allowed:
                self.s.block_entries()
            self.latency.add((time.perf_counter() - t0) * 1000.0)
        self.checkpoint()
        if self.o.mode != "replay" or self.ops is not None:
            self.publish()

    def protect_fills(self) -> int:
        """Between bar closes (``--live``): book the exchange fills that came in and send the new lots'
        TP/SL, and cancel the exits of closed lots, at once instead of at the next close.

        Only what the fills changed goes out: the entries are decided at the close, as in the backtest
        (whose simulated venue attaches a lot's exits at its fill). Returns the bookings made.
        """
        if self.o.mode != "live":
            return 0
        booked = self.sync_fills()
        if self.journal is not None and self.journal.pending:
            self.checkpoint()  # the bookings and the state they produced, in one transaction
        if booked:
            self.sync_orders(refresh=False)
            self.checkpoint()
        return booked

    def resume_after_restart(self) -> None:
        """First thing after a reconciled restart (live): the order diff from a fresh read (exits for
        lots booked while down, orders of a lost state cancelled), unexplained exposure guarded, and a
        checkpoint."""
        self.sync_orders()
        if self.unexplained:
            self.guard_exposure()
        self.checkpoint()

    def checkpoint(self) -> None:
        """Commit the engine state with every fill and order status since the last checkpoint (journal)."""
        if self.journal is not None:
            self.journal.save_bar(
                self.s, {"operator_paused": self.operator_paused, "fills_cursor": self.fills_cursor}
            )

    def read_account(self) -> None:
        """Read the exchange account (live): the figures the status and metrics report, and the margin
        input of the fail-closed check (unreadable or no margin ratio pauses entries)."""
        assert self.gw is not None
        try:
            acct = self.gw.account(self.s.symbol)
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
            rows = self.gw.funding_payments_since(self.s.symbol, self._income_cursor)
        except gw.GatewayError as err:
            self.income_problem = f"funding income unreadable: {err}"
            return
        self.income_problem = None
        for ts, amount in rows:
            self.funding_income += amount
            self._income_cursor = max(self._income_cursor, ts + 1)

    # --- live: fills

    def _seq(self) -> int:
        if self.journal is not None:
            return self.journal.next_seq()
        self._mem_seq = getattr(self, "_mem_seq", 0) + 1
        return self._mem_seq

    def sync_fills(self) -> int:
        """Book exchange fills not yet booked; returns how many engine bookings were made."""
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
        booked = 0
        for f in sorted(fills, key=lambda f: f.ts_ms):  # booked in the order they happened
            self.fills_cursor = max(self.fills_cursor or 0, f.ts_ms)
            if self.journal is not None and self.journal.fill_known(f.trade_id):
                continue
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
        return booked

    def _maybe_book(self, client_id: str, cid: Any) -> int:
        """Book an order's fills once it is complete (VWAP price; taker if any part was taker)."""
        if self.journal is None:
            return 0
        order = self.journal.order(client_id)
        rows = self.journal.fills_for(client_id)
        qty = sum(r[1] for r in rows)
        if order is None or qty <= 0.0 or order["status"] == "booked":
            return 0
        if qty < order["qty"] * (1.0 - 1e-9) and order["status"] != "canceled":
            return 0  # partially filled: booked when complete or cancelled
        price = sum(r[0] * r[1] for r in rows) / qty
        liq = Liquidity.TAKER if any(r[2] == "taker" for r in rows) else Liquidity.MAKER
        ts = max(r[3] for r in rows)
        if cid.kind == "guard":
            # the guard of exposure the engine never held: its fill closes that, not an engine lot
            self.journal.order_status(client_id, "guard-filled", self.now_ms())
            self.open_orders = [o for o in self.open_orders if o.client_id != client_id]
            self._note("guard-fill", f"{client_id} {qty} @ {price}")
            return 0
        if cid.kind == "flatten":
            if client_id not in self._booked_flatten:
                self.s.book_flatten(cid.side, price, ts, liq)
        else:
            try:
                self.s.book_fill(cid.side, cid.level, cid.kind, price, qty, liq, ts)
            except GridctlError as err:
                self.journal.order_status(client_id, "unbookable", self.now_ms())
                self._flag_unexplained(f"fill of {client_id} ({qty} @ {price}) not bookable: {err}")
                return 0
        self.journal.order_status(client_id, "booked", self.now_ms())
        self.open_orders = [o for o in self.open_orders if o.client_id != client_id]
        self._note("fill", f"{client_id} {qty} @ {price}")
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
        half = float(self.s.venue.step_size) / 2.0
        out = []
        for side, pos in enumerate(_POS):
            p = acct.positions.get(pos)
            gap = (p.qty if p else 0.0) - self.s.position()[side]
            out.append(0.0 if abs(gap) <= half else _snap(gap, float(self.s.venue.step_size)))
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
        step = float(self.s.venue.step_size)
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
                stop = _snap(close * (1.0 - dist if side == 0 else 1.0 + dist), self.s.venue.tick_size)
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
            cid = encode_client_id(self.o.run_id, side, 0, "guard", self._seq())
            req = gw.OrderRequest(cid, pos, order_side, "market", gap, reduce_only=True)
            if self._place(req, WantedOrder(side, 0, "guard", order_side, "market", 0.0, gap, False, True)):
                self._note("guard", f"{pos} {gap} unexplained: closed at market")

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
            out.append(RestingOrder(o.client_id, float(px or 0.0), float(o.qty)))
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
            self.limiter.available(),
        )
        for cid in plan.cancels:
            killpoint.hit("cancel")
            try:
                self.gw.cancel(self.s.symbol, cid)
            except gw.GatewayError as err:
                self._error("cancel", err)
                continue
            killpoint.hit("canceled")
            self.open_orders = [o for o in self.open_orders if o.client_id != cid]
            if self.journal is not None:
                self.journal.order_status(cid, "canceled", self.now_ms())
                parsed = parse_client_id(cid)
                if parsed is not None:
                    self._maybe_book(cid, parsed)  # a partly filled order: book what filled
        for want in plan.places:
            if not self.limiter.take():
                plan.deferred.append(want)
                continue
            if self._place_wanted(want):
                self._retries.append(want)
        self.deferred += len(plan.deferred)
        self.last_deferred = [w.key for w in plan.deferred]
        if not defer_retries:
            self.run_retries()

    def _request(self, want: WantedOrder, cid: str, price: float) -> gw.OrderRequest:
        """The exchange request; price and qty snapped to the venue's tick / step (kernel floats drift)."""
        pos = _POS[want.side]
        price = _snap(price, self.s.venue.tick_size)
        want = replace(want, qty=_snap(want.qty, self.s.venue.step_size))
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
            # Outcome unknown: the journal keeps it as 'sending'; the next open-orders read settles it.
            self._error("place", err)
            return False
        except gw.GatewayError as err:
            if self.journal is not None:
                self.journal.order_status(req.client_id, "rejected", self.now_ms())
            self._error("place", err)
            return False
        killpoint.hit("sent")
        self.sent += 1
        if req.type != "market":
            self.open_orders.append(o)
        if self.journal is not None:
            self.journal.order_status(req.client_id, "open", self.now_ms(), o.exchange_id)
        return True

    def _place_wanted(self, want: WantedOrder) -> bool:
        """First attempt; True when a post-only rejection left a retry to make (``run_retries``)."""
        cid = encode_client_id(self.o.run_id, want.side, want.level, want.kind, self._seq())
        try:
            self._place(self._request(want, cid, want.price), want)
            return False
        except gw.PostOnlyRejected as err:
            self._error("post_only", err)
        if want.kind == "entry" and self.o.post_only_retries:
            return True
        self._give_up(want)
        return False

    def _give_up(self, want: WantedOrder) -> None:
        if want.kind == "entry":
            self.s.slots[want.side, want.level - 1, SL_ORD_ON] = 0.0
            self.s.state[S_DIRTY] = 1.0

    def run_retries(self) -> None:
        """Post-only retries of this bar's rejected entries, ``retry_delay_ms`` apart.

        They run after every first attempt went out, so one rejection's waits do not hold back the
        bar's other orders. An entry the slot array no longer wants (paused meanwhile) is dropped.
        """
        pending, self._retries = self._retries, []
        self._retried_ms = None
        if not pending:
            return
        t0 = time.perf_counter()
        for want in pending:
            s = self.s.slots[want.side, want.level - 1]
            if not self.entries_allowed or s[SL_ORD_ON] == 0.0 or s[SL_ORD_PRICE] != want.price:
                continue
            self._retry(want)
        self._retried_ms = (time.perf_counter() - t0) * 1000.0

    def _retry(self, want: WantedOrder) -> None:
        """Retry j = 1.. ``retry_attempts`` one tick further from the market, within the deviation bound."""
        p0, vec = want.price, self.s.vec
        tick = vec[P_TICK]
        for j in range(1, int(vec[P_RETRY_ATTEMPTS]) + 1):
            pj = p0 - j * tick if want.side == Side.LONG else p0 + j * tick
            if abs(pj - p0) / p0 * 1e4 > vec[P_RETRY_MAX_DEV_BPS]:
                self._note("retry-limit", f"{want.key} deviation beyond the limit at retry {j}")
                break
            self.sleep(self.o.retry_delay_ms / 1000.0)
            cid = encode_client_id(self.o.run_id, want.side, want.level, want.kind, self._seq())
            try:
                if self._place(self._request(want, cid, pj), want):
                    self.s.slots[want.side, want.level - 1, SL_ORD_PRICE] = pj
                return
            except gw.PostOnlyRejected as err:
                self._error("post_only", err)
        self._give_up(want)

    # --- snapshot for the ops API / metrics

    def snapshot(self) -> dict[str, Any]:
        st, slots = self.s.state, self.s.slots
        have_bar = self.s.n > 0
        unknown: dict[str, str] = {}
        snap: dict[str, Any] = {"mode": self.o.mode, "run_id": self.o.run_id, "symbol": self.s.symbol}
        state_code = int(st[S_STATE]) if have_bar else None
        snap["state"] = enum_name(RiskState, state_code).lower() if state_code is not None else "starting"
        if have_bar:
            snap.update(
                equity=float(st[S_EQUITY]),
                wallet_balance=float(st[S_WALLET]),
                realized_pnl=float(st[S_REALIZED]),
                unrealized_pnl=float(st[S_UNREAL]),
                trading_state=state_code,
                margin_ratio=float(st[S_MARGIN_RATIO]),
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
                unknown[k] = "no bar processed yet"
        if self.o.mode == "live":
            # Live: the account figures are the exchange's, not the engine's model of them (kept under
            # "engine" for comparison). Realized PnL stays the engine's: it books the exchange's fills.
            snap["engine"] = {
                k: snap[k] for k in ("equity", "wallet_balance", "unrealized_pnl", "margin_ratio")
            }
            acct = self.account
            if acct is None:
                why = self.fail_reasons.get("margin", "no account read yet")
                for k in ("equity", "wallet_balance", "unrealized_pnl", "margin_ratio"):
                    snap[k] = None
                    unknown[k] = why
            else:
                snap["equity"] = acct.equity
                snap["wallet_balance"] = acct.wallet_balance
                snap["unrealized_pnl"] = sum(p.unrealized_pnl for p in acct.positions.values())
                snap["margin_ratio"] = acct.margin_ratio
                if acct.margin_ratio is None:
                    unknown["margin_ratio"] = "exchange reports no margin ratio"
        # Funding cash flow since the start: the account's (live) or the engine's simulated venue's.
        snap["funding_income"] = float(st[S_FUNDING_NET]) if have_bar else 0.0
        if self.o.mode == "live":
            snap["engine"]["funding_income"] = snap["funding_income"]
            snap["funding_income"] = None if self.income_problem else self.funding_income
            if self.income_problem:
                unknown["funding_income"] = self.income_problem
        if "margin" in self.fail_reasons:
            snap["margin_ratio"] = None
            unknown["margin_ratio"] = self.fail_reasons["margin"]
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
        else:
            c = self.s.last_close
            snap["funding_rate"] = rate
            if math.isfinite(c):
                snap["funding_projected_cost"] = (lq - sq) * c * rate
            else:
                snap["funding_projected_cost"] = None
                unknown["funding_projected_cost"] = "no close price yet"
        snap["next_funding_ms"] = book.next_ts
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
        snap["ladder"] = {
            "center": None if math.isnan(center) else center,
            "regime": int(st[S_REGIME]),
            "rungs": ladder,
        }
        cb_until = float(st[S_CB_UNTIL])
        snap["gates"] = {
            "circuit_breaker_active": bool(st[S_CB_ACTIVE]),
            "circuit_breaker_until_ms": cb_until if math.isfinite(cb_until) else None,
            "reducing": bool(st[S_REDUCING]),
            "halted": bool(st[S_HALTED]),
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
        if self.last_bar_close_ms is None:
            snap["last_bar_age_seconds"] = None
            unknown["last_bar_age_seconds"] = "no bar processed yet"
        else:
            snap["last_bar_age_seconds"] = (self.now_ms() - self.last_bar_close_ms) / 1000.0
        snap["error_counts"] = {
            "engine": int(st[S_ERRORS]),
            **{f"exchange_{k}": v for k, v in self.errors.items()},
        }
        snap["orders_sent"] = self.sent
        snap["orders_deferred"] = self.deferred
        snap["latency"] = self.latency.summary()
        snap["bars"] = self.s.n
        snap["commands"] = list(self.ops.applied) if self.ops is not None else []
        snap["unknown"] = unknown
        return snap

    def publish(self) -> None:
        if self.ops is not None:
            self.ops.publish(self.snapshot())
