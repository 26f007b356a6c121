"""Risk gates: error recording and the circuit breaker, the drawdown halt, REDUCING, closing a side.

The audited bot implemented its circuit breaker and drawdown check but never called them. Here
``record_error_nb`` is called on every error (post-only rejects, validation refusals) and checks the
breaker at once; ``step_nb`` checks the breaker, the drawdown and the REDUCING conditions on every
bar (cheap ``*_due`` / ``*_breached`` / ``reducing_reason_nb`` tests first, the acting functions only
when they fire). Risk states (highest wins): NORMAL 0, REDUCING 1, COOLDOWN 2, HALTED 3, LIQUIDATED 4;
COOLDOWN is the breaker's cooldown or a gate of the gate table holding entries (engine/gates.py).
"""

from __future__ import annotations

import numpy as np

from gridctl.engine.accounting import apply_fill_nb, book_lot_nb
from gridctl.engine.enums import EventKind, FillKind, Liquidity, Reason, RiskState, Side, hot_kernel, kernel
from gridctl.engine.margin import near_liquidation_nb
from gridctl.engine.params import (
    P_CB_COOLDOWN_S,
    P_CB_WINDOW_S,
    P_EMERGENCY_BUFFER,
    P_ENABLE_CB,
    P_ENABLE_DRAWDOWN,
    P_MARKET_MAX_QTY,
    P_MAX_DRAWDOWN_PCT,
    P_MAX_ERRORS,
    P_MAX_LEVERAGE_USED,
    P_SLIPPAGE_BPS,
)
from gridctl.engine.records import write_event_nb, write_fill_nb
from gridctl.engine.state import (
    S_CB_ACTIVE,
    S_CB_TRIPS,
    S_CB_UNTIL,
    S_DD_PCT,
    S_DIRTY,
    S_EQUITY,
    S_ERR_COUNT,
    S_ERRORS,
    S_FEES,
    S_GATE_HOLD,
    S_HALT_TS,
    S_HALTED,
    S_LIQUIDATED,
    S_LONG_QTY,
    S_MISSING,
    S_PEAK,
    S_REDUCING,
    S_SHORT_QTY,
    S_WALLET,
    S_X_NOTIONAL,
    SL_LOT_FEE,
    SL_LOT_ON,
    SL_LOT_PRICE,
    SL_LOT_QTY,
    SL_ORD_ON,
    cancel_entries_nb,
    refresh_triggers_nb,
)


@kernel
def _errors_in_window_reach_nb(st, errs, now, p):
    """True when at least max_errors_per_minute errors fall in ``(now - window, now]``."""
    m = int(p[P_MAX_ERRORS])
    count = int(st[S_ERR_COUNT])
    if count < m:
        return False
    t_m = errs[(count - m) % errs.shape[0]]  # the m-th most recent error
    return t_m > now - p[P_CB_WINDOW_S] * 1000.0


@kernel
def _trip_nb(st, slots, now, p, ev, cnt, ts):
    st[S_CB_ACTIVE] = 1.0
    st[S_CB_UNTIL] = now + p[P_CB_COOLDOWN_S] * 1000.0
    st[S_CB_TRIPS] += 1.0
    cancel_entries_nb(st, slots)
    write_event_nb(ev, cnt, ts, EventKind.CIRCUIT_BREAKER_TRIP, Reason.NONE, -1, 0, 0.0, 0.0, st[S_CB_UNTIL])


@kernel
def record_error_nb(st, slots, errs, now, p, ev, cnt, ts):
    """Remember an error at time ``now`` (ms) and trip the breaker if the window is full; returns tripped."""
    count = int(st[S_ERR_COUNT])
    errs[count % errs.shape[0]] = now
    st[S_ERR_COUNT] = count + 1
    st[S_ERRORS] += 1.0
    if p[P_ENABLE_CB] == 0.0 or st[S_CB_ACTIVE] != 0.0:
        return False
    if _errors_in_window_reach_nb(st, errs, now, p):
        _trip_nb(st, slots, now, p, ev, cnt, ts)
        return True
    return False


