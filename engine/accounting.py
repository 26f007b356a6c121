"""Hedge-mode accounting: apply a fill to a side, mark to market, and the online daily-return stats.

Each side keeps a quantity and an average entry price. An entry moves the average
(``avg = (q*avg + dq*p)/(q + dq)``); an exit realizes ``dq*(p - avg)`` (long) or ``dq*(avg - p)``
(short) and leaves the average alone. ``wallet = initial + realized - fees + funding``;
``equity = wallet + unrealized``.
"""

from __future__ import annotations

import math

from gridctl.engine.enums import Liquidity, Side, hot_kernel, kernel
from gridctl.engine.margin import account_maint_margin_nb
from gridctl.engine.params import P_FEE_MAKER, P_FEE_TAKER
from gridctl.engine.state import (
    S_DAY,
    S_DAY_DOWNSQ,
    S_DAY_EQ,
    S_DAY_N,
    S_DAY_PEAK,
    S_DAY_PREV_EQ,
    S_DAY_SUM,
    S_DAY_SUMSQ,
    S_DD_PCT,
    S_EQUITY,
    S_FEES,
    S_GROSS_LOSS,
    S_GROSS_PROFIT,
    S_LONG_AVG,
    S_LONG_QTY,
    S_MARGIN_RATIO,
    S_MAX_DD_DAILY_PCT,
    S_MAX_DD_INTRABAR_PCT,
    S_MAX_DD_PCT,
    S_N_ENTRIES,
    S_N_EXITS,
    S_N_LOSSES,
    S_N_LOTS_CLOSED,
    S_N_MAKER,
    S_N_TAKER,
    S_N_WINS,
    S_PEAK,
    S_REALIZED,
    S_SHORT_AVG,
    S_SHORT_QTY,
    S_TRADED_NOTIONAL,
    S_UNREAL,
    S_WALLET,
    S_X_MM,
    S_X_UNREAL,
)

DAY_MS = 86_400_000
# A side whose quantity falls below this after an exit is flat (float residue of lot sums): below
# FLAT_QTY, or below FLAT_REL of what the side held (lots of 4092.7 units leave residues of ~2e-12).
FLAT_QTY = 1e-12
FLAT_REL = 1e-9


@kernel
def apply_fill_nb(st, side, is_entry, price, qty, liquidity, p):
    """Book one fill on ``side``; returns (realized PnL, fee). Fee = price*qty*rate, never negative."""
    rate = p[P_FEE_MAKER] if liquidity == Liquidity.MAKER else p[P_FEE_TAKER]
    fee = price * qty * rate
    q_slot = S_LONG_QTY if side == Side.LONG else S_SHORT_QTY
    a_slot = S_LONG_AVG if side == Side.LONG else S_SHORT_AVG
    q = st[q_slot]
    realized = 0.0
    if is_entry:
        st[a_slot] = (q * st[a_slot] + qty * price) / (q + qty)
        st[q_slot] = q + qty
        st[S_N_ENTRIES] += 1.0
    else:
        avg = st[a_slot]
        realized = qty * (price - avg) if side == Side.LONG else qty * (avg - price)
        left = q - qty
        if left < FLAT_QTY or left <= FLAT_REL * q:
            st[q_slot] = 0.0
            st[a_slot] = 0.0
        else:
            st[q_slot] = left
        st[S_REALIZED] += realized
        st[S_N_EXITS] += 1.0
    st[S_FEES] += fee
    st[S_WALLET] += realized - fee
    st[S_TRADED_NOTIONAL] += price * qty
    if liquidity == Liquidity.MAKER:
        st[S_N_MAKER] += 1.0
    else:
        st[S_N_TAKER] += 1.0
    return realized, fee


@kernel
def book_lot_nb(st, side, qty, entry_price, entry_fee, exit_price, exit_fee):
    """Win/loss stats of one closed lot: its PnL from its own entry price, after both fees; returns it."""
    gross = qty * (exit_price - entry_price) if side == Side.LONG else qty * (entry_price - exit_price)
    pnl = gross - entry_fee - exit_fee
    st[S_N_LOTS_CLOSED] += 1.0
    if pnl > 0.0:
        st[S_N_WINS] += 1.0
        st[S_GROSS_PROFIT] += pnl
    elif pnl < 0.0:
        st[S_N_LOSSES] += 1.0
        st[S_GROSS_LOSS] -= pnl
    return pnl


