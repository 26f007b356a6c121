"""Funding: settlement payments on held positions, and the guard that shrinks the paying side.

The audited bot's funding guard was never fed a rate. Here the settlement series is part of the market
and both functions read it directly: ``apply_funding_nb`` pays every settlement as its time passes and
``funding_guard_nb`` scales the side that would pay the next one. No known rate means no new entries.

Decisions beyond DESIGN.md: the guard uses the rate of the latest settlement at or before the decision
time (``close_time``) and T0 = that settlement's time; when the series has no settlement after
``close_time`` the guard cannot measure the window and leaves sizes unscaled.
"""

from __future__ import annotations

import numpy as np

from gridctl.engine.enums import MarkSource, Side, hot_kernel, kernel
from gridctl.engine.params import P_FUNDING_MAX_COST_BPS, P_FUNDING_WINDOW_MIN
from gridctl.engine.records import write_funding_nb
from gridctl.engine.state import (
    S_FG_KNOWN,
    S_FG_LONG,
    S_FG_SHORT,
    S_FG_UNTIL,
    S_FIRST_TS,
    S_FUND_IDX,
    S_FUNDING_NET,
    S_FUNDING_PAID,
    S_FUNDING_RECV,
    S_GUARD_IDX,
    S_LONG_QTY,
    S_N_FUNDING,
    S_SHORT_QTY,
    S_WALLET,
)


@kernel
def funding_amount_nb(side, qty, mark, rate):
    """Cash flow of one side at a settlement: longs pay ``qty*mark*rate`` when rate > 0, shorts receive."""
    if side == Side.LONG:
        return -qty * mark * rate
    return qty * mark * rate


@kernel
def apply_funding_nb(st, bar_ts, bar_open, fts, frate, fmark, fund, cnt):
    """Pay every settlement ``T <= bar_ts`` not yet applied on the positions held now.

    Settlements before the run's first bar are skipped (they only provide the last known rate).
    The mark is the settlement's mark price when finite, else this bar's open.
    """
    i = int(st[S_FUND_IDX])
    n = fts.shape[0]
    while i < n and fts[i] <= bar_ts:
        t = fts[i]
        if t >= st[S_FIRST_TS]:
            rate = frate[i]
            mark = fmark[i]
            source = MarkSource.MARK_SERIES
            if not (mark == mark and abs(mark) < 1e300):
                mark = bar_open
                source = MarkSource.TRADE_OPEN
            for side in range(2):
                q = st[S_LONG_QTY] if side == Side.LONG else st[S_SHORT_QTY]
                if q > 0.0 and rate == rate:
                    amount = funding_amount_nb(side, q, mark, rate)
                    st[S_WALLET] += amount
                    st[S_FUNDING_NET] += amount
                    if amount < 0.0:
                        st[S_FUNDING_PAID] -= amount
                    else:
                        st[S_FUNDING_RECV] += amount
                    st[S_N_FUNDING] += 1.0
                    write_funding_nb(fund, cnt, t, side, rate, mark, source, q, amount)
        i += 1
    st[S_FUND_IDX] = i


@hot_kernel
def funding_guard_nb(st, close_time, fts, frate, p):
    """(rate known, long size factor, short size factor) for entries decided at ``close_time``.

    With r = last settled rate and T1 = next settlement: inside the window before T1 a position held
    through T1 pays the whole rate, so the projected cost is ``|r|*1e4`` bps (0 outside the window);
    when it exceeds funding_max_cost_bps the paying side is scaled by
    ``max(0, (T1 - close_time)/window)``. The answer is cached with the first close time
    that could change it (the next settlement, the window's start, or the next close inside a window
    that scales), so most bars only compare two numbers.
    """
    if close_time < st[S_FG_UNTIL]:
        return st[S_FG_KNOWN] != 0.0, st[S_FG_LONG], st[S_FG_SHORT]
    known, g_long, g_short, until = _funding_guard_eval_nb(st, close_time, fts, frate, p)
    st[S_FG_UNTIL] = until
    st[S_FG_KNOWN] = 1.0 if known else 0.0
    st[S_FG_LONG] = g_long
    st[S_FG_SHORT] = g_short
    return known, g_long, g_short


@kernel
def _funding_guard_eval_nb(st, close_time, fts, frate, p):
    """The guard at ``close_time`` and the first close time at which it must be evaluated again."""
    j = int(st[S_GUARD_IDX])
    n = fts.shape[0]
    while j < n and fts[j] <= close_time:
        j += 1
    st[S_GUARD_IDX] = j
    # The settlement index (hence r, T0, T1) holds until the close reaches the next settlement.
    next_settle = float(fts[j]) if j < n else np.inf
    if j == 0:
        return False, 1.0, 1.0, next_settle
    r = frate[j - 1]
    if r != r:
        return False, 1.0, 1.0, next_settle
    if j >= n:
        return True, 1.0, 1.0, np.inf
    t0 = fts[j - 1]
    t1 = fts[j]
    window = p[P_FUNDING_WINDOW_MIN] * 60_000.0
    left = t1 - close_time
    if left > window or t1 <= t0:
        # Unscaled until the window opens (one ms early, so rounding can never make it late).
        return True, 1.0, 1.0, min(next_settle, t1 - window - 1.0)
    # A settlement falls inside the window: a position held through it pays the whole rate.
    cost_bps = abs(r) * 1e4
    if cost_bps <= p[P_FUNDING_MAX_COST_BPS]:
        return True, 1.0, 1.0, next_settle
    scale = max(0.0, left / window)
    # The scale shrinks with every close: evaluate again at the next one.
    if r > 0.0:
        return True, scale, 1.0, close_time
    if r < 0.0:
        return True, 1.0, scale, close_time
    return True, 1.0, 1.0, close_time
