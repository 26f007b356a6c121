"""Mutable kernel state: a float64 vector with named slots, the per-rung slot array and two ring buffers.

Everything a run remembers between bars lives here as plain arrays, so the same state can be stepped
by the backtest loop, by the batch loop (one row per parameter set) or by the live bridge bar by bar.

* ``state``: float64[N_STATE] - account, ladder centre, risk flags, pointers, online summary accumulators.
* ``slots``: float64[2, max_levels, N_SLOT] - per side and rung: the resting entry order, the open lot
  with its TP/SL prices, the rung's cached price/qty and a memo of the last ``REF_MEMO`` refusals
  with what each depended on (not sent again while that holds).

Both vectors' slots are declared once in a ``SlotTable`` (``STATE``, ``SLOT``: name, size, meaning);
the ``S_*`` / ``SL_*`` offsets are what ``add`` returns, so slots cannot overlap.
* ``err_ring``: float64[cap] - times of the last errors (circuit breaker window).
* ``ord_ring``: float64[cap] - times of the last entry submissions (orders-per-minute window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.configs.gates import declare_gate_state
from gridctl.engine.enums import Reason, hot_kernel, kernel
from gridctl.engine.layout import SlotTable
from gridctl.engine.params import (
    P_INITIAL_BALANCE,
    P_MAX_ERRORS,
    P_MAX_LEVELS,
    P_ORDERS_PER_MINUTE,
    P_THROTTLE,
)

#: The state vector's slots (name, size, meaning), in order; the offsets below are derived from it.
STATE = SlotTable("state")
# --- account
S_WALLET = STATE.add("S_WALLET", "wallet balance: initial + realized - fees + funding")
S_REALIZED = STATE.add("S_REALIZED", "realized PnL")
S_FEES = STATE.add("S_FEES", "fees paid")
S_FUNDING_NET = STATE.add("S_FUNDING_NET", "net funding cash flow")
S_FUNDING_PAID = STATE.add("S_FUNDING_PAID", "sum of funding payments made (positive number)")
S_FUNDING_RECV = STATE.add("S_FUNDING_RECV", "sum of funding received")
S_LONG_QTY = STATE.add("S_LONG_QTY", "long position qty")
S_LONG_AVG = STATE.add("S_LONG_AVG", "long average entry price")
S_SHORT_QTY = STATE.add("S_SHORT_QTY", "short position qty")
S_SHORT_AVG = STATE.add("S_SHORT_AVG", "short average entry price")
S_EQUITY = STATE.add("S_EQUITY", "equity at the last mark")
S_UNREAL = STATE.add("S_UNREAL", "unrealized PnL at the last mark")
S_PEAK = STATE.add("S_PEAK", "peak bar-close equity")
S_MAX_DD_PCT = STATE.add("S_MAX_DD_PCT", "max drawdown of bar-close equity, percent")
S_MAX_DD_INTRABAR_PCT = STATE.add(
    "S_MAX_DD_INTRABAR_PCT", "max drawdown to the bars' adverse extremes (positions at the close), percent"
)
S_MARGIN_RATIO = STATE.add(
    "S_MARGIN_RATIO", "maintenance margin / equity at the last mark (NaN when equity <= 0)"
)
# --- ladder / regime / throttle
S_CENTER = STATE.add("S_CENTER", "ladder centre (NaN until the first valid close)")
S_REGIME = STATE.add("S_REGIME", "Regime code of the last bar")
S_THROTTLE = STATE.add("S_THROTTLE", "operator throttle 0..1")
# --- risk
S_HALTED = STATE.add("S_HALTED", "1 once the drawdown halt fired")
S_LIQUIDATED = STATE.add("S_LIQUIDATED", "1 once liquidated")
S_CB_UNTIL = STATE.add("S_CB_UNTIL", "ms; entries blocked while close_time < S_CB_UNTIL")
S_CB_ACTIVE = STATE.add("S_CB_ACTIVE", "1 while the circuit breaker is tripped")
S_REDUCING = STATE.add("S_REDUCING", "1 while REDUCING (exits only)")
S_MISSING = STATE.add("S_MISSING", "1 on a bar with missing input")
S_STATE = STATE.add("S_STATE", "RiskState of the last bar")
S_GATE_HOLD = STATE.add("S_GATE_HOLD", "bit mask of the table gates holding entries (engine/gates.py)")
globals().update(declare_gate_state(STATE))  # the words each gate keeps (configs/gates.py Gate.state)
# --- funding
S_FUND_IDX = STATE.add("S_FUND_IDX", "next settlement to pay")
S_GUARD_IDX = STATE.add("S_GUARD_IDX", "first settlement after the last close_time")
S_RATE_KNOWN = STATE.add("S_RATE_KNOWN", "1 while a funding rate is known")
S_GUARD_LONG = STATE.add("S_GUARD_LONG", "funding-guard factor of the long side at the last decision")
S_GUARD_SHORT = STATE.add("S_GUARD_SHORT", "funding-guard factor of the short side at the last decision")
# --- decision bookkeeping
S_DIRTY = STATE.add(
    "S_DIRTY", "something that shapes the ladder changed: the next decision re-plans every rung"
)
S_PENDING = STATE.add(
    "S_PENDING", "the last decision deferred a wanted rung (rate limits): re-plan at the next close"
)
S_ALLOWED = STATE.add("S_ALLOWED", "entries were allowed at the last decision")
S_N_RESTING = STATE.add("S_N_RESTING", "resting entry orders")
S_DOWN_MAX = STATE.add("S_DOWN_MAX", "highest trigger among orders hit on a down move (-inf: none)")
S_UP_MIN = STATE.add("S_UP_MIN", "lowest trigger among orders hit on an up move (+inf: none)")
S_ERR_COUNT = STATE.add("S_ERR_COUNT", "errors recorded so far (err_ring write position)")
S_ORD_COUNT = STATE.add("S_ORD_COUNT", "entry submissions so far (ord_ring write position)")
S_BAR = STATE.add("S_BAR", "index of the last bar stepped (-1 before the first)")
# --- online summary accumulators
S_BARS = STATE.add("S_BARS", "bars stepped")
S_BARS_EXPOSURE = STATE.add("S_BARS_EXPOSURE", "bars closed with a position")
S_BARS_HALTED = STATE.add("S_BARS_HALTED", "bars in HALTED")
S_BARS_COOLDOWN = STATE.add("S_BARS_COOLDOWN", "bars in COOLDOWN")
S_BARS_REDUCING = STATE.add("S_BARS_REDUCING", "bars in REDUCING")
S_N_MAKER = STATE.add("S_N_MAKER", "maker fills")
S_N_TAKER = STATE.add("S_N_TAKER", "taker fills")
S_N_ENTRIES = STATE.add("S_N_ENTRIES", "entry fills")
S_N_EXITS = STATE.add("S_N_EXITS", "exit fills")
S_N_LOTS_CLOSED = STATE.add("S_N_LOTS_CLOSED", "lots closed (by TP, SL, flatten or liquidation)")
S_N_WINS = STATE.add("S_N_WINS", "closed lots with PnL after fees > 0")
S_N_LOSSES = STATE.add("S_N_LOSSES", "closed lots with PnL after fees < 0")
S_GROSS_PROFIT = STATE.add("S_GROSS_PROFIT", "sum of winning closed lots' PnL after fees")
S_GROSS_LOSS = STATE.add("S_GROSS_LOSS", "sum of losing closed lots' PnL after fees (positive)")
S_TRADED_NOTIONAL = STATE.add("S_TRADED_NOTIONAL", "sum of fill notionals")
S_REJ_BASE = STATE.add(
    "S_REJ_BASE", "S_REJ_BASE + Reason: validation rejections by reason code", size=len(Reason)
)
S_POST_ONLY_REJECTS = STATE.add("S_POST_ONLY_REJECTS", "post-only rejections")
S_RETRY_LIMITS = STATE.add("S_RETRY_LIMITS", "RETRY_LIMIT events")
S_ORDERS_SUBMITTED = STATE.add("S_ORDERS_SUBMITTED", "entry orders submitted (retries included)")
S_ORDERS_DEFERRED = STATE.add("S_ORDERS_DEFERRED", "entries deferred by the rate limits")
S_SKIPPED_PRECISION = STATE.add("S_SKIPPED_PRECISION", "rung-skips by the precision guard")
S_CB_TRIPS = STATE.add("S_CB_TRIPS", "circuit-breaker trips")
S_RECENTERS = STATE.add("S_RECENTERS", "re-centres")
S_ERRORS = STATE.add("S_ERRORS", "errors (rejections) counted by the breaker")
S_N_FUNDING = STATE.add("S_N_FUNDING", "funding payments booked")
S_LIQ_TS = STATE.add("S_LIQ_TS", "NaN unless liquidated")
S_HALT_TS = STATE.add("S_HALT_TS", "NaN unless halted")
S_DAY = STATE.add("S_DAY", "UTC day number of the current day (NaN before the first bar)")
S_DAY_EQ = STATE.add("S_DAY_EQ", "equity at the last bar close of the current day")
S_DAY_PREV_EQ = STATE.add("S_DAY_PREV_EQ", "close equity of the previous day (initial balance before day 1)")
S_DAY_N = STATE.add("S_DAY_N", "days booked")
S_DAY_SUM = STATE.add("S_DAY_SUM", "sum of daily returns")
S_DAY_SUMSQ = STATE.add("S_DAY_SUMSQ", "sum of squared daily returns")
S_DAY_PEAK = STATE.add("S_DAY_PEAK", "peak daily-close equity (initial balance before day 1)")
S_MAX_DD_DAILY_PCT = STATE.add("S_MAX_DD_DAILY_PCT", "max drawdown of daily-close equity, percent")
S_DAY_DOWNSQ = STATE.add("S_DAY_DOWNSQ", "sum of squared negative daily returns")
S_FIRST_TS = STATE.add("S_FIRST_TS", "ts of the first bar")
S_LAST_TS = STATE.add("S_LAST_TS", "ts of the last bar stepped")
S_SKIP_NOW = STATE.add(
    "S_SKIP_NOW", "rungs the last decision skipped for precision (counted again on every quiet bar)"
)
S_PEND_UP = STATE.add(
    "S_PEND_UP", "a close above this brings a free long rung back to the right side (re-plan)"
)
S_PEND_DOWN = STATE.add("S_PEND_DOWN", "a close below this brings a free short rung back to the right side")
S_HOLD_DOWN = STATE.add(
    "S_HOLD_DOWN", "a close at or below this puts a free long rung on the wrong side (re-plan)"
)
S_HOLD_UP = STATE.add(
    "S_HOLD_UP", "a close at or above this puts a free short rung on the wrong side (re-plan)"
)
S_DD_PCT = STATE.add("S_DD_PCT", "drawdown from the peak at the last mark, in percent")
# --- funding-guard cache: the guard's answer holds for every close time before S_FG_UNTIL
S_FG_UNTIL = STATE.add(
    "S_FG_UNTIL", "funding-guard cache: the cached answer holds for close times before this"
)
S_FG_KNOWN = STATE.add("S_FG_KNOWN", "funding-guard cache: rate known")
S_FG_LONG = STATE.add("S_FG_LONG", "funding-guard cache: long factor")
S_FG_SHORT = STATE.add("S_FG_SHORT", "funding-guard cache: short factor")
# --- margin cache (engine/margin.py): for the account (margin wallet, qty, avg) below, both sides' brackets
S_MC_WALLET = STATE.add("S_MC_WALLET", "margin cache: margin wallet (margin_wallet_nb) it was computed for")
S_MC_LONG_QTY = STATE.add("S_MC_LONG_QTY", "margin cache: long qty")
S_MC_LONG_AVG = STATE.add("S_MC_LONG_AVG", "margin cache: long avg")
S_MC_SHORT_QTY = STATE.add("S_MC_SHORT_QTY", "margin cache: short qty")
S_MC_SHORT_AVG = STATE.add("S_MC_SHORT_AVG", "margin cache: short avg")
S_MC_LO = STATE.add("S_MC_LO", "margin cache: both brackets hold for prices >= this")
S_MC_HI = STATE.add("S_MC_HI", "margin cache: ... and <= this")
S_MC_MMR_LONG = STATE.add("S_MC_MMR_LONG", "margin cache: long maint. margin ratio")
S_MC_CUM_LONG = STATE.add("S_MC_CUM_LONG", "margin cache: long cum")
S_MC_MMR_SHORT = STATE.add("S_MC_MMR_SHORT", "margin cache: short maint. margin ratio")
S_MC_CUM_SHORT = STATE.add("S_MC_CUM_SHORT", "margin cache: short cum")
S_MC_LP = STATE.add("S_MC_LP", "margin cache: liquidation price")
S_MC_SAFE_LO = STATE.add(
    "S_MC_SAFE_LO", "margin cache: the liquidation-buffer test is negative for closes above this"
)
S_MC_SAFE_HI = STATE.add("S_MC_SAFE_HI", "margin cache: ... and below this")
S_MEMO_EQ = STATE.add(
    "S_MEMO_EQ", "the last decision skipped a remembered refusal that stops holding at this equity"
)
S_SAME_BAR_N = STATE.add("S_SAME_BAR_N", "lots whose entry and TP/SL filled at one bar's ts (detail bar's)")
S_SAME_BAR_PROFIT = STATE.add(
    "S_SAME_BAR_PROFIT", "sum of those lots' PnL after fees where positive (their share of S_GROSS_PROFIT)"
)
S_SKIPPED_ORDER_LIMIT = STATE.add(
    "S_SKIPPED_ORDER_LIMIT", "rung-skips: the symbol's open-order / algo-order limit was reached"
)
S_SKIP_LIMIT_NOW = STATE.add(
    "S_SKIP_LIMIT_NOW", "rungs the last decision skipped for the order limit (counted again every quiet bar)"
)
# --- the rest of the account (baskets, engine/basket.py): 0 in a single-symbol run
S_X_UNREAL = STATE.add("S_X_UNREAL", "the other symbols' unrealized PnL (0 in a single run)")
S_X_MM = STATE.add("S_X_MM", "the other symbols' maintenance margin (0 in a single run)")
S_X_NOTIONAL = STATE.add(
    "S_X_NOTIONAL", "the other symbols' gross notional: positions plus resting entries (0 in a single run)"
)
S_MEMO_XN = STATE.add(
    "S_MEMO_XN", "S_X_NOTIONAL the last decision's remembered refusals were checked against (NaN: none)"
)
S_RESTING_NOTIONAL = STATE.add(
    "S_RESTING_NOTIONAL",
    "notional of the resting entries, qty x order price; NaN from the slots' last change"
    " (refresh_triggers_nb) until a basket sums it again (resting_notional_of_nb)",
)
N_STATE = STATE.size

# --- per-rung slot fields (the last axis of ``slots``)
SLOT = SlotTable("slot")
SL_ORD_ON = SLOT.add("SL_ORD_ON", "1 while the rung's entry order rests")
SL_ORD_PRICE = SLOT.add("SL_ORD_PRICE", "entry order price")
SL_ORD_QTY = SLOT.add("SL_ORD_QTY", "entry order qty")
SL_ORD_BAR = SLOT.add(
    "SL_ORD_BAR", "bar index of the decision that submitted it (new at the next bar's open)"
)
SL_LOT_ON = SLOT.add("SL_LOT_ON", "1 while the rung holds a lot")
SL_LOT_QTY = SLOT.add("SL_LOT_QTY", "lot qty")
SL_LOT_PRICE = SLOT.add("SL_LOT_PRICE", "lot entry price")
SL_LOT_FEE = SLOT.add("SL_LOT_FEE", "fee paid on the lot's entry fill")
SL_TP = SLOT.add("SL_TP", "lot TP price (NaN when none)")
SL_SL = SLOT.add("SL_SL", "lot SL price (NaN when none)")
SL_RUNG_PRICE = SLOT.add("SL_RUNG_PRICE", "rung price for the current centre")
SL_RUNG_QTY = SLOT.add("SL_RUNG_QTY", "base_qty * qty_scale**(i-1)")
SL_REF_COUNT = SLOT.add("SL_REF_COUNT", "refusals remembered so far (the memo is a ring of REF_MEMO entries)")
REF_MEMO = 8  # refusals remembered per rung
REF_FIELDS = 5  # numbers per remembered refusal
SL_REF_BASE = SLOT.add(
    "SL_REF_BASE",
    "REF_MEMO x (price, qty, side exposure Q, opposite exposure, equity that passes)",
    size=REF_FIELDS * REF_MEMO,
)
SL_LOT_TS = SLOT.add(
    "SL_LOT_TS", "ts of the lot's entry fill (a TP/SL at the same ts is a same-bar round trip)"
)
N_SLOT = SLOT.size


@dataclass
class KernelState:
    """The mutable arrays of one run (see module docstring)."""

    state: np.ndarray
    slots: np.ndarray
    err_ring: np.ndarray
    ord_ring: np.ndarray


def ring_sizes(vectors: np.ndarray) -> tuple[int, int]:
    """Ring capacities covering every parameter vector in ``vectors`` (shape [n, N_PARAMS] or [N_PARAMS])."""
    v = np.atleast_2d(vectors)
    return int(v[:, P_MAX_ERRORS].max()), int(v[:, P_ORDERS_PER_MINUTE].max())


def init_state_row(state: np.ndarray, slots: np.ndarray, vec: np.ndarray) -> None:
    """Reset one run's state vector and slots to the start of a backtest with parameters ``vec``."""
    state[:] = 0.0
    state[S_WALLET] = vec[P_INITIAL_BALANCE]
    state[S_EQUITY] = vec[P_INITIAL_BALANCE]
    state[S_PEAK] = vec[P_INITIAL_BALANCE]
    state[S_CENTER] = np.nan
    state[S_CB_UNTIL] = -np.inf
    state[S_GUARD_LONG] = 1.0
    state[S_GUARD_SHORT] = 1.0
    state[S_DOWN_MAX] = -np.inf
    state[S_UP_MIN] = np.inf
    state[S_BAR] = -1.0
    state[S_LIQ_TS] = np.nan
    state[S_HALT_TS] = np.nan
    state[S_DAY] = np.nan
    state[S_DAY_PREV_EQ] = vec[P_INITIAL_BALANCE]
    state[S_DAY_PEAK] = vec[P_INITIAL_BALANCE]
    state[S_FIRST_TS] = np.nan
    state[S_LAST_TS] = np.nan
    state[S_ALLOWED] = 1.0
    state[S_RATE_KNOWN] = 1.0
    state[S_PEND_UP] = np.inf
    state[S_PEND_DOWN] = -np.inf
    state[S_HOLD_DOWN] = -np.inf
    state[S_HOLD_UP] = np.inf
    state[S_FG_UNTIL] = -np.inf
    state[S_MEMO_EQ] = np.inf
    state[S_MEMO_XN] = np.nan
    state[S_MC_WALLET] = np.nan  # matches no account: the first use fills the margin cache
    state[S_MC_LO] = np.inf
    state[S_MC_HI] = -np.inf
    state[S_MC_SAFE_LO] = np.inf
    state[S_MC_SAFE_HI] = -np.inf
    slots[:] = np.nan
    slots[:, :, SL_ORD_ON] = 0.0
    slots[:, :, SL_LOT_ON] = 0.0
    slots[:, :, SL_REF_COUNT] = 0.0
    set_throttle(state, float(vec[P_THROTTLE]))
    state[S_DIRTY] = 1.0


