"""Mutable kernel state: a float64 vector with named slots, the per-rung slot array and two ring buffers.

Everything a run remembers between bars lives here as plain arrays, so the same state can be stepped
by the backtest loop, by the batch loop (one row per parameter set) or by the live bridge bar by bar.

* ``state``: float64[N_STATE] - account, ladder centre, risk flags, pointers, online summary accumulators.
* ``slots``: float64[2, max_levels, N_SLOT] - per side and rung: the resting entry order, the open lot
  with its TP/SL prices, the rung's cached price/qty and a memo of the last ``REF_MEMO`` refused
  (price, qty, side position) submissions, which are never sent again.
* ``err_ring``: float64[cap] - times of the last errors (circuit breaker window).
* ``ord_ring``: float64[cap] - times of the last entry submissions (orders-per-minute window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.enums import kernel
from engine.params import (
    P_INITIAL_BALANCE,
    P_MAX_ERRORS,
    P_MAX_LEVELS,
    P_ORDERS_PER_MINUTE,
    P_THROTTLE,
)

# --- account
S_WALLET = 0
S_REALIZED = 1
S_FEES = 2
S_FUNDING_NET = 3
S_FUNDING_PAID = 4  # sum of payments made (positive number)
S_FUNDING_RECV = 5
S_LONG_QTY = 6
S_LONG_AVG = 7
S_SHORT_QTY = 8
S_SHORT_AVG = 9
S_EQUITY = 10
S_UNREAL = 11
S_PEAK = 12
S_MAX_DD_PCT = 13
S_MARGIN_RATIO = 14
# --- ladder / regime / throttle
S_CENTER = 15  # NaN until the first valid close
S_REGIME = 16
S_THROTTLE = 17
# --- risk
S_HALTED = 18
S_LIQUIDATED = 19
S_CB_UNTIL = 20  # ms; entries blocked while close_time < S_CB_UNTIL
S_CB_ACTIVE = 21
S_REDUCING = 22
S_MISSING = 23  # 1 on a bar with missing input
S_STATE = 24  # RiskState of the last bar
# --- funding
S_FUND_IDX = 25  # next settlement to pay
S_GUARD_IDX = 26  # first settlement after the last close_time
S_RATE_KNOWN = 27
S_GUARD_LONG = 28
S_GUARD_SHORT = 29
# --- decision bookkeeping
S_DIRTY = 30  # something that shapes the ladder changed: the next decision re-plans every rung
S_PENDING = 31  # the last decision deferred a wanted rung (rate limits): re-plan at the next close
S_ALLOWED = 32  # entries were allowed at the last decision
S_N_RESTING = 33
S_DOWN_MAX = 34  # highest trigger among orders hit on a down move (-inf: none)
S_UP_MIN = 35  # lowest trigger among orders hit on an up move (+inf: none)
S_ERR_COUNT = 36
S_ORD_COUNT = 37
S_BAR = 38  # index of the last bar stepped (-1 before the first)
# --- online summary accumulators
S_BARS = 39
S_BARS_EXPOSURE = 40
S_BARS_HALTED = 41
S_BARS_COOLDOWN = 42
S_BARS_REDUCING = 43
S_N_MAKER = 44
S_N_TAKER = 45
S_N_ENTRIES = 46
S_N_EXITS = 47
S_N_WINS = 48
S_N_LOSSES = 49
S_GROSS_PROFIT = 50
S_GROSS_LOSS = 51
S_TRADED_NOTIONAL = 52
S_REJ_BASE = 53  # S_REJ_BASE + Reason: validation rejections by reason (SIZE_* codes)
S_POST_ONLY_REJECTS = 66
S_RETRY_LIMITS = 67
S_ORDERS_SUBMITTED = 68
S_ORDERS_DEFERRED = 69
S_SKIPPED_PRECISION = 70
S_CB_TRIPS = 71
S_RECENTERS = 72
S_ERRORS = 73
S_N_FUNDING = 74
S_LIQ_TS = 75  # NaN unless liquidated
S_HALT_TS = 76  # NaN unless halted
S_DAY = 77  # UTC day number of the current day (NaN before the first bar)
S_DAY_EQ = 78  # equity at the last bar close of the current day
S_DAY_PREV_EQ = 79  # close equity of the previous day (initial balance before day 1)
S_DAY_N = 80
S_DAY_SUM = 81
S_DAY_SUMSQ = 82
S_DAY_DOWNSQ = 83
S_FIRST_TS = 84
S_LAST_TS = 85
S_SKIP_NOW = 86  # rungs the last decision skipped for precision (counted again on every quiet bar)
S_PEND_UP = 87  # a close above this brings a free long rung back to the right side (re-plan)
S_PEND_DOWN = 88  # a close below this brings a free short rung back to the right side
S_HOLD_DOWN = 89  # a close at or below this puts a free long rung on the wrong side (re-plan)
S_HOLD_UP = 90  # a close at or above this puts a free short rung on the wrong side (re-plan)
S_DD_PCT = 91  # drawdown from the peak at the last mark, in percent
# --- funding-guard cache: the guard's answer holds for every close time before S_FG_UNTIL
S_FG_UNTIL = 92
S_FG_KNOWN = 93
S_FG_LONG = 94
S_FG_SHORT = 95
# --- margin cache (engine/margin.py): for the account (wallet, qty, avg) below, both sides' brackets
# hold for prices in [S_MC_LO, S_MC_HI], and the liquidation-buffer test is certainly negative for
# closes in (S_MC_SAFE_LO, S_MC_SAFE_HI)
S_MC_WALLET = 96
S_MC_LONG_QTY = 97
S_MC_LONG_AVG = 98
S_MC_SHORT_QTY = 99
S_MC_SHORT_AVG = 100
S_MC_LO = 101
S_MC_HI = 102
S_MC_MMR_LONG = 103
S_MC_CUM_LONG = 104
S_MC_MMR_SHORT = 105
S_MC_CUM_SHORT = 106
S_MC_LP = 107
S_MC_SAFE_LO = 108
S_MC_SAFE_HI = 109
S_MEMO_EQ = 110  # the last decision skipped a remembered refusal that stops holding at this equity
N_STATE = 111

# --- slot fields
SL_ORD_ON = 0
SL_ORD_PRICE = 1
SL_ORD_QTY = 2
SL_ORD_BAR = 3  # bar index of the decision that submitted it (new at the next bar's open)
SL_LOT_ON = 4
SL_LOT_QTY = 5
SL_LOT_PRICE = 6
SL_TP = 7  # NaN when the lot has no active TP
SL_SL = 8
SL_RUNG_PRICE = 9  # cached for the current centre
SL_RUNG_QTY = 10  # base_qty * qty_scale**(i-1)
SL_REF_COUNT = 11  # refusals remembered so far (the memo below is a ring of REF_MEMO entries)
SL_REF_BASE = 12  # per refusal: price, qty, side exposure Q, opposite exposure, equity that passes
REF_MEMO = 8
REF_FIELDS = 5
N_SLOT = SL_REF_BASE + REF_FIELDS * REF_MEMO


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
    from engine.throttle import set_throttle  # throttle imports this module's slot names

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
