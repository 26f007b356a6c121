"""A deliberately slow, readable second implementation of DESIGN.md "Engine semantics".

This module exists only to check the numba kernel: it was written from the contract text alone (never
from the kernel source), uses plain Python floats, lists and small dataclasses, and favours obviousness
over speed. ``simulate`` walks the bars one by one through the eight per-bar steps of the contract and
returns the same ledgers the kernel returns (fills, funding, events, equity) as lists of dicts keyed by
the field names of ``engine.records``, plus summary numbers.

Choices the contract leaves open, made here and checked against the kernel by the differential tests:
- Every record of bar k carries ``ts[k]``; a funding row carries its settlement time.
- At the open: the post-only check of the new entries runs first (long before short, lower level
  first), then the resting orders the open gapped through fill one at a time in tie order (SL, TP,
  entry; long before short; lower level first); exits created by such a fill are checked against the
  open as well, so a lot whose stop the open also gapped through is stopped at once.
- Entry submissions at a close go nearest rung first: level 1 long, level 1 short, level 2 long, ...
  A resting order that is no longer wanted (or changes price / qty) is cancelled when its rung comes
  up in that order, so the size checks of the rungs before it still count it as resting.
- Entries are cancelled whenever they may not be placed (missing input, data gap, breaker, REDUCING,
  unknown funding, halt); TP/SL always stay. FUNDING_UNKNOWN is one event per blocked stretch.
- Errors happen at the bar open (post-only rejections) or at the close (validation rejections). The
  breaker is checked on every error and again at every bar's gate step (after a reset, errors still
  inside the window trip it again).
- The funding guard takes T0 / r from the last settlement at or before the close time, T1 from the
  first one after it.
- Size limits compare with a 1e-9 relative tolerance, so a sum of round lot sizes that lands a hair
  above a round limit does not count as a breach.
- A validation refusal is remembered per slot (the last 8, as DESIGN.md says) with what it depended on;
  the same (price, qty) is not submitted again while those inputs are unchanged.
- Event ``value`` is a free diagnostic (DESIGN.md gives it no meaning); the differential test skips it.
- Detail bars: fills and a liquidation found on detail bar j carry its ts; the last move from the
  final detail close to the bar's close carries the last detail bar's ts.

Baskets (``run_reference_basket``, DESIGN.md "Baskets: one cross-margin wallet"): one ``Sim`` per symbol
on the union of the symbols' timestamps (NaN bars where a symbol has none), stepping in basket order
against one ``Account``: the wallet, and for each symbol the rest of the account (the others' unrealized
PnL, maintenance margin and gross notional) at their adverse extremes before its path and at their
latest closes before its close phase, recomputed from their positions whenever it is needed. The peak,
the breaker's state and windows and the order-pacing window are shared; the per-bar order cap stays per
symbol's decision. The rules where the spec left a choice follow the kernel's DESIGN.md section.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

LONG, SHORT = 0, 1
ENTRY, TP, SL, FLATTEN, LIQUIDATION = 0, 1, 2, 3, 4
MAKER, TAKER = 0, 1
SIDEWAYS, UP, DOWN = 0, 1, 2
NORMAL, REDUCING, COOLDOWN, HALTED, LIQUIDATED = 0, 1, 2, 3, 4
MARK_SERIES, TRADE_OPEN = 0, 1

EVENT_KINDS = (
    "DATA_GAP",
    "RECENTER",
    "POST_ONLY_REJECT",
    "RETRY_LIMIT",
    "ORDER_REJECTED",
    "CIRCUIT_BREAKER_TRIP",
    "CIRCUIT_BREAKER_RESET",
    "DRAWDOWN_HALT",
    "REDUCING_ON",
    "REDUCING_OFF",
    "FUNDING_UNKNOWN",
    "INPUT_MISSING",
    "LIQUIDATION",
    "DAILY_LOSS_STOP",
    "DAILY_LOSS_RESET",
)
REASONS = (
    "NONE",
    "SIZE_PCT",
    "SIZE_QTY",
    "SIZE_INVENTORY",
    "SIZE_ORDER",
    "SIZE_BRACKET",
    "POST_ONLY",
    "RETRY_ATTEMPTS",
    "RETRY_DEVIATION",
    "LEVERAGE",
    "LIQUIDATION_BUFFER",
    "SIZE_MARGIN",
)
# Tie order at one price: SL before TP before entry.
_ORDER_RANK = {SL: 0, TP: 1, ENTRY: 2}


# ----------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------


def floor_tick(x: float, tick: float) -> float:
    """Round a price down onto the tick grid (the 1e-9 absorbs float noise just below a tick)."""
    return math.floor(x / tick + 1e-9) * tick


def ceil_tick(x: float, tick: float) -> float:
    """Round a price up onto the tick grid."""
    return math.ceil(x / tick - 1e-9) * tick


def floor_step(q: float, step: float) -> float:
    """Round a quantity down onto the lot-step grid."""
    return math.floor(q / step + 1e-9) * step


def _above(x: float, limit: float) -> bool:
    """``x > limit`` beyond float noise (1e-9 relative): sums of round lot sizes land a hair over."""
    return x > limit * (1 + 1e-9) if limit >= 0 else x > limit * (1 - 1e-9)


def _finite(*xs: float) -> bool:
    return all(math.isfinite(x) for x in xs)


@dataclass
class Bracket:
    """One maintenance-margin tier."""

    floor: float
    cap: float
    mmr: float
    cum: float
    max_leverage: float


def bracket_for(brackets: list[Bracket], notional: float) -> Bracket:
    """The tier holding ``notional`` (floor <= notional < cap; the last tier beyond the table)."""
    for b in brackets:
        if b.floor <= notional < b.cap:
            return b
    return brackets[-1]


def maint_margin(brackets: list[Bracket], notional: float) -> float:
    """Maintenance margin of one side: notional * mmr - cum of its tier (0 without a position)."""
    if notional <= 0.0:
        return 0.0
    b = bracket_for(brackets, notional)
    return notional * b.mmr - b.cum


def liquidation_price(
    wallet: float, L: float, avg_l: float, S: float, avg_s: float, brackets: list[Bracket], price: float
) -> float:
    """Binance hedge-mode cross liquidation price; NaN when there is none (no position, or <= 0).

    LP = (WB + cumL + cumS - L*avgL + S*avgS) / (L*mmrL + S*mmrS - L + S), tiers taken at ``price``.
    """
    if L <= 0.0 and S <= 0.0:
        return math.nan
    bl = bracket_for(brackets, L * price)
    bs = bracket_for(brackets, S * price)
    cum_l = bl.cum if L > 0 else 0.0
    cum_s = bs.cum if S > 0 else 0.0
    num = wallet + cum_l + cum_s - L * avg_l + S * avg_s
    den = L * bl.mmr + S * bs.mmr - L + S
    if den == 0.0:
        return math.nan
    lp = num / den
    return lp if lp > 0.0 else math.nan


# ----------------------------------------------------------------------------------------------------
# Regime indicators (plain Python, bar by bar)
# ----------------------------------------------------------------------------------------------------


class Ema:
    """EMA(n): SMA of the first n values, then e = x*a + e*(1-a) with a = 2/(n+1)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[float] = []
        self.value = math.nan

    def update(self, x: float) -> None:
        if len(self.seen) < self.n:
            self.seen.append(x)
            if len(self.seen) == self.n:
                self.value = sum(self.seen) / self.n
            return
        a = 2.0 / (self.n + 1)
        self.value = x * a + self.value * (1.0 - a)