def init_state(vec: np.ndarray) -> KernelState:
    """Fresh state for one run with parameter vector ``vec``."""
    n_err, n_ord = ring_sizes(vec)
    state = np.zeros(N_STATE)
    slots = np.zeros((2, int(vec[P_MAX_LEVELS]), N_SLOT))
    init_state_row(state, slots, vec)
    return KernelState(state, slots, np.zeros(max(n_err, 1)), np.zeros(max(n_ord, 1)))


# --- order-book helpers over the slot array (used by decisions, the simulated venue and risk gates)


@kernel
def refresh_triggers_nb(st, slots):
    """Recompute the cached nearest trigger prices: a bar whose range misses both cannot fill anything.

    Down-move triggers: long entries and short TPs (buy limits), long SLs (sell stops).
    Up-move triggers: short entries and long TPs (sell limits), short SLs (buy stops).
    """
    down = -np.inf
    up = np.inf
    n_resting = 0
    for idx in range(slots.shape[1]):
        lo = slots[0, idx]
        sh = slots[1, idx]
        if lo[SL_ORD_ON] != 0.0:
            n_resting += 1
            down = max(down, lo[SL_ORD_PRICE])
        if sh[SL_ORD_ON] != 0.0:
            n_resting += 1
            up = min(up, sh[SL_ORD_PRICE])
        if lo[SL_LOT_ON] != 0.0:
            if lo[SL_TP] == lo[SL_TP]:
                up = min(up, lo[SL_TP])
            if lo[SL_SL] == lo[SL_SL]:
                down = max(down, lo[SL_SL])
        if sh[SL_LOT_ON] != 0.0:
            if sh[SL_TP] == sh[SL_TP]:
                down = max(down, sh[SL_TP])
            if sh[SL_SL] == sh[SL_SL]:
                up = min(up, sh[SL_SL])
    st[S_DOWN_MAX] = down
    st[S_UP_MIN] = up
    st[S_N_RESTING] = n_resting
    # The slots changed: a basket, which reads the resting notional at every bar, sums it again once
    # (resting_notional_of_nb); a single run never reads it and pays only this store.
    st[S_RESTING_NOTIONAL] = np.nan