@hot_kernel
def intrabar_drawdown_nb(st, lo, h):
    """Deepest drawdown inside the bar just marked: equity at its adverse extreme for the positions
    held at the close (equity is linear in price, so the worse of ``lo`` and ``h``), from the peak.

    In a basket the other symbols enter at their closes (``S_X_UNREAL``)."""
    lq = st[S_LONG_QTY]
    sq = st[S_SHORT_QTY]
    if lq <= 0.0 and sq <= 0.0:
        return
    w = st[S_WALLET] + st[S_X_UNREAL]
    worst = min(
        w + lq * (lo - st[S_LONG_AVG]) + sq * (st[S_SHORT_AVG] - lo),
        w + lq * (h - st[S_LONG_AVG]) + sq * (st[S_SHORT_AVG] - h),
    )
    peak = st[S_PEAK]
    if peak > 0.0:
        dd = (peak - worst) / peak * 100.0
        if dd > st[S_MAX_DD_INTRABAR_PCT]:
            st[S_MAX_DD_INTRABAR_PCT] = dd


@hot_kernel
def mark_to_market_nb(st, price, br):
    """Unrealized PnL, equity, peak, drawdown (now and max) and margin ratio at ``price``; returns equity.

    Equity and margin ratio are the account's: in a basket the other symbols' unrealized PnL and
    maintenance margin (``S_X_UNREAL``, ``S_X_MM``, 0 in a single run) are added.
    """
    lq = st[S_LONG_QTY]
    sq = st[S_SHORT_QTY]
    unreal = lq * (price - st[S_LONG_AVG]) + sq * (st[S_SHORT_AVG] - price)
    eq = st[S_WALLET] + unreal + st[S_X_UNREAL]
    st[S_UNREAL] = unreal
    st[S_EQUITY] = eq
    if eq > st[S_PEAK]:
        st[S_PEAK] = eq
    peak = st[S_PEAK]
    dd = (peak - eq) / peak * 100.0
    st[S_DD_PCT] = dd  # the drawdown gate reads it (risk.drawdown_breached_nb)
    if peak > 0.0 and dd > st[S_MAX_DD_PCT]:
        st[S_MAX_DD_PCT] = dd
    mm = account_maint_margin_nb(st, br, price) + st[S_X_MM]
    st[S_MARGIN_RATIO] = mm / eq if eq > 0.0 else math.nan  # unknown once equity is gone
    return eq


@kernel
def _close_day_nb(st):
    prev = st[S_DAY_PREV_EQ]
    r = st[S_DAY_EQ] / prev - 1.0 if prev > 0.0 else 0.0
    day_eq = st[S_DAY_EQ]
    if day_eq > st[S_DAY_PEAK]:
        st[S_DAY_PEAK] = day_eq
    peak = st[S_DAY_PEAK]
    if peak > 0.0:
        dd = (peak - day_eq) / peak * 100.0
        if dd > st[S_MAX_DD_DAILY_PCT]:
            st[S_MAX_DD_DAILY_PCT] = dd
    st[S_DAY_N] += 1.0
    st[S_DAY_SUM] += r
    st[S_DAY_SUMSQ] += r * r
    if r < 0.0:
        st[S_DAY_DOWNSQ] += r * r
    st[S_DAY_PREV_EQ] = st[S_DAY_EQ]


@hot_kernel
def daily_stats_nb(st, ts, equity):
    """Feed one bar-close equity; a UTC day's return is booked when the next day's first bar arrives."""
    day = float(ts // DAY_MS)
    if st[S_DAY] == st[S_DAY] and day != st[S_DAY]:  # S_DAY is NaN before the first bar
        _close_day_nb(st)
    st[S_DAY] = day
    st[S_DAY_EQ] = equity


@kernel
def finish_daily_stats_nb(st):
    """Book the last (possibly partial) day at the end of a run."""
    if st[S_DAY] == st[S_DAY]:
        _close_day_nb(st)
        st[S_DAY] = math.nan