@kernel
def trip_breaker_nb(st, slots, now, p, ev, cnt, ts):
    """Open the breaker at ``now`` (a live driver's repeated protection failure); False when it is
    disabled or already open."""
    if p[P_ENABLE_CB] == 0.0 or st[S_CB_ACTIVE] != 0.0:
        return False
    _trip_nb(st, slots, now, p, ev, cnt, ts)
    return True


@hot_kernel
def circuit_breaker_due_nb(st, p):
    """True when the per-bar breaker check can change anything (tripped, or enough errors on record)."""
    if p[P_ENABLE_CB] == 0.0:
        return False
    return st[S_CB_ACTIVE] != 0.0 or st[S_ERR_COUNT] >= p[P_MAX_ERRORS]


@kernel
def circuit_breaker_bar_nb(st, slots, errs, now, p, ev, cnt, ts):
    """Per-bar breaker check: reset after the cooldown, trip if the error window is (still) full."""
    if p[P_ENABLE_CB] == 0.0:
        return
    if st[S_CB_ACTIVE] != 0.0 and now >= st[S_CB_UNTIL]:
        st[S_CB_ACTIVE] = 0.0
        st[S_DIRTY] = 1.0
        write_event_nb(ev, cnt, ts, EventKind.CIRCUIT_BREAKER_RESET, Reason.NONE, -1, 0, 0.0, 0.0, now)
    if st[S_CB_ACTIVE] == 0.0 and _errors_in_window_reach_nb(st, errs, now, p):
        _trip_nb(st, slots, now, p, ev, cnt, ts)


@kernel
def close_side_nb(st, slots, side, price, kind, liquidity, ts, p, fills, cnt):
    """Close all of ``side`` at ``price`` (a flatten) and drop its lots with their TP/SL."""
    close_side_charged_nb(st, slots, side, price, kind, liquidity, np.nan, ts, p, fills, cnt)


@kernel
def close_side_charged_nb(st, slots, side, price, kind, liquidity, charge, ts, p, fills, cnt):
    """``close_side_nb``; ``charge``, unless NaN, replaces the trading fee (a liquidation's clearance).

    Wide because: the fill's own fields (side, price, kind, liquidity, charge, ts)
    and the five arrays it books into; the liquidation inside the basket passes per-symbol rows that
    no ``Sim`` / ``Records`` group holds whole.
    """
    q = st[S_LONG_QTY] if side == Side.LONG else st[S_SHORT_QTY]
    fee = 0.0
    lot_max = p[P_MARKET_MAX_QTY]
    if q > 0.0 and kind == FillKind.FLATTEN and q > lot_max * (1.0 + 1e-9):
        # MARKET_LOT_SIZE: Binance refuses one market order above maxQty, so the flatten goes out as
        # market orders of at most maxQty each, back to back at the same price: one fill row per order.
        left = q
        while left > lot_max * (1.0 + 1e-9):
            realized, f = apply_fill_nb(st, side, False, price, lot_max, liquidity, p)
            write_fill_nb(fills, cnt, ts, side, kind, 0, price, lot_max, f, liquidity, realized)
            fee += f
            left -= lot_max
        realized, f = apply_fill_nb(st, side, False, price, left, liquidity, p)
        write_fill_nb(fills, cnt, ts, side, kind, 0, price, left, f, liquidity, realized)
        fee += f
    elif q > 0.0:
        realized, fee = apply_fill_nb(st, side, False, price, q, liquidity, p)
        if charge == charge:
            st[S_FEES] += charge - fee
            st[S_WALLET] -= charge - fee
            fee = charge
        write_fill_nb(fills, cnt, ts, side, kind, 0, price, q, fee, liquidity, realized)
    for idx in range(slots.shape[1]):
        if slots[side, idx, SL_LOT_ON] != 0.0 and q > 0.0:
            # Each lot closes at this price with its share (by qty) of the one fill's fee.
            lot_q = slots[side, idx, SL_LOT_QTY]
            entry = slots[side, idx, SL_LOT_PRICE]
            book_lot_nb(st, side, lot_q, entry, slots[side, idx, SL_LOT_FEE], price, fee * lot_q / q)
        slots[side, idx, SL_LOT_ON] = 0.0
    st[S_DIRTY] = 1.0