@hot_kernel
def resting_notional_of_nb(st, slots):
    """The resting entries' notional (``resting_notional_nb``), summed only when the slots changed since
    the last sum (``S_RESTING_NOTIONAL`` NaN, set by ``refresh_triggers_nb``): most bars change none."""
    value = st[S_RESTING_NOTIONAL]
    if value != value:
        value = resting_notional_nb(slots)
        st[S_RESTING_NOTIONAL] = value
    return value


@kernel
def resting_notional_nb(slots):
    """Notional of every resting entry order (qty x order price), both sides, side by side in rung order."""
    total = 0.0
    for side in range(2):
        for idx in range(slots.shape[1]):
            if slots[side, idx, SL_ORD_ON] != 0.0:
                total += slots[side, idx, SL_ORD_QTY] * slots[side, idx, SL_ORD_PRICE]
    return total


@kernel
def cancel_entries_nb(st, slots):
    """Cancel every resting entry order (exits stay); the next decision re-plans the ladder."""
    if st[S_N_RESTING] > 0:
        for side in range(2):
            for idx in range(slots.shape[1]):
                slots[side, idx, SL_ORD_ON] = 0.0
        refresh_triggers_nb(st, slots)
    st[S_DIRTY] = 1.0


@kernel
def resting_qty_nb(slots, side, skip_idx):
    """Total qty of resting entries on ``side`` except rung index ``skip_idx``."""
    total = 0.0
    for idx in range(slots.shape[1]):
        if idx != skip_idx and slots[side, idx, SL_ORD_ON] != 0.0:
            total += slots[side, idx, SL_ORD_QTY]
    return total


