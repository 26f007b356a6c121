"""Order checks run before every submission: the precision guard and the size / exit validations.

The audited bot had ``_validate_order_size`` with no caller; here ``decide_nb`` (entries, re-centred
entries), the open-phase retries (``fills.py``) and lot exits all call these functions, and a refusal is
an event plus an error for the circuit breaker.

Decisions beyond DESIGN.md: a quantity above the venue's ``max_qty`` is refused as ``SIZE_ORDER``;
``validate_exit`` always runs (reduce-only is structural), ``enable_position_validation`` switches off
``validate_entry`` only.
"""

from __future__ import annotations

from numba import njit

from engine.enums import Reason
from engine.margin import max_notional_at_leverage_nb
from engine.params import (
    P_ENABLE_VALIDATION,
    P_LEVERAGE,
    P_MAX_INVENTORY_QUOTE,
    P_MAX_ORDER_USDT,
    P_MAX_POSITION_PCT,
    P_MAX_POSITION_SIZE,
    P_MAX_QTY,
    P_MIN_NOTIONAL,
    P_MIN_ORDER_USDT,
    P_MIN_QTY,
)

# Relative tolerance for comparisons of sums of lot quantities (float noise, far below any lot step).
QTY_RTOL = 1e-9


@njit(cache=True)
def precision_ok_nb(price, qty, p):
    """Exchange filters: qty >= min_qty and qty*price >= min_notional (else the order is not placed)."""
    if qty <= 0.0 or qty < p[P_MIN_QTY] * (1.0 - QTY_RTOL):
        return False
    return qty * price >= p[P_MIN_NOTIONAL] * (1.0 - QTY_RTOL)


@njit(cache=True)
def validate_entry_nb(price, qty, side_pos, resting_other, equity, p, br):
    """Reason code (0 = accepted) for an entry of ``qty`` at ``price``.

    ``Q = side_pos + resting_other + qty`` is the side's exposure if every same-side entry fills.
    """
    if p[P_ENABLE_VALIDATION] == 0.0:
        return Reason.NONE
    q = side_pos + resting_other + qty
    notional = q * price
    if notional / p[P_LEVERAGE] > p[P_MAX_POSITION_PCT] * equity:
        return Reason.SIZE_PCT
    if q > p[P_MAX_POSITION_SIZE] * (1.0 + QTY_RTOL):
        return Reason.SIZE_QTY
    if notional > p[P_MAX_INVENTORY_QUOTE]:
        return Reason.SIZE_INVENTORY
    order = qty * price
    if order < p[P_MIN_ORDER_USDT] or order > p[P_MAX_ORDER_USDT] or qty > p[P_MAX_QTY]:
        return Reason.SIZE_ORDER
    if notional > max_notional_at_leverage_nb(br, p[P_LEVERAGE]):
        return Reason.SIZE_BRACKET
    return Reason.NONE


@njit(cache=True)
def validate_exit_nb(qty, side_pos):
    """Reason code for a reduce-only exit: it may not exceed the side's position."""
    if qty <= 0.0 or qty > side_pos * (1.0 + QTY_RTOL):
        return Reason.EXIT_EXCEEDS
    return Reason.NONE