class Rma:
    """Wilder RMA(n): SMA of the first n values, then r = (r*(n-1) + x)/n."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[float] = []
        self.value = math.nan

    def update(self, x: float) -> None:
        if len(self.seen) < self.n:
            self.seen.append(x)
            if len(self.seen) == self.n:
                self.value = sum(self.seen) / self.n
            return
        self.value = (self.value * (self.n - 1) + x) / self.n


class RegimeTracker:
    """EMA fast/slow, ATR and ADX on the valid bars, and the regime with hysteresis."""

    def __init__(self, cfg: Any) -> None:
        self.ema_fast = Ema(cfg.ema_fast)
        self.ema_slow = Ema(cfg.ema_slow)
        self.atr = Rma(cfg.atr_len)
        self.tr_rma = Rma(cfg.adx_len)
        self.pdm_rma = Rma(cfg.adx_len)
        self.mdm_rma = Rma(cfg.adx_len)
        self.adx = Rma(cfg.adx_len)
        self.threshold = cfg.adx_threshold
        self.hysteresis = cfg.hysteresis_bps
        self.prev: tuple[float, float, float] | None = None  # (high, low, close) of the last valid bar
        self.regime = SIDEWAYS

    def update(self, h: float, lo: float, c: float) -> None:
        """Feed one valid bar, then classify."""
        self.ema_fast.update(c)
        self.ema_slow.update(c)
        if self.prev is not None:
            ph, pl, pc = self.prev
            tr = max(h - lo, abs(h - pc), abs(lo - pc))
            up = h - ph
            down = pl - lo
            pdm = up if (up > down and up > 0.0) else 0.0
            mdm = down if (down > up and down > 0.0) else 0.0
            self.atr.update(tr)
            self.tr_rma.update(tr)
            self.pdm_rma.update(pdm)
            self.mdm_rma.update(mdm)
            if not math.isnan(self.tr_rma.value):
                trv = self.tr_rma.value
                pdi = 100.0 * self.pdm_rma.value / trv if trv != 0.0 else 0.0
                mdi = 100.0 * self.mdm_rma.value / trv if trv != 0.0 else 0.0
                dx = 100.0 * abs(pdi - mdi) / (pdi + mdi) if (pdi + mdi) != 0.0 else 0.0
                self.adx.update(dx)
        self.prev = (h, lo, c)
        self._classify()

    def warm(self) -> bool:
        return not any(
            math.isnan(v) for v in (self.ema_fast.value, self.ema_slow.value, self.adx.value, self.atr.value)
        )

    def _classify(self) -> None:
        if not self.warm() or self.adx.value < self.threshold:
            self.regime = SIDEWAYS
            return
        spread = (self.ema_fast.value - self.ema_slow.value) / self.ema_slow.value * 1e4
        if abs(spread) < self.hysteresis:
            return
        self.regime = UP if spread > 0 else DOWN


# ----------------------------------------------------------------------------------------------------
# Orders, lots and the simulator state
# ----------------------------------------------------------------------------------------------------


@dataclass
class Order:
    """An entry limit resting in a slot (side, level); ``new`` until it has met its first open."""

    side: int
    level: int
    price: float
    qty: float
    new: bool = True


@dataclass
class Lot:
    """The open position of one slot, with its exit prices (NaN when an exit was rejected)."""

    side: int
    level: int
    qty: float
    entry: float
    tp: float
    sl: float


@dataclass
class Refusal:
    """A refused entry and what the refusal depended on (None: the reason does not read that input)."""

    price: float
    qty: float
    total: float | None  # the side's exposure Q
    opposite: float | None  # the other side's exposure
    passes_at: float  # the equity at which the failed check passes (inf: equity cannot change it)


# Refusals remembered per slot (DESIGN.md "Order-size validation").
MEMO_SIZE = 8


@dataclass
class RefOutput:
    """Ledgers (lists of dicts with the record field names) and the final summary numbers."""

    fills: list[dict] = field(default_factory=list)
    funding: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    equity: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


@dataclass
class Params:
    """Every config number the simulation reads, pulled out of the typed configs once."""

    step: float
    levels: tuple[int, int]
    base_qty: float | None  # None: rung 1 is base_notional (quote) at the ladder centre
    qty_scale: float
    tp_steps: int
    sl_steps: int
    recenter_bps: float
    max_inventory_quote: float
    maker_only: bool
    retries_on: bool
    retry_attempts: int
    retry_max_dev_bps: float
    order_price_tol_bps: float
    order_qty_tol_pct: float
    funding_window_ms: int
    funding_max_cost_bps: float
    max_position_size: float
    max_position_pct: float
    max_leverage_used: float
    liq_buffer: float
    policy: str
    counter_levels: int
    counter_qty_scale: float
    throttle: float
    max_errors: int
    cooldown_ms: int
    max_dd_pct: float
    cb_window_ms: int
    validation_on: bool
    breaker_on: bool
    drawdown_on: bool
    initial: float
    slip: float
    touch: bool
    tick: float
    qty_step: float
    min_qty: float
    max_qty: float
    min_notional: float
    leverage: float
    min_order_usdt: float
    max_order_usdt: float
    per_bar_orders: int
    per_minute_orders: int
    maker_fee: float
    taker_fee: float
    brackets: list[Bracket]
    path_rule: str = "nearer_first"
    clearance_fee: float | None = None  # None: the remaining maintenance margin is lost
    base_notional: float | None = None
    max_num_orders: int = 200
    max_num_algo_orders: int = 10
    market_max_qty: float = math.inf
    max_daily_loss_pct: float | None = None  # None: no daily loss limit


def params_from(strategy: Any, venue: Any, symbol: str) -> Params:
    """Read the typed configs (field names as in DESIGN.md)."""
    g, ex, rb, exe = strategy.grid, strategy.exit, strategy.rebalance, strategy.execution
    fu, pos, pol, rm, bt = (
        strategy.funding,
        strategy.position,
        strategy.policy,
        strategy.risk_management,
        strategy.backtest,
    )
    pr = venue.rules_for(symbol)  # the symbol's own exchange rules
    brackets = [
        Bracket(b.notional_floor, b.notional_cap, b.maint_margin_ratio, b.cum, b.max_leverage)
        for b in venue.brackets_for(symbol)
    ]
    return Params(
        step=g.grid_step_bps / 1e4,
        levels=(g.grid_levels_long, g.grid_levels_short),
        base_qty=g.base_qty,
        base_notional=g.base_notional,
        qty_scale=g.qty_scale,
        tp_steps=ex.tp_steps,
        sl_steps=ex.sl_steps,
        recenter_bps=rb.recenter_trigger_bps,
        max_inventory_quote=rb.max_inventory_quote,
        maker_only=exe.maker_only,
        retries_on=exe.use_post_only_retries and not exe.optimization_mode,
        retry_attempts=exe.retry_attempts,
        retry_max_dev_bps=exe.retry_max_price_deviation_bps,
        order_price_tol_bps=exe.order_price_tolerance_bps,
        order_qty_tol_pct=exe.order_qty_tolerance_pct,
        funding_window_ms=fu.funding_window_minutes * 60_000,
        funding_max_cost_bps=fu.funding_max_cost_bps,
        max_position_size=math.inf if pos.max_position_size is None else pos.max_position_size,
        max_position_pct=pos.max_position_pct,
        max_leverage_used=pos.max_leverage_used,
        liq_buffer=pos.emergency_liquidation_buffer,
        policy=pol.strategy,
        counter_levels=pol.counter_levels,
        counter_qty_scale=pol.counter_qty_scale,
        throttle=pol.throttle,
        max_errors=rm.max_errors_per_minute,
        cooldown_ms=rm.circuit_breaker_cooldown_seconds * 1000,
        max_dd_pct=rm.max_drawdown_pct,
        cb_window_ms=rm.circuit_breaker_window_seconds * 1000,
        validation_on=rm.enable_position_validation,
        breaker_on=rm.enable_circuit_breaker,
        drawdown_on=rm.enable_drawdown_protection,
        initial=bt.initial_balance,
        slip=bt.slippage_bps / 1e4,
        touch=bt.fill_on_touch,
        tick=pr.tick_size,
        qty_step=pr.step_size,
        min_qty=pr.min_qty,
        max_qty=pr.max_qty,
        min_notional=pr.min_notional,
        max_num_orders=pr.max_num_orders,
        market_max_qty=pr.market_max_qty,
        max_num_algo_orders=pr.max_num_algo_orders,
        leverage=float(venue.trading.leverage),
        min_order_usdt=venue.risk.min_order_size_usdt,
        max_order_usdt=venue.risk.max_order_size_usdt,
        per_bar_orders=venue.rate_limits.orders_per_second,
        per_minute_orders=venue.rate_limits.orders_per_minute,
        maker_fee=venue.fees.maker,
        taker_fee=venue.fees.taker,
        brackets=brackets,
        path_rule=bt.intrabar_path,
        clearance_fee=venue.margin.liquidation_clearance_fee if venue.margin is not None else None,
        max_daily_loss_pct=rm.max_daily_loss_pct,
    )


def close_out(sim: Sim, px: float, level: int = 0) -> None:
    """A liquidation of ``sim``: both sides close at ``px`` (fills kind liquidation, taker, level 0).

    The fills pay no trading fee but each side's clearance (its maintenance margin at ``px``, or the
    venue's clearance fee x notional), long first, together at most the equity of this symbol's margin
    wallet at ``px`` (in a basket W + others' unrealized - others' maintenance margin + its own
    unrealized, so the others' maintenance margin is left for their charges). When what the charges
    leave is float noise around 0 (within 1e-9 x the liquidated notional), the margin wallet holds
    exactly 0 (the residual goes to the last charge); a gap past bankruptcy keeps its negative wallet.
    The event's ``level`` is 1 + the basket index of the symbol whose path crossed (0 in a single run).
    """
    held = sim.qty[LONG] + sim.qty[SHORT]
    margin_equity = sim.margin_wallet() + (sim.unreal_at(px) if held > 0 else 0.0)
    left = max(margin_equity, 0.0)
    sim.orders.clear()
    sim.event("LIQUIDATION", level=level, price=px, value=sim.wallet() + sim.unreal_at(px) + sim.x_unreal)
    zero = 1e-9 * held * px  # DESIGN: "float noise around 0"
    for side in (LONG, SHORT):
        if sim.qty[side] > 0.0:
            q = sim.qty[side]
            if sim.p.clearance_fee is None:
                charge = maint_margin(sim.p.brackets, q * px)
            else:
                charge = sim.p.clearance_fee * q * px
            charge = min(max(charge, 0.0), left)
            left -= charge
            for key in [k for k in sim.lots if k[0] == side]:
                del sim.lots[key]
            sim.fill(side, LIQUIDATION, 0, px, q, TAKER, fee=charge)
    if held > 0 and left <= zero and margin_equity > -zero:
        # What is left is float noise around 0: the margin wallet holds exactly 0 (the residual of the
        # sums goes to the last clearance charge); a gap past bankruptcy keeps its negative wallet.
        resid = sim.margin_wallet()
        sim.fees += resid
        sim.out.fills[-1]["fee"] += resid
        if sim.account is None:
            sim.emptied = True
        elif not any(Account.holds(o) for o in sim.account.sims):
            sim.account.emptied = True  # the last close of the account: its wallet is exactly 0
    sim.liquidated = True


@dataclass
class Book:
    """What a basket's symbols share beyond the wallet: the equity peak and the circuit breaker (tripped
    while now < ``cb_until``). A single run has its own."""

    peak: float
    cb_tripped: bool = False
    cb_until: int = -1


class Sim:
    """The whole simulation state and the per-bar steps, one method per step."""

    # The equity peak and the breaker's state live in ``book`` (one for every symbol of a basket).
    peak = property(lambda self: self.book.peak, lambda self, v: setattr(self.book, "peak", v))
    cb_tripped = property(
        lambda self: self.book.cb_tripped, lambda self, v: setattr(self.book, "cb_tripped", v)
    )
    cb_until = property(lambda self: self.book.cb_until, lambda self, v: setattr(self.book, "cb_until", v))

    def __init__(self, market: Any, p: Params, regime_cfg: Any, detail: Any = None) -> None:
        self.m = market
        self.detail = detail  # finer bars for the path walk (DESIGN.md "Detail bars"), or None
        self.detail_ts = [] if detail is None else [int(t) for t in detail.ts]
        self.p = p
        self.throttle = p.throttle
        self.out = RefOutput()
        # accounts
        self.qty = [0.0, 0.0]
        self.avg = [0.0, 0.0]
        self.realized = 0.0
        self.fees = 0.0
        self.funding = 0.0
        self.equity = p.initial
        self.unrealized = 0.0
        self.book = Book(peak=p.initial)  # the equity peak and the breaker: the account's in a basket
        self.max_dd = 0.0
        # orders
        self.orders: dict[tuple[int, int], Order] = {}
        self.lots: dict[tuple[int, int], Lot] = {}
        self.refusals: dict[tuple[int, int], list[Refusal]] = {}
        # ladder and regime
        self.centre = math.nan
        self.last_close = math.nan  # the margin ratio of a bar with missing input uses it
        self.regime = RegimeTracker(regime_cfg)
        # funding pointer: index of the first settlement not yet applied
        self.f_next = 0
        self.funding_times = [int(t) for t in market.funding_ts]
        # risk
        self.halted = False
        self.liquidated = False
        self.emptied = False  # a liquidation's charges took all the (positive) equity
        self.errors: list[int] = []
        self.reducing = False
        self.funding_unknown = False  # the FUNDING_UNKNOWN event marks the start of a blocked stretch
        self.input_missing = False
        self.loss_day = -1  # UTC day the daily loss limit measures (-1: none yet)
        self.day_open = p.initial  # that day's opening equity
        self.day_stopped = False  # entries stopped by the daily loss limit until a later day
        self.submissions: list[int] = []  # close times of entries submitted by a decision
        self.retries_submitted = 0  # post-only retries sent (each passed validation)
        self.submitted = 0  # entries submitted by this symbol's decisions
        # counters
        self.n_errors = 0
        self.skipped_precision = 0
        self.skipped_order_limit = 0
        self.orders_deferred = 0
        self.ts = 0
        self.k = 0  # the bar being stepped
        # The rest of the account in a basket (DESIGN.md "Baskets"): the other symbols' unrealized PnL,
        # maintenance margin and gross notional, set by the basket before this symbol's path and again
        # before its close; all 0 (and no account) in a single-symbol run.
        self.account: Account | None = None
        self.x_unreal = 0.0
        self.x_mm = 0.0
        self.x_notional = 0.0

    # ---------------------------------------------------------------- records
    def fill(
        self, side: int, kind: int, level: int, price: float, qty: float, liq: int, fee: float | None = None
    ) -> None:
        """Apply one fill to the account and write its ledger row (``fee``: a liquidation's charge)."""
        if fee is None:
            fee = price * qty * (self.p.maker_fee if liq == MAKER else self.p.taker_fee)
        self.fees += fee
        realized = 0.0
        if kind == ENTRY:
            q, a = self.qty[side], self.avg[side]
            self.avg[side] = (q * a + qty * price) / (q + qty)
            self.qty[side] = q + qty
        else:
            a = self.avg[side]
            realized = qty * (price - a) if side == LONG else qty * (a - price)
            self.realized += realized
            left = self.qty[side] - qty
            if not any(lot.side == side for lot in self.lots.values()) or left <= 0.0:
                left = 0.0
            self.qty[side] = left
            if left == 0.0:
                self.avg[side] = 0.0
        self.out.fills.append(
            {
                "ts": self.ts,
                "side": side,
                "kind": kind,
                "level": level,
                "price": price,
                "qty": qty,
                "fee": fee,
                "liquidity": liq,
                "realized_pnl": realized,
            }
        )

    def event(
        self,
        kind: str,
        reason: str = "NONE",
        side: int = -1,
        level: int = 0,
        price: float = 0.0,
        qty: float = 0.0,
        value: float = 0.0,
    ) -> None:
        self.out.events.append(
            {
                "ts": self.ts,
                "kind": EVENT_KINDS.index(kind),
                "reason": REASONS.index(reason),
                "side": side,
                "level": level,
                "price": price,
                "qty": qty,
                "value": value,
            }
        )

    # ---------------------------------------------------------------- accounting
    def wallet(self) -> float:
        if self.account is not None:  # a basket: one wallet for every symbol
            return self.account.wallet()
        if self.emptied:  # a liquidation took all the equity (margin_check)
            return 0.0
        return self.p.initial + self.realized - self.fees + self.funding

    def margin_wallet(self) -> float:
        """The wallet this symbol's margin sees: the wallet plus the rest of the account's unrealized
        PnL, minus its maintenance margin (Binance's cross formula: WB - TMM1 + UPNL1)."""
        return self.wallet() + self.x_unreal - self.x_mm

    def unreal_at(self, m: float) -> float:
        return self.qty[LONG] * (m - self.avg[LONG]) + self.qty[SHORT] * (self.avg[SHORT] - m)

    def maint_at(self, m: float) -> float:
        return maint_margin(self.p.brackets, self.qty[LONG] * m) + maint_margin(
            self.p.brackets, self.qty[SHORT] * m
        )

    # ---------------------------------------------------------------- errors and the breaker
    def error(self, now: int) -> None:
        """Count an error, then check the breaker."""
        self.n_errors += 1
        self.errors.append(now)
        self.check_breaker(now)

    def check_breaker(self, now: int) -> None:
        """Trip the breaker when the window (now - window, now] holds max_errors_per_minute errors."""
        if not self.p.breaker_on or self.cb_tripped:
            return
        recent = [t for t in self.errors if now - self.p.cb_window_ms < t <= now]
        if len(recent) >= self.p.max_errors:
            self.cb_tripped = True
            self.cb_until = now + self.p.cooldown_ms
            for sim in self.account.sims if self.account is not None else [self]:
                sim.cancel_entries()  # a basket's breaker cancels every symbol's entries
            self.event("CIRCUIT_BREAKER_TRIP", value=float(self.cb_until))

    def cancel_entries(self) -> None:
        self.orders.clear()

    # ---------------------------------------------------------------- order-size validation
    def exposures(self, side: int, level: int, qty: float, price: float) -> tuple[float, float]:
        """(Q, opposite): the side's position + its other resting entries + ``qty``, and the other
        side's position + all its resting entries (summed in level order); in a basket the opposite
        exposure also holds the rest of the account's gross notional in units at ``price``."""
        resting = sorted(self.orders.items())
        others = sum(o.qty for (s, lv), o in resting if s == side and lv != level)
        opp = 1 - side
        opposite = self.qty[opp] + sum(o.qty for (s, _), o in resting if s == opp)
        return self.qty[side] + others + qty, opposite + self.x_notional / price

    def refused_before(self, side: int, level: int, price: float, qty: float) -> bool:
        """A remembered refusal of this (price, qty) still holds: the inputs it read are unchanged."""
        total, opposite = self.exposures(side, level, qty, price)
        for r in self.refusals.get((side, level), []):
            if r.price != price or r.qty != qty:
                continue
            if r.total is not None and r.total != total:
                continue
            if r.opposite is not None and r.opposite != opposite:
                continue
            if self.equity < r.passes_at:
                return True
        return False

    def remember_refusal(self, side: int, level: int, price: float, qty: float, reason: str) -> None:
        """Keep the refusal and its inputs; only the last MEMO_SIZE per slot are kept."""
        total, opposite = self.exposures(side, level, qty, price)
        passes_at = math.inf
        if reason == "SIZE_PCT":
            passes_at = total * price / self.p.leverage / self.p.max_position_pct
        elif reason == "SIZE_MARGIN":
            passes_at = (total + opposite) * price / self.p.leverage
        memo = Refusal(
            price,
            qty,
            None if reason == "SIZE_ORDER" else total,
            opposite if reason == "SIZE_MARGIN" else None,
            passes_at,
        )
        kept = self.refusals.setdefault((side, level), [])
        kept.append(memo)
        del kept[:-MEMO_SIZE]

    def validate_entry(self, side: int, level: int, price: float, qty: float) -> str | None:
        """First failing size rule of an entry (None: accepted)."""
        total, opposite = self.exposures(side, level, qty, price)
        # The bot's own limits: enable_position_validation false skips these three, never the venue's.
        if self.p.validation_on:
            if _above(total * price / self.p.leverage, self.p.max_position_pct * self.equity):
                return "SIZE_PCT"
            if _above(total, self.p.max_position_size):
                return "SIZE_QTY"
            if _above(total * price, self.p.max_inventory_quote):
                return "SIZE_INVENTORY"
        if _above(self.p.min_order_usdt, qty * price) or _above(qty * price, self.p.max_order_usdt):
            return "SIZE_ORDER"
        allowed = max((b.cap for b in self.p.brackets if b.max_leverage >= self.p.leverage), default=0.0)
        if _above(total * price, allowed):
            return "SIZE_BRACKET"
        # The account must margin both sides if every resting entry of both sides filled.
        if _above((total + opposite) * price / self.p.leverage, self.equity):
            return "SIZE_MARGIN"
        return None

    def open_lot(self, side: int, level: int, price: float, qty: float) -> None:
        """Entry filled: the slot now holds a lot with its TP and SL."""
        s, tick = self.p.step, self.p.tick
        if side == LONG:
            tp = ceil_tick(price * (1 + self.p.tp_steps * s), tick)
            sl = floor_tick(price * (1 - self.p.sl_steps * s), tick)
        else:
            tp = floor_tick(price * (1 - self.p.tp_steps * s), tick)
            sl = ceil_tick(price * (1 + self.p.sl_steps * s), tick)
        # Exits are reduce-only for the lot's qty, which the side's position (it includes the lot) covers.
        self.lots[(side, level)] = Lot(side, level, qty, price, tp, sl)

    # ---------------------------------------------------------------- step 2: funding
    def apply_funding(self, k: int) -> None:
        m = self.m
        while self.f_next < len(m.funding_ts) and m.funding_ts[self.f_next] <= m.ts[k]:
            i = self.f_next
            settle, rate, mark = int(m.funding_ts[i]), float(m.funding_rate[i]), float(m.funding_mark[i])
            self.f_next += 1
            if settle < int(m.ts[0]):
                continue  # before the data: never paid (its rate still counts for the guard)
            src = MARK_SERIES
            if not math.isfinite(mark):
                mark, src = float(m.open[k]), TRADE_OPEN
            for side in (LONG, SHORT):
                q = self.qty[side]
                if q <= 0.0:
                    continue
                amount = -q * mark * rate if side == LONG else q * mark * rate
                self.funding += amount
                self.out.funding.append(
                    {
                        "ts": settle,
                        "side": side,
                        "rate": rate,
                        "mark_price": mark,
                        "mark_source": src,
                        "qty": q,
                        "amount": amount,
                    }
                )

    # ---------------------------------------------------------------- step 3: the intrabar path
    def exits(self) -> list[tuple[int, int, int, float]]:
        """Active exit orders as (kind, side, level, trigger price)."""
        out = []
        for (side, level), lot in self.lots.items():
            if not math.isnan(lot.tp):
                out.append((TP, side, level, lot.tp))
                out.append((SL, side, level, lot.sl))
        return out

    def active(self) -> list[tuple[int, int, int, float]]:
        """Every active order as (kind, side, level, price): resting entries and lot exits."""
        out = [(ENTRY, o.side, o.level, o.price) for o in self.orders.values()]
        return out + self.exits()

    @staticmethod
    def tie_key(o: tuple[int, int, int, float]) -> tuple[int, int, int]:
        kind, side, level, _ = o
        return (_ORDER_RANK[kind], side, level)

    def execute(self, o: tuple[int, int, int, float], at_open: float | None) -> None:
        """Fill one active order; ``at_open`` is the open when a stop gapped through it."""
        kind, side, level, price = o
        if kind == ENTRY:
            order = self.orders.pop((side, level))
            self.fill(side, ENTRY, level, order.price, order.qty, MAKER)
            self.open_lot(side, level, order.price, order.qty)
            return
        lot = self.lots.pop((side, level))
        if kind == TP:
            self.fill(side, TP, level, price, lot.qty, MAKER)
            return
        trigger = price if at_open is None else at_open
        px = trigger * (1 - self.p.slip) if side == LONG else trigger * (1 + self.p.slip)
        self.fill(side, SL, level, px, lot.qty, TAKER)

    def is_buy(self, kind: int, side: int) -> bool:
        """Long entries and short exits buy; short entries and long exits sell."""
        return (side == LONG) == (kind == ENTRY)

    def open_point(self, o: float) -> None:
        """At the open: post-only check of new entries, then gapped-through resting orders fill."""
        new = sorted((x for x in self.orders.values() if x.new), key=lambda x: (x.side, x.level))
        for order in new:
            if (order.side, order.level) not in self.orders:
                continue  # the breaker cancelled it
            order.new = False
            buy = order.side == LONG
            crosses = order.price >= o if buy else order.price <= o
            if not crosses:
                continue
            if not self.p.maker_only:
                del self.orders[(order.side, order.level)]
                # taker at the open moved by slippage, but never beyond the order's own limit
                if buy:
                    px = min(order.price, o * (1 + self.p.slip))
                else:
                    px = max(order.price, o * (1 - self.p.slip))
                self.fill(order.side, ENTRY, order.level, px, order.qty, TAKER)
                self.open_lot(order.side, order.level, px, order.qty)
                continue
            self.post_only_reject(order, o)
        while True:
            gapped = []
            for x in self.active():
                kind, side, level, price = x
                if kind == ENTRY and self.orders[(side, level)].new:
                    continue
                buy = self.is_buy(kind, side)
                if kind == SL:
                    hit = o >= price if buy else o <= price
                elif self.p.touch:
                    hit = o <= price if buy else o >= price
                else:
                    hit = o < price if buy else o > price
                if hit:
                    gapped.append(x)
            if not gapped:
                return
            # one at a time: an entry filled here creates exits the open may have gapped through too
            first = min(gapped, key=self.tie_key)
            self.execute(first, at_open=o if first[0] == SL else None)

    def post_only_reject(self, order: Order, o: float) -> None:
        """A maker-only entry crossed at the open: reject, then retry away from the market."""
        key = (order.side, order.level)
        del self.orders[key]
        buy = order.side == LONG
        self.event("POST_ONLY_REJECT", "POST_ONLY", order.side, order.level, order.price, order.qty)
        self.error(self.ts)
        if not self.p.retries_on or self.cb_tripped:
            return
        for j in range(1, self.p.retry_attempts + 1):
            px = order.price - j * self.p.tick if buy else order.price + j * self.p.tick
            if abs(px - order.price) / order.price * 1e4 > self.p.retry_max_dev_bps:
                self.event("RETRY_LIMIT", "RETRY_DEVIATION", order.side, order.level, px, order.qty, float(j))
                return
            if self.refused_before(order.side, order.level, px, order.qty):
                return
            reason = self.validate_entry(order.side, order.level, px, order.qty)
            if reason is not None:
                self.remember_refusal(order.side, order.level, px, order.qty, reason)
                self.event(
                    "ORDER_REJECTED", reason, order.side, order.level, px, order.qty, self.qty[order.side]
                )
                self.error(self.ts)
                return
            self.retries_submitted += 1
            if (px < o) if buy else (px > o):
                self.orders[key] = Order(order.side, order.level, px, order.qty, new=False)
                return
            self.event("POST_ONLY_REJECT", "POST_ONLY", order.side, order.level, px, order.qty, float(j))
            self.error(self.ts)
            if self.cb_tripped:
                return
        attempts = float(self.p.retry_attempts)
        self.event("RETRY_LIMIT", "RETRY_ATTEMPTS", order.side, order.level, order.price, order.qty, attempts)

    def walk(self, a: float, b: float) -> bool:
        """Walk the segment a -> b, filling the nearest hit order each time; True when liquidated.

        The liquidation price is a trigger too: the margin check runs at the next order's price before
        it fills (at b when no order is left) and again after each fill.
        """
        if a == b:
            return False
        cur = a
        down = b < a
        while True:
            hits = []
            for x in self.active():
                kind, side, _level, p = x
                buy = self.is_buy(kind, side)
                # moving down: buy limits and sell stops; moving up: sell limits and buy stops
                if down != (buy != (kind == SL)):
                    continue
                if down:
                    ok = (b <= p <= cur) if (kind == SL or self.p.touch) else (b < p <= cur)
                else:
                    ok = (cur <= p <= b) if (kind == SL or self.p.touch) else (cur <= p < b)
                if ok:
                    hits.append(x)
            if not hits:
                return self.margin_check(cur, b)
            nearest = max(h[3] for h in hits) if down else min(h[3] for h in hits)
            if self.margin_check(cur, nearest):
                return True
            first = min((h for h in hits if h[3] == nearest), key=self.tie_key)
            self.execute(first, at_open=None)
            cur = first[3]
            if self.margin_check(cur, cur):
                return True

    def margin_check(self, a: float, m: float) -> bool:
        """Liquidate both sides when equity at ``m`` <= maintenance margin; True when liquidated.

        The close happens at the liquidation price (tiers at ``m``) clamped into the range traded
        since the current point ``a``; at ``m`` when there is no positive liquidation price. The
        fills pay no trading fee but each side's clearance: its maintenance margin at the close price
        (or the venue's clearance fee x notional), long first, together at most the equity left.
        In a basket the equity and the maintenance margin are the account's (the rest of the account
        at its adverse extremes) and every other symbol closes too (``Account.liquidate``).
        """
        if self.qty[LONG] <= 0.0 and self.qty[SHORT] <= 0.0:
            return False
        equity = self.wallet() + self.unreal_at(m) + self.x_unreal
        if equity > self.maint_at(m) + self.x_mm:
            return False
        L, S = self.qty[LONG], self.qty[SHORT]
        lp = liquidation_price(
            self.margin_wallet(), L, self.avg[LONG], S, self.avg[SHORT], self.p.brackets, m
        )
        px = min(max(lp, min(a, m)), max(a, m)) if _finite(lp) else m
        if self.account is not None:
            self.account.liquidate(self, px)
        else:
            close_out(self, px)
        return True

    def extremes(self, o: float, h: float, lo: float) -> tuple[float, float]:
        """The bar's two extremes in the order backtest.intrabar_path assumes."""
        if self.p.path_rule == "high_first":
            return h, lo
        if self.p.path_rule == "low_first":
            return lo, h
        high_nearer = h - o <= o - lo
        if self.p.path_rule == "farther_first":
            return (lo, h) if high_nearer else (h, lo)
        return (h, lo) if high_nearer else (lo, h)

    def path(self, k: int, o: float, h: float, lo: float, c: float) -> bool:
        """Step 3; True when the account was liquidated on the way."""
        self.open_point(o)
        if self.margin_check(o, o):
            return True
        bar_ts = self.ts
        fine = self.detail_bars(k)
        if fine is None:
            legs = [(bar_ts, [*self.extremes(o, h, lo), c])]
        else:
            legs = [(t, [fo, *self.extremes(fo, fh, fl), fc]) for t, fo, fh, fl, fc in fine]
            legs.append((fine[-1][0], [c]))
        prev = o
        try:
            for t, points in legs:
                self.ts = t
                for nxt in points:
                    if self.walk(prev, nxt):
                        return True
                    prev = nxt
        finally:
            self.ts = bar_ts
        return False

    def detail_bars(self, k: int) -> list[tuple[int, float, float, float, float]] | None:
        """(ts, o, h, l, c) of bar k's detail bars; None without detail or when one is missing."""
        d = self.detail
        if d is None:
            return None
        t0 = int(self.m.ts[k])
        lo_i = bisect.bisect_left(self.detail_ts, t0)
        hi_i = bisect.bisect_left(self.detail_ts, t0 + int(self.m.bar_ms))
        bars = [
            (self.detail_ts[j], float(d.open[j]), float(d.high[j]), float(d.low[j]), float(d.close[j]))
            for j in range(lo_i, hi_i)
        ]
        if len(bars) != int(self.m.bar_ms) // int(d.bar_ms) or not all(_finite(*b[1:]) for b in bars):
            return None
        return bars

    # ---------------------------------------------------------------- steps 5-6: marking and gates
    def mark_flat(self) -> None:
        """Mark a flat account (after a basket's liquidation): equity = wallet."""
        self.unrealized = 0.0
        self.equity = self.wallet() + self.x_unreal
        self._raise_peak()

    def mark(self, c: float) -> None:
        self.unrealized = self.unreal_at(c)
        self.equity = self.wallet() + self.unrealized + self.x_unreal  # the account's equity
        self._raise_peak()

    def _raise_peak(self) -> None:
        """A single run's peak follows its marks. A basket's peak is the account's, raised only by the
        account's rows (every symbol at its latest close, ``Account.record``): a symbol's own mark mixes
        the others' earlier closes and is never an equity the account had."""
        if self.account is not None:
            return
        self.peak = max(self.peak, self.equity)
        if self.peak > 0:
            self.max_dd = max(self.max_dd, (self.peak - self.equity) / self.peak * 100.0)

    def halt(self, c: float, dd: float, level: int = 0) -> None:
        """Drawdown halt: cancel all, flatten both sides at ``c`` (taker, slippage), HALTED from now.

        ``level``: 1 + the basket index of the symbol that saw the drawdown (0 in a single run)."""
        p = self.p
        self.orders.clear()
        self.event("DRAWDOWN_HALT", level=level, price=c, value=dd)
        for side in (LONG, SHORT):
            q = self.qty[side]
            if q > 0.0:
                px = c * (1 - p.slip) if side == LONG else c * (1 + p.slip)
                # MARKET_LOT_SIZE: market orders of at most market_max_qty, the rest last.
                while q > p.market_max_qty * (1 + 1e-9):
                    self.fill(side, FLATTEN, 0, px, p.market_max_qty, TAKER)
                    q -= p.market_max_qty
                for key in [k for k in self.lots if k[0] == side]:
                    del self.lots[key]
                self.fill(side, FLATTEN, 0, px, q, TAKER)
        self.halted = True
        self.mark(c)

    def gates(self, c: float, close_time: int) -> None:
        p = self.p
        if p.drawdown_on and not self.halted and self.peak > 0:
            dd = (self.peak - self.equity) / self.peak * 100.0
            if dd >= p.max_dd_pct:
                if self.account is not None:
                    self.account.drawdown_halt(self, c, dd)  # the account's drawdown halts every symbol
                else:
                    self.halt(c, dd)
        if self.cb_tripped and close_time >= self.cb_until:
            self.cb_tripped = False
            self.event("CIRCUIT_BREAKER_RESET", value=float(close_time))
        self.check_breaker(close_time)  # every bar, too: errors still in the window trip it again
        reason = None
        L, S = self.qty
        if L + S > 0.0:
            lev = ((L + S) * c + self.x_notional) / self.equity if self.equity > 0 else math.inf
            lp = liquidation_price(self.margin_wallet(), L, self.avg[LONG], S, self.avg[SHORT], p.brackets, c)
            if lev > p.max_leverage_used:
                reason = "LEVERAGE"
            elif not math.isnan(lp) and abs(c - lp) / c < p.liq_buffer:
                reason = "LIQUIDATION_BUFFER"
        if reason is not None and not self.reducing:
            self.event("REDUCING_ON", reason, price=c)
        elif reason is None and self.reducing:
            self.event("REDUCING_OFF", price=c)
        self.reducing = reason is not None
        self.daily_loss(c)

    def daily_loss(self, c: float) -> None:
        """Daily loss limit: the day's loss from its opening equity (the equity recorded at the bar
        before the day's first bar) reaching the limit stops entries until the next UTC day's first bar."""
        limit = self.p.max_daily_loss_pct
        if limit is None or self.halted:
            return
        day = self.ts // 86_400_000
        if day != self.loss_day:
            self.loss_day = day
            self.day_open = self.out.equity[-1]["equity"] if self.out.equity else self.p.initial
            if self.day_stopped:
                self.day_stopped = False
                self.event("DAILY_LOSS_RESET", price=c)
        if self.day_stopped or self.day_open <= 0:
            return
        loss = (self.day_open - self.equity) / self.day_open * 100.0
        if loss >= limit:
            self.day_stopped = True
            self.cancel_entries()
            self.event("DAILY_LOSS_STOP", price=c, value=loss)

    # ---------------------------------------------------------------- step 7: decide
    def funding_scale(self, close_time: int) -> tuple[float, float] | None:
        """Per-side guard factor; None when no rate is known (entries blocked)."""
        m, p = self.m, self.p
        after = bisect.bisect_right(self.funding_times, close_time)  # first settlement > close_time
        if after == 0 or math.isnan(float(m.funding_rate[after - 1])):
            return None
        r = float(m.funding_rate[after - 1])
        T1 = self.funding_times[after] if after < len(self.funding_times) else None
        scale = [1.0, 1.0]
        if T1 is not None and T1 - close_time <= p.funding_window_ms:
            cost = abs(r) * 1e4  # the settlement inside the window costs the whole rate
            if cost > p.funding_max_cost_bps and r != 0.0:
                paying = LONG if r > 0 else SHORT
                scale[paying] = max(0.0, (T1 - close_time) / p.funding_window_ms)
        return scale[0], scale[1]

    def wanted(self, c: float, guard: tuple[float, float]) -> dict[tuple[int, int], tuple[float, float]]:
        """Slot -> (price, qty) of every entry the ladder wants at this close."""
        p = self.p
        regime = self.regime.regime
        counter = SHORT if regime == UP else LONG if regime == DOWN else None
        out = {}
        for side in (LONG, SHORT):
            levels = p.levels[side]
            scale = 1.0
            if counter is not None:
                if p.policy == "core-and-scalp" or side == counter:
                    levels = min(p.counter_levels, levels)
                if side == counter:
                    scale = p.counter_qty_scale
            for i in range(1, levels + 1):
                if (side, i) in self.lots:
                    continue
                if side == LONG:
                    price = floor_tick(self.centre * (1 - i * p.step), p.tick)
                    if not price < c:
                        continue
                else:
                    price = ceil_tick(self.centre * (1 + i * p.step), p.tick)
                    if not price > c:
                        continue
                unit = p.base_qty if p.base_notional is None else p.base_notional / self.centre
                base = unit * p.qty_scale ** (i - 1)
                qty = floor_step(base * scale * guard[side] * self.throttle, p.qty_step)
                if not (p.min_qty <= qty <= p.max_qty) or qty <= 0.0 or qty * price < p.min_notional:
                    self.skipped_precision += 1
                    continue
                out[(side, i)] = (price, qty)
        return out

    def decide(self, c: float, close_time: int) -> None:
        p = self.p
        if self.halted or self.liquidated or self.input_missing:
            self.cancel_entries()
            return
        if abs(c - self.centre) / self.centre * 1e4 > p.recenter_bps:
            self.event("RECENTER", price=c, value=self.centre)
            self.centre = c
            self.cancel_entries()  # every resting entry goes before the new rungs are walked
        if self.cb_tripped or self.reducing or self.day_stopped:
            self.cancel_entries()
            return
        guard = self.funding_scale(close_time)
        if guard is None:
            self.cancel_entries()
            if not self.funding_unknown:
                self.event("FUNDING_UNKNOWN", price=c)
            self.funding_unknown = True
            return
        self.funding_unknown = False
        want = self.wanted(c, guard)
        bar_count = 0
        # Rung by rung, nearest first (level 1 long, level 1 short, level 2 long, ...): an unwanted or
        # changed order is cancelled when its rung comes up, so the rungs after it still see it resting.
        for key in sorted(set(want) | set(self.orders), key=lambda slot: (slot[1], slot[0])):
            o = self.orders.get(key)
            if key not in want:
                self.orders.pop(key, None)
                continue
            if o is not None:
                w_price, w_qty = want[key]
                if (
                    abs(o.price - w_price) / w_price * 1e4 <= p.order_price_tol_bps + 1e-9
                    and abs(o.qty - w_qty) / w_qty * 100.0 <= p.order_qty_tol_pct + 1e-9
                ):
                    continue  # close enough to the wanted order: it stays as it rests
                del self.orders[key]
            side, level = key
            price, qty = want[key]
            if self.refused_before(side, level, price, qty):
                continue
            reason = self.validate_entry(side, level, price, qty)
            if reason is not None:
                self.remember_refusal(side, level, price, qty, reason)
                self.event("ORDER_REJECTED", reason, side, level, price, qty, self.qty[side])
                self.error(close_time)
                if self.cb_tripped:
                    return
                continue
            # MAX_NUM_ORDERS / MAX_NUM_ALGO_ORDERS: every resting entry and every lot (its TP and stop)
            # holds one order of each kind; an entry beyond the limit is not sent.
            if len(self.orders) + len(self.lots) + 1 > min(p.max_num_orders, p.max_num_algo_orders):
                self.skipped_order_limit += 1
                continue
            in_window = sum(1 for t in self.submissions if close_time - 60_000 < t <= close_time)
            if bar_count >= p.per_bar_orders or in_window >= p.per_minute_orders:
                self.orders_deferred += 1
                continue
            bar_count += 1
            self.submissions.append(close_time)
            self.submitted += 1
            self.orders[key] = Order(side, level, price, qty, new=True)

    # ---------------------------------------------------------------- one bar
    def state(self) -> int:
        if self.liquidated:
            return LIQUIDATED
        if self.halted:
            return HALTED
        if self.cb_tripped or self.day_stopped:
            return COOLDOWN
        if self.reducing or self.input_missing:
            return REDUCING
        return NORMAL

    def record(self, k: int, c: float) -> None:
        if math.isfinite(c):
            self.last_close = c
        margin_ratio = 0.0
        if self.equity <= 0:
            margin_ratio = math.nan  # unknown once the equity is gone
        elif self.qty[LONG] > 0 or self.qty[SHORT] > 0:
            margin_ratio = (self.maint_at(self.last_close) + self.x_mm) / self.equity
        elif self.x_mm > 0:  # flat here, the rest of the account holds positions
            margin_ratio = self.x_mm / self.equity
        self.out.equity.append(
            {
                "ts": int(self.m.ts[k]),
                "equity": self.equity,
                "wallet_balance": self.wallet(),
                "unrealized_pnl": self.unrealized,
                "long_qty": self.qty[LONG],
                "short_qty": self.qty[SHORT],
                "regime": self.regime.regime,
                "state": self.state(),
                "margin_ratio": margin_ratio,
            }
        )

    def bar(self, k: int) -> None:
        m = self.m
        self.k = k
        self.ts = int(m.ts[k])
        close_time = self.ts + int(m.bar_ms)
        o, h, lo, c = float(m.open[k]), float(m.high[k]), float(m.low[k]), float(m.close[k])
        self.input_missing = not _finite(o, h, lo, c)
        if self.input_missing:
            self.cancel_entries()
            self.event("INPUT_MISSING")
            if self.account is not None and self.account.follows_halt(self):
                self.account.halt_follower(self, k)
            self.decide(c, close_time)  # entries blocked; equity and margin ratio carried
            self.record(k, c)
            return
        if k > 0 and m.ts[k] - m.ts[k - 1] > m.bar_ms:
            self.cancel_entries()
            self.event("DATA_GAP", value=float(m.ts[k] - m.ts[k - 1]))
        self.apply_funding(k)
        if math.isnan(self.centre):
            self.centre = c
        # In a basket whose drawdown halt came earlier in this step: no path, flattened at the close.
        follower = self.account is not None and self.account.follows_halt(self)
        if self.account is not None and not follower:
            self.account.view_for_path(self, k)  # the rest of the account at its adverse extremes
        if not follower and self.path(k, o, h, lo, c):
            self.mark(c)  # flat now: equity = wallet; the bar's close counts in the drawdown
            self.record(k, c)
            return
        if self.account is not None:
            self.account.view_for_close(self, k)  # the rest of the account at its latest closes
        if follower:
            self.account.halt_follower(self, k)
        self.regime.update(h, lo, c)
        self.mark(c)
        self.gates(c, close_time)
        self.decide(c, close_time)
        self.record(k, c)


def simulate(
    market: Any, strategy: Any, venue: Any, stop_at: int | None = None, detail: Any = None
) -> RefOutput:
    """Run the reference over bars ``[0, stop_at)`` (all bars when None), as ``engine.run.run_single``.

    ``detail``: a finer market whose bars the path walks (DESIGN.md "Detail bars").
    """
    p = params_from(strategy, venue, market.symbol)
    sim = Sim(market, p, strategy.regime, detail)
    n = len(market.ts) if stop_at is None else min(stop_at, len(market.ts))
    for k in range(n):
        sim.bar(k)
        if sim.liquidated:
            break
    sim.out.summary = {
        "final_equity": sim.equity,
        "wallet_balance": sim.wallet(),
        "realized_pnl": sim.realized,
        "fees": sim.fees,
        "funding": sim.funding,
        "n_fills": len(sim.out.fills),
        "n_errors": sim.n_errors,
        "skipped_precision": sim.skipped_precision,
        "skipped_order_limit": sim.skipped_order_limit,
        "orders_deferred": sim.orders_deferred,
        "orders_submitted": sim.submitted + sim.retries_submitted,
        "max_drawdown_bar_close_pct": sim.max_dd,
        "final_state": sim.state(),
        "bars": n,
    }
    return sim.out


# ----------------------------------------------------------------------------------------------------
# Baskets: several symbols against one cross-margin wallet (DESIGN.md "Baskets")
# ----------------------------------------------------------------------------------------------------


@dataclass
class AlignedMarket:
    """One symbol's bars on the basket's time axis (the union of every symbol's timestamps): NaN OHLC at
    a time the symbol has no bar (before its first, after its last, in its gaps); its own funding."""

    symbol: str
    timeframe: str
    bar_ms: int
    ts: list[int]
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    funding_ts: Any
    funding_rate: Any
    funding_mark: Any


def align(markets: dict[str, Any]) -> dict[str, AlignedMarket]:
    """Every market on the union of their timestamps (one timeframe for all)."""
    frames = {m.timeframe for m in markets.values()}
    assert len(frames) == 1, f"a basket has one timeframe, got {sorted(frames)}"
    union = sorted({int(t) for m in markets.values() for t in m.ts})
    out = {}
    for symbol, m in markets.items():
        at = {int(t): k for k, t in enumerate(m.ts)}
        cols = []
        for col in (m.open, m.high, m.low, m.close):
            cols.append([float(col[at[t]]) if t in at else math.nan for t in union])
        out[symbol] = AlignedMarket(
            symbol, m.timeframe, int(m.bar_ms), union, *cols, m.funding_ts, m.funding_rate, m.funding_mark
        )
    return out


class Account:
    """The one wallet of a basket and what each symbol sees of the rest of it (DESIGN.md "Baskets").

    The wallet is the first symbol's initial balance plus every symbol's realized PnL, minus their fees,
    plus their funding. Before a symbol's intrabar path, the rest of the account is valued at each other
    symbol's adverse extreme of the bar (of high and low, where its unrealized PnL minus maintenance
    margin is lowest; its last close when it has no bar); before its close phase at each other symbol's
    latest close. The equity peak, the breaker's state, its error window and the order pacing window
    are the account's (``book``, ``errors``, ``submissions``).
    """

    def __init__(self, sims: list[Sim], initial: float) -> None:
        self.sims = sims
        self.initial = initial
        self.emptied = False
        self.liquidated = False
        self.halt_by: int | None = None  # basket index of the symbol whose close saw the drawdown
        self.halt_dd = 0.0
        self.book = Book(peak=initial)
        self.errors: list[int] = []
        self.submissions: list[int] = []
        self.points: dict[int, float] = {}  # the adverse extreme used for each other symbol (by id)
        self.equity_rows: list[dict] = []
        self.max_dd = 0.0  # the account's bar-close drawdown
        for sim in sims:
            sim.account = self
            sim.book = self.book
            sim.errors = self.errors  # one breaker window for the account
            sim.submissions = self.submissions  # one order-pacing window (orders per minute)

    def wallet(self) -> float:
        if self.emptied:
            return 0.0
        realized = sum(sim.realized for sim in self.sims)
        fees = sum(sim.fees for sim in self.sims)
        funding = sum(sim.funding for sim in self.sims)
        return self.initial + realized - fees + funding

    @staticmethod
    def holds(sim: Sim) -> bool:
        return sim.qty[LONG] > 0.0 or sim.qty[SHORT] > 0.0

    def value(self, sim: Sim, price: float) -> tuple[float, float, float]:
        """(unrealized PnL, maintenance margin, gross notional) of ``sim`` at ``price``; the notional
        counts its positions at ``price`` and its resting entries at their own prices."""
        resting = sum(o.qty * o.price for _, o in sorted(sim.orders.items()))
        if not self.holds(sim):
            return 0.0, 0.0, resting
        L, S = sim.qty
        return sim.unreal_at(price), sim.maint_at(price), (L + S) * price + resting

    def adverse_point(self, sim: Sim, k: int) -> float:
        """Of the bar's high and low, where ``sim``'s unrealized PnL - maintenance margin is lowest
        (equity - MM is concave in price: the minimum over the bar's range is at an end)."""
        h, lo = float(sim.m.high[k]), float(sim.m.low[k])
        if not self.holds(sim):
            # Flat: only its resting entries count, at their own prices; the point (where a liquidation
            # of the account records its event) is the low, its last close without a bar.
            point = lo if math.isfinite(lo) else sim.last_close
            return point if math.isfinite(point) else 0.0  # 0: it never had a bar
        if not _finite(h, lo):
            return sim.last_close  # no bar at k: its last close
        return h if sim.unreal_at(h) - sim.maint_at(h) < sim.unreal_at(lo) - sim.maint_at(lo) else lo

    @staticmethod
    def latest_close(sim: Sim, k: int) -> float:
        c = float(sim.m.close[k])
        return c if math.isfinite(c) else sim.last_close

    def _view(self, sim: Sim, points: dict[int, float]) -> None:
        u = mm = notional = 0.0
        for other in self.sims:
            if other is sim:
                continue
            du, dmm, dn = self.value(other, points[id(other)])
            u += du
            mm += dmm
            notional += dn
        sim.x_unreal, sim.x_mm, sim.x_notional = u, mm, notional

    def view_for_path(self, sim: Sim, k: int) -> None:
        """The rest of the account at each other symbol's adverse extreme of bar ``k``."""
        self.points = {id(o): self.adverse_point(o, k) for o in self.sims if o is not sim}
        self._view(sim, self.points)

    def view_for_close(self, sim: Sim, k: int) -> None:
        """The rest of the account at each other symbol's latest close."""
        self._view(sim, {id(o): self.latest_close(o, k) for o in self.sims if o is not sim})

    # ------------------------------------------------------------ liquidation and the drawdown halt
    def liquidate(self, crossing: Sim, px: float) -> None:
        """``crossing``'s path took the account to its maintenance margin: it closes at ``px``, then
        every other symbol, in basket order, at the adverse extreme its view used; the run stops."""
        level = self.sims.index(crossing) + 1
        close_out(crossing, px, level)
        points = dict(self.points)
        points[id(crossing)] = px
        for other in self.sims:
            if other is crossing:
                continue
            other.ts = int(other.m.ts[crossing.k])
            self._view(other, points)  # the symbols closed before it are flat now
            close_out(other, points[id(other)], level)
        for sim in self.sims:
            sim.x_unreal = sim.x_mm = sim.x_notional = 0.0
        self.liquidated = True

    def drawdown_halt(self, trigger: Sim, c: float, dd: float) -> None:
        """The account's drawdown reached ``trigger``'s limit at its close: it flattens and halts now;
        the others follow in the same step (``follow_halt``, ``halting``)."""
        self.halt_by = self.sims.index(trigger)
        self.halt_dd = dd
        trigger.halt(c, dd, self.halt_by + 1)

    def flatten_price(self, sim: Sim, k: int) -> float:
        """Where the account's drawdown halt flattens ``sim``: its latest close; 0 (recorded in the event,
        nothing to flatten) when it never had a bar."""
        c = self.latest_close(sim, k)
        return c if math.isfinite(c) else 0.0

    def follows_halt(self, sim: Sim) -> bool:
        """The account halted earlier in this step and ``sim`` has not stepped yet: after its open steps
        (missing input, gap, funding) it skips its path, is flattened at its close (``halt_follower``),
        then closes its bar as usual (gates, decision, record)."""
        return self.halt_by is not None and not sim.halted

    def halt_follower(self, sim: Sim, k: int) -> None:
        """Flatten and halt ``sim`` at its close (its last close without a bar) with the rest of the
        account at its latest closes."""
        self.view_for_close(sim, k)
        sim.halt(self.flatten_price(sim, k), self.halt_dd, self.halt_by + 1)

    def follow_halt(self, k: int) -> None:
        """After the symbol that saw the drawdown stepped: the symbols that stepped before it flatten at
        their close and record their row of ``k`` again."""
        assert self.halt_by is not None
        for sim in self.sims[: self.halt_by]:
            if sim.halted:
                continue
            self.view_for_close(sim, k)
            sim.halt(self.flatten_price(sim, k), self.halt_dd, self.halt_by + 1)
            sim.out.equity.pop()
            sim.record(k, float(sim.m.close[k]))

    # ------------------------------------------------------------ records
    def record(self, k: int) -> None:
        """The account's row at time ``k``, every symbol at its latest close."""
        u = mm = 0.0
        for sim in self.sims:
            du, dmm, _ = self.value(sim, self.latest_close(sim, k))
            u += du
            mm += dmm
        wallet = self.wallet()
        equity = wallet + u
        self.book.peak = max(self.book.peak, equity)
        if self.book.peak > 0:  # from the account's peak: the highest of its rows
            self.max_dd = max(self.max_dd, (self.book.peak - equity) / self.book.peak * 100.0)
        if self.liquidated:
            state = LIQUIDATED
        elif any(sim.halted for sim in self.sims):
            state = HALTED
        elif self.book.cb_tripped:
            state = COOLDOWN
        elif any(sim.reducing for sim in self.sims):
            state = REDUCING
        else:
            state = NORMAL
        self.equity_rows.append(
            {
                "ts": int(self.sims[0].m.ts[k]),
                "equity": equity,
                "wallet_balance": wallet,
                "unrealized_pnl": u,
                "maint_margin": mm,
                "margin_ratio": mm / equity if equity > 0 else math.nan,
                "state": state,
            }
        )


@dataclass
class RefBasketOutput:
    """Each symbol's ledgers and summary, the account's rows and summary."""

    symbols: tuple[str, ...]
    per_symbol: dict[str, RefOutput]
    account_equity: list[dict]
    summary: dict


def _summary(sim: Sim, n: int) -> dict:
    return {
        "final_equity": sim.equity,
        "wallet_balance": sim.wallet(),
        "realized_pnl": sim.realized,
        "fees": sim.fees,
        "funding": sim.funding,
        "n_fills": len(sim.out.fills),
        "n_errors": sim.n_errors,
        "skipped_precision": sim.skipped_precision,
        "skipped_order_limit": sim.skipped_order_limit,
        "orders_deferred": sim.orders_deferred,
        "orders_submitted": sim.submitted + sim.retries_submitted,
        "max_drawdown_bar_close_pct": sim.max_dd,
        "final_state": sim.state(),
        "bars": n,
    }


def run_reference_basket(
    markets: dict[str, Any], strategies: dict[str, Any], venue: Any, detail: dict[str, Any] | None = None
) -> RefBasketOutput:
    """Run a basket (ccxt symbol -> market / strategy, in basket order) in one wallet, as
    ``engine.basket.run_basket``; ``detail`` maps a symbol to the finer market its path walks."""
    symbols = tuple(markets)
    aligned = align(dict(markets))
    sims = []
    for symbol in symbols:
        p = params_from(strategies[symbol], venue, symbol)
        fine = None if detail is None else detail.get(symbol)
        sims.append(Sim(aligned[symbol], p, strategies[symbol].regime, fine))
    account = Account(sims, sims[0].p.initial)
    n = len(aligned[symbols[0]].ts)
    bars = 0
    for k in range(n):
        bars = k + 1
        halted_before = account.halt_by is not None
        for i, sim in enumerate(sims):
            sim.bar(k)
            if account.liquidated:
                # Every symbol is flat: marked, and its row of k recorded (again, if it had stepped).
                for j, other in enumerate(sims):
                    if other is sim:
                        continue
                    other.mark_flat()
                    if j < i:
                        other.out.equity.pop()
                    other.record(k, float(other.m.close[k]))
                break
            if not halted_before and account.halt_by == i:
                account.follow_halt(k)
        account.record(k)
        if account.liquidated:
            break
    per_symbol = {}
    for symbol, sim in zip(symbols, sims, strict=True):
        sim.out.summary = _summary(sim, bars)
        per_symbol[symbol] = sim.out
    rows = account.equity_rows
    final = rows[-1]["equity"] if rows else account.initial
    max_dd = account.max_dd
    summary = {
        "final_equity": final,
        "wallet_balance": account.wallet(),
        "total_return_pct": (final / account.initial - 1.0) * 100.0,
        "realized_pnl": sum(s.realized for s in sims),
        "fees": sum(s.fees for s in sims),
        "funding": sum(s.funding for s in sims),
        "n_fills": sum(len(s.out.fills) for s in sims),
        "max_drawdown_bar_close_pct": max_dd,
        "final_state": rows[-1]["state"] if rows else NORMAL,
        "bars": bars,
    }
    return RefBasketOutput(symbols, per_symbol, rows, summary)