@hot_kernel
def drawdown_breached_nb(st, p):
    """True when the drawdown gate is on, not yet fired, and equity is max_drawdown_pct below the peak.

    Reads the drawdown ``mark_to_market_nb`` computed at this close (the gates always follow it).
    """
    if p[P_ENABLE_DRAWDOWN] == 0.0 or st[S_HALTED] != 0.0:
        return False
    return st[S_DD_PCT] >= p[P_MAX_DRAWDOWN_PCT]


@kernel
def drawdown_halt_nb(st, slots, c, p, fills, ev, cnt, ts):
    """Cancel all orders, flatten both sides at ``c`` (taker, slippage) and halt for the rest of the run."""
    peak = st[S_PEAK]
    dd = (peak - st[S_EQUITY]) / peak * 100.0
    write_event_nb(ev, cnt, ts, EventKind.DRAWDOWN_HALT, Reason.NONE, -1, 0, c, 0.0, dd)
    for side in range(2):
        for idx in range(slots.shape[1]):
            slots[side, idx, SL_ORD_ON] = 0.0
    slip = p[P_SLIPPAGE_BPS] * 1e-4
    close_side_nb(
        st, slots, Side.LONG, c * (1.0 - slip), FillKind.FLATTEN, Liquidity.TAKER, ts, p, fills, cnt
    )
    close_side_nb(
        st, slots, Side.SHORT, c * (1.0 + slip), FillKind.FLATTEN, Liquidity.TAKER, ts, p, fills, cnt
    )
    refresh_triggers_nb(st, slots)
    st[S_HALTED] = 1.0
    st[S_HALT_TS] = ts


@hot_kernel
def reducing_reason_nb(st, c, p, br):
    """Why new entries must stop (Reason.LEVERAGE / LIQUIDATION_BUFFER), or Reason.NONE.

    Leverage is the account's: this symbol's gross position notional plus the other symbols' gross
    notional (``S_X_NOTIONAL``, 0 in a single run) over the account equity.
    """
    lq = st[S_LONG_QTY]
    sq = st[S_SHORT_QTY]
    if lq <= 0.0 and sq <= 0.0:
        return Reason.NONE
    eq = st[S_EQUITY]
    if eq <= 0.0 or ((lq + sq) * c + st[S_X_NOTIONAL]) / eq > p[P_MAX_LEVERAGE_USED]:
        return Reason.LEVERAGE
    # A finite LP is on the losing side of c: on the other side the account would already be below
    # maintenance margin and liquidated at this path point.
    if near_liquidation_nb(st, br, c, p[P_EMERGENCY_BUFFER]):
        return Reason.LIQUIDATION_BUFFER
    return Reason.NONE


@kernel
def reducing_switch_nb(st, slots, reason, c, ev, cnt, ts):
    """Enter REDUCING (cancels resting entries) or leave it, with an event; ``reason`` decides which."""
    if reason != Reason.NONE:
        st[S_REDUCING] = 1.0
        cancel_entries_nb(st, slots)
        write_event_nb(ev, cnt, ts, EventKind.REDUCING_ON, reason, -1, 0, c, 0.0, 0.0)
    else:
        st[S_REDUCING] = 0.0
        st[S_DIRTY] = 1.0
        write_event_nb(ev, cnt, ts, EventKind.REDUCING_OFF, Reason.NONE, -1, 0, c, 0.0, 0.0)


@hot_kernel
def risk_state_nb(st):
    """Current RiskState (highest wins)."""
    if st[S_LIQUIDATED] != 0.0:
        return RiskState.LIQUIDATED
    if st[S_HALTED] != 0.0:
        return RiskState.HALTED
    if st[S_CB_ACTIVE] != 0.0 or st[S_GATE_HOLD] != 0.0:  # the breaker, or a table gate holding
        return RiskState.COOLDOWN
    if st[S_REDUCING] != 0.0 or st[S_MISSING] != 0.0:
        return RiskState.REDUCING
    return RiskState.NORMAL


@hot_kernel
def entries_allowed_nb(st):
    """New entries only in NORMAL state."""
    return risk_state_nb(st) == RiskState.NORMAL
