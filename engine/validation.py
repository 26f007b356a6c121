"""Order checks run before every submission: the precision guard and the entry size validation.

The audited bot had ``_validate_order_size`` with no caller; here ``decide_nb`` (entries, re-centred
entries) and the open-phase retries (``fills.py``) call these functions, and a refusal is an event plus
an error for the circuit breaker; ``refusal_memo_nb`` says what a refusal depended on (the rung memo).

Decisions beyond DESIGN.md: a quantity above the venue's ``max_qty`` fails the precision guard (not
placed, counted in ``skipped_precision``); size limits are exceeded only beyond a 1e-9 relative
tolerance (sums of round lot sizes land a hair over). Exits need no check: a lot's TP/SL is
reduce-only for the lot's qty, which the side's position (it includes the lot) always covers.
``enable_position_validation`` false switches off only the bot's own limits (``SIZE_PCT``,
``SIZE_QTY``, ``SIZE_INVENTORY``); the exchange's rules (order size, bracket, initial margin) are the
venue's and always apply.
"""

from __future__ import annotations

from gridctl.engine.enums import Reason, kernel
from gridctl.engine.margin import max_notional_at_leverage_nb
from gridctl.engine.params import (
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

# Relative tolerance of the size limits (float noise of lot sums, far below any lot step).
QTY_RTOL = 1e-9


@kernel
def above_nb(x, limit):
    """``x > limit`` beyond float noise (QTY_RTOL relative)."""
    if limit >= 0.0:
        return x > limit * (1.0 + QTY_RTOL)
    return x > limit * (1.0 - QTY_RTOL)


@kernel
def same_order_nb(have_price, have_qty, want_price, want_qty, price_tol_bps, qty_tol_pct):
    """An order resting at ``have_*`` counts as the wanted one: price within ``price_tol_bps`` and qty
    within ``qty_tol_pct`` of the wanted order's (``execution.order_*_tolerance``; 1e-9 of slack)."""
    if abs(have_price - want_price) / want_price * 1e4 > price_tol_bps + 1e-9:
        return False
    return abs(have_qty - want_qty) / want_qty * 100.0 <= qty_tol_pct + 1e-9


@kernel
def precision_ok_nb(price, qty, p):
    """Exchange filters: min_qty <= qty <= max_qty and qty*price >= min_notional, else not placed."""
    if qty <= 0.0 or qty < p[P_MIN_QTY] or qty > p[P_MAX_QTY]:
        return False
    return qty * price >= p[P_MIN_NOTIONAL]


@kernel
def validate_entry_nb(price, qty, side_pos, resting_other, opposite, equity, p, br):
    """Reason code (0 = accepted) for an entry of ``qty`` at ``price``.

    ``Q = side_pos + resting_other + qty`` is the side's exposure if every same-side entry fills;
    ``opposite`` is the other side's position plus all its resting entries, so ``Q + opposite`` is
    what the account must margin if every resting entry of both sides fills (hedge mode margins
    both sides: per-side limits alone would let the two together use twice the equity).
    """
    q = side_pos + resting_other + qty
    notional = q * price
    if p[P_ENABLE_VALIDATION] != 0.0:
        # The bot's own limits (enable_position_validation switches off these three only).
        if above_nb(notional / p[P_LEVERAGE], p[P_MAX_POSITION_PCT] * equity):
            return Reason.SIZE_PCT
        if above_nb(q, p[P_MAX_POSITION_SIZE]):
            return Reason.SIZE_QTY
        if above_nb(notional, p[P_MAX_INVENTORY_QUOTE]):
            return Reason.SIZE_INVENTORY
    # The exchange's rules always apply.
    order = qty * price
    if above_nb(p[P_MIN_ORDER_USDT], order) or above_nb(order, p[P_MAX_ORDER_USDT]):
        return Reason.SIZE_ORDER
    if above_nb(notional, max_notional_at_leverage_nb(br, p[P_LEVERAGE])):
        return Reason.SIZE_BRACKET
    if above_nb((q + opposite) * price / p[P_LEVERAGE], equity):
        return Reason.SIZE_MARGIN
    return Reason.NONE


@kernel
def refusal_memo_nb(reason, price, qty, q, opp, p):
    """What a refusal depends on, for the rung's memo: (side exposure, opposite exposure, passing equity).

    ``q`` is the side exposure ``Q`` the check saw and ``opp`` the opposite side's exposure. An input
    the reason does not read is NaN; the passing equity is the equity at which the failed check
    passes (``SIZE_PCT``: ``Q*price/leverage/max_position_pct``; ``SIZE_MARGIN``:
    ``(Q + opp)*price/leverage``), +inf for the reasons equity cannot change.
    """
    nan = float("nan")
    if reason == Reason.SIZE_ORDER:
        return nan, nan, float("inf")
    if reason == Reason.SIZE_PCT:
        return q, nan, q * price / p[P_LEVERAGE] / p[P_MAX_POSITION_PCT]
    if reason == Reason.SIZE_MARGIN:
        return q, opp, (q + opp) * price / p[P_LEVERAGE]
    return q, nan, float("inf")