@kernel
def opposite_exposure_nb(st, slots, side):
    """Position of the side opposite ``side`` plus all its resting entries (the account margin check)."""
    other = 1 - side
    pos = st[S_SHORT_QTY] if side == 0 else st[S_LONG_QTY]
    return pos + resting_qty_nb(slots, other, -1)


@kernel
def refused_until_nb(slot, price, qty, q, opp, equity):
    """Equity at which a remembered refusal of this (price, qty) stops holding; NaN when none holds.

    A refusal holds while what it depended on is unchanged (DESIGN.md "Order-size validation"): the
    side exposure ``q`` (NaN in the memo when the reason does not depend on it), the opposite
    exposure ``opp`` (likewise) and, for the equity-bound reasons, ``equity`` below the level at
    which the failed check passes (+inf for the others).
    """
    n = min(int(slot[SL_REF_COUNT]), REF_MEMO)
    for j in range(n):
        b = SL_REF_BASE + REF_FIELDS * j
        if slot[b] != price or slot[b + 1] != qty:
            continue
        mq = slot[b + 2]
        mo = slot[b + 3]
        if (mq != mq or mq == q) and (mo != mo or mo == opp) and equity < slot[b + 4]:
            return slot[b + 4]
    return np.nan


@kernel
def remember_refusal_nb(slot, price, qty, q, opp, need):
    """Add a refusal (price, qty, its inputs, passing equity) to the rung's memo (oldest overwritten)."""
    n = int(slot[SL_REF_COUNT])
    b = SL_REF_BASE + REF_FIELDS * (n % REF_MEMO)
    slot[b] = price
    slot[b + 1] = qty
    slot[b + 2] = q
    slot[b + 3] = opp
    slot[b + 4] = need
    slot[SL_REF_COUNT] = n + 1


# --- operator throttle: the one validated path that changes the entry-size multiplier.
# The audited bot's ops API wrote ``strategy._throttle`` directly and nothing read it. Here the kernels
# read the state slot ``S_THROTTLE`` (``throttle_nb``) when sizing every entry, and ``set_throttle`` is
# the only writer: ``init_state_row`` calls it with ``policy.throttle``, and the live ops API later.


def set_throttle(state: np.ndarray, value: float) -> None:
    """Validate ``value`` (a number in 0..1) and store it; the next decision re-sizes every entry."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise GridctlError(f"throttle must be a number between 0 and 1, got {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an int too large for a float (e.g. 400 digits)
        raise GridctlError(
            f"throttle must be between 0 and 1, got an integer of {len(str(value))} digits"
        ) from None
    if not math.isfinite(v) or v < 0.0 or v > 1.0:
        raise GridctlError(f"throttle must be between 0 and 1, got {value!r}")
    state[S_THROTTLE] = v
    state[S_DIRTY] = 1.0


@kernel
def throttle_nb(state):
    """The entry-size multiplier the kernels apply (written only by ``set_throttle``)."""
    return state[S_THROTTLE]
