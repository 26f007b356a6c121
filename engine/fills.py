"""The simulated venue: post-only check and retries at the open, gap fills, the intrabar path walk.

The path walk is the backtest's alone; the live bridge gets fills from the exchange and books them
with the same ``fill_slot_nb`` / ``apply_fill_nb``, and runs the same post-only retry kernels. Path
of a bar: ``o, x1, x2, c``; ``P_INTRABAR_PATH`` orders the extremes (nearer to the open first, high
first or low first). With detail bars the path is the open, then each detail bar's own four points
in time order, then the close (``detail_path_nb``). On each segment the active order hit nearest to
the current point fills first; ties at one price go SL, TP, entry, then long before short, then the
lower rung. The liquidation price is a trigger too: the margin check runs at each next trigger
before it fills, after each fill and at each path point, so the first crossing in path order
liquidates (equity minus maintenance margin is concave in price).

Decisions beyond DESIGN.md:
* New entries get the post-only check long side first, lower rung first. Retries happen at the open,
  one tick further each time (``retry_price_nb``; the live bridge runs the same kernels against the
  exchange's answers), each validated (a refused retry is remembered like any refused order);
  ``RETRY_LIMIT`` is recorded when retries stop without a resting order (deviation bound: reason
  RETRY_DEVIATION, value = the deviation in bps; attempts used up: RETRY_ATTEMPTS). A retry counts in
  ``orders_submitted`` but not toward the rate limits (those pace the decisions at bar closes).
* Orders the open gapped through fill in tie-break order (SL, TP, entry; long, short; lower rung),
  repeatedly, so a lot opened by the gap whose stop is also beyond the open is stopped at the open.
* A liquidation closes both sides as taker without slippage at the liquidation price (brackets at the
  point ``x`` where the check failed) clamped into the range traded since the current point (at ``x``
  when there is no positive liquidation price); the event's value is the equity there. Instead of a
  trading fee each side's fill carries its clearance charge: its maintenance margin at the close
  price, or ``P_LIQ_CLEARANCE_FEE`` x notional when the venue sets one; long first, together never
  more than the account's equity there (never below 0).
* Detail bars: fills of detail bar j carry its ts; the final move from the last detail close to the
  bar's close (a no-op when they agree) carries the last detail bar's ts.
"""

from __future__ import annotations

import numpy as np

from gridctl.engine.accounting import apply_fill_nb, book_lot_nb
from gridctl.engine.enums import (
    PATH_HIGH_FIRST,
    PATH_LOW_FIRST,
    PATH_NEARER_FIRST,
    EventKind,
    FillKind,
    Liquidity,
    Reason,
    Side,
    hot_kernel,
    inline_kernel,
    kernel,
)
from gridctl.engine.ladder import sl_price_nb, tp_price_nb
from gridctl.engine.margin import (
    account_maint_margin_nb,
    is_liquidated_nb,
    liquidation_price_nb,
    maint_margin_nb,
    margin_wallet_nb,
)
from gridctl.engine.params import (
    P_FILL_ON_TOUCH,
    P_INTRABAR_PATH,
    P_LIQ_CLEARANCE_FEE,
    P_MAKER_ONLY,
    P_OPTIMIZATION_MODE,
    P_POST_ONLY_RETRIES,
    P_RETRY_ATTEMPTS,
    P_RETRY_MAX_DEV_BPS,
    P_SLIPPAGE_BPS,
    P_TICK,
)
from gridctl.engine.records import C_FILLS, C_RECORD, write_event_nb, write_fill_nb
from gridctl.engine.risk import close_side_charged_nb, record_error_nb
from gridctl.engine.state import (
    S_CB_ACTIVE,
    S_DIRTY,
    S_DOWN_MAX,
    S_EQUITY,
    S_FEES,
    S_LIQ_TS,
    S_LIQUIDATED,
    S_LONG_AVG,
    S_LONG_QTY,
    S_ORDERS_SUBMITTED,
    S_POST_ONLY_REJECTS,
    S_REJ_BASE,
    S_RETRY_LIMITS,
    S_SAME_BAR_N,
    S_SAME_BAR_PROFIT,
    S_SHORT_AVG,
    S_SHORT_QTY,
    S_UP_MIN,
    S_WALLET,
    S_X_MM,
    S_X_NOTIONAL,
    SL_LOT_FEE,
    SL_LOT_ON,
    SL_LOT_PRICE,
    SL_LOT_QTY,
    SL_LOT_TS,
    SL_ORD_BAR,
    SL_ORD_ON,
    SL_ORD_PRICE,
    SL_ORD_QTY,
    SL_SL,
    SL_TP,
    opposite_exposure_nb,
    refresh_triggers_nb,
    refused_until_nb,
    remember_refusal_nb,
    resting_qty_nb,
)
from gridctl.engine.validation import refusal_memo_nb, validate_entry_nb

# Kind ranks for tie-breaks (lower goes first).
RANK_SL = 0
RANK_TP = 1
RANK_ENTRY = 2


@hot_kernel
def order_trigger_nb(s, side, rank):
    """(active, trigger price, is a buy) of one slot's order of ``rank`` (SL, TP or entry).

    Entries buy on the long side; exits reduce, so a long lot's TP and SL sell and a short lot's buy.
    """
    if rank == RANK_ENTRY:
        return s[SL_ORD_ON] != 0.0, s[SL_ORD_PRICE], side == Side.LONG
    if s[SL_LOT_ON] == 0.0:
        return False, 0.0, False
    px = s[SL_TP] if rank == RANK_TP else s[SL_SL]
    return px == px, px, side == Side.SHORT


@kernel
def _side_qty(st, side):
    return st[S_LONG_QTY] if side == Side.LONG else st[S_SHORT_QTY]


@kernel
def _fill_slot_nb(st, slots, errs, side, idx, rank, price, liquidity, ts, p, br, fills, ev, cnt):
    """Book a fill of rung ``idx`` of ``side``: its entry (opens the lot with TP/SL) or its lot's TP/SL."""
    level = idx + 1
    if rank == RANK_ENTRY:
        qty = slots[side, idx, SL_ORD_QTY]
        slots[side, idx, SL_ORD_ON] = 0.0
        realized, fee = apply_fill_nb(st, side, True, price, qty, liquidity, p)
        write_fill_nb(fills, cnt, ts, side, FillKind.ENTRY, level, price, qty, fee, liquidity, realized)
        slots[side, idx, SL_LOT_ON] = 1.0
        slots[side, idx, SL_LOT_QTY] = qty
        slots[side, idx, SL_LOT_PRICE] = price
        slots[side, idx, SL_LOT_FEE] = fee
        slots[side, idx, SL_LOT_TS] = ts
        # Both exits are reduce-only orders for the lot's qty, which the position (it includes the lot)
        # always covers: no exit check can fail here, so none is run (DESIGN.md "Order-size validation").
        slots[side, idx, SL_TP] = tp_price_nb(side, price, p)
        slots[side, idx, SL_SL] = sl_price_nb(side, price, p)
    else:
        qty = min(slots[side, idx, SL_LOT_QTY], _side_qty(st, side))
        kind = FillKind.TP if rank == RANK_TP else FillKind.SL
        realized, fee = apply_fill_nb(st, side, False, price, qty, liquidity, p)
        entry, entry_fee = slots[side, idx, SL_LOT_PRICE], slots[side, idx, SL_LOT_FEE]
        pnl = book_lot_nb(st, side, qty, entry, entry_fee, price, fee)
        if slots[side, idx, SL_LOT_TS] == ts:  # entered and exited inside one bar: the path rule decided it
            st[S_SAME_BAR_N] += 1.0
            if pnl > 0.0:
                st[S_SAME_BAR_PROFIT] += pnl
        write_fill_nb(fills, cnt, ts, side, kind, level, price, qty, fee, liquidity, realized)
        slots[side, idx, SL_LOT_ON] = 0.0
        slots[side, idx, SL_TP] = float("nan")
        slots[side, idx, SL_SL] = float("nan")
    st[S_DIRTY] = 1.0


#: After a liquidation's charges, an equity within this fraction of the liquidated notional of 0 is 0.
LIQ_ZERO_REL = 1e-9


@kernel
def liquidate_nb(st, slots, price, ts, p, br, fills, ev, cnt):
    """Exchange liquidation at ``price``: both sides closed as taker, entries cancelled, run over.

    Each side pays its clearance charge (its maintenance margin at ``price``, or the venue's clearance
    fee x notional), long first, together at most the equity left at ``price`` (never negative). In a
    basket "equity" is the margin wallet's (``margin_wallet_nb``: the other symbols' maintenance margin
    stays for their own charges) and the event's value the account's equity.
    """
    equity = (
        margin_wallet_nb(st)
        + st[S_LONG_QTY] * (price - st[S_LONG_AVG])
        + st[S_SHORT_QTY] * (st[S_SHORT_AVG] - price)
    )
    account = equity + st[S_X_MM]
    write_event_nb(ev, cnt, ts, EventKind.LIQUIDATION, Reason.NONE, -1, 0, price, 0.0, account)
    for side in range(2):
        for idx in range(slots.shape[1]):
            slots[side, idx, SL_ORD_ON] = 0.0
    rate = p[P_LIQ_CLEARANCE_FEE]
    left = max(equity, 0.0)
    zero = LIQ_ZERO_REL * (st[S_LONG_QTY] + st[S_SHORT_QTY]) * price
    for side in range(2):
        notional = _side_qty(st, side) * price
        charge = 0.0
        if notional > 0.0:
            charge = rate * notional if rate == rate else maint_margin_nb(br, notional)
            charge = min(max(charge, 0.0), left)
            left -= charge
        kind, liq = FillKind.LIQUIDATION, Liquidity.TAKER
        close_side_charged_nb(st, slots, side, price, kind, liq, charge, ts, p, fills, cnt)
    if left <= zero and equity > -zero:
        # What is left is float noise around 0 (at the liquidation price equity equals the maintenance
        # margin): the account holds exactly 0. The residual goes to the last clearance charge, in the
        # state and in its ledger row. A gap past bankruptcy keeps its negative wallet. In a basket
        # the margin wallet is what goes to 0 (the others' maintenance margin pays their charges).
        resid = margin_wallet_nb(st)
        st[S_WALLET] -= resid
        st[S_FEES] += resid
        i = cnt[C_FILLS] - 1
        if cnt[C_RECORD] != 0 and 0 <= i < fills.shape[0]:
            fills[i]["fee"] += resid
    refresh_triggers_nb(st, slots)
    st[S_LIQUIDATED] = 1.0
    st[S_LIQ_TS] = ts


@kernel
def margin_check_nb(st, slots, a, price, ts, p, br, fills, ev, cnt):
    """Liquidate if equity at ``price`` is at or below maintenance margin; returns liquidated.

    The path reached ``price`` from the current point ``a``; the exchange closes at the liquidation
    price, which the path crossed between them: LP clamped into that range (a gap beyond LP closes at
    the range's end), or ``price`` itself when LP is not a positive number.
    """
    w = margin_wallet_nb(st)
    lq = st[S_LONG_QTY]
    la = st[S_LONG_AVG]
    sq = st[S_SHORT_QTY]
    sa = st[S_SHORT_AVG]
    if not is_liquidated_nb(br, w, lq, la, sq, sa, price):
        return False
    lp = liquidation_price_nb(br, w, lq, la, sq, sa, price)
    px = price
    if np.isfinite(lp):
        px = min(max(lp, min(a, price)), max(a, price))
    liquidate_nb(st, slots, px, ts, p, br, fills, ev, cnt)
    return True


@hot_kernel
def retries_enabled_nb(p):
    """Post-only rejections are retried: ``use_post_only_retries`` and not ``optimization_mode``."""
    return p[P_POST_ONLY_RETRIES] != 0.0 and p[P_OPTIMIZATION_MODE] == 0.0


@kernel
def _post_only_reject_nb(st, slots, errs, side, idx, price, qty, attempt, now, ts, p, ev, cnt):
    """Entry of rung ``idx`` at ``price`` rejected as post-only (``attempt`` 0: the first, j: retry j).

    Takes it off the slot array (the next decision re-plans), counts and records it (the event's value
    is the attempt) and enters the error into the circuit-breaker window at ``now``; returns True when
    that tripped the breaker (no more retries). The simulated venue and the live bridge both call it.
    """
    slots[side, idx, SL_ORD_ON] = 0.0
    st[S_DIRTY] = 1.0
    st[S_POST_ONLY_REJECTS] += 1.0
    write_event_nb(
        ev, cnt, ts, EventKind.POST_ONLY_REJECT, Reason.POST_ONLY, side, idx + 1, price, qty, float(attempt)
    )
    return record_error_nb(st, slots, errs, now, p, ev, cnt, ts)


@kernel
def _retry_price_nb(st, slots, errs, side, idx, p0, qty, j, now, ts, p, br, ev, cnt):
    """Price of post-only retry ``j`` (1..) of the entry first tried at ``p0``, one tick further from the
    market per retry; NaN when the retries stop here, with the reason recorded.

    They stop after ``P_RETRY_ATTEMPTS`` retries or beyond ``P_RETRY_MAX_DEV_BPS`` (``RETRY_LIMIT``), on
    a refusal the memo holds (not submitted again) or on a validation refusal (remembered, recorded,
    entered into the breaker window at ``now``). A price returned counts as submitted.
    """
    level = idx + 1
    if j > int(p[P_RETRY_ATTEMPTS]):
        st[S_RETRY_LIMITS] += 1.0
        limit = p[P_RETRY_ATTEMPTS]
        write_event_nb(ev, cnt, ts, EventKind.RETRY_LIMIT, Reason.RETRY_ATTEMPTS, side, level, p0, qty, limit)
        return np.nan
    tick = p[P_TICK]
    slot = slots[side, idx]
    pj = p0 - j * tick if side == Side.LONG else p0 + j * tick
    dev = abs(pj - p0) / p0 * 1e4
    if dev > p[P_RETRY_MAX_DEV_BPS]:
        st[S_RETRY_LIMITS] += 1.0
        write_event_nb(ev, cnt, ts, EventKind.RETRY_LIMIT, Reason.RETRY_DEVIATION, side, level, pj, qty, dev)
        return np.nan
    pos = _side_qty(st, side)
    rest = resting_qty_nb(slots, side, idx)
    opp = opposite_exposure_nb(st, slots, side) + st[S_X_NOTIONAL] / pj
    q_all = pos + rest + qty
    eq = st[S_EQUITY]
    until = refused_until_nb(slot, pj, qty, q_all, opp, eq)
    if until == until:
        return np.nan  # refused before and what it depended on is unchanged
    reason = validate_entry_nb(pj, qty, pos, rest, opp, eq, p, br)
    if reason != Reason.NONE:
        st[S_REJ_BASE + reason] += 1.0
        m_q, m_opp, need = refusal_memo_nb(reason, pj, qty, q_all, opp, p)
        remember_refusal_nb(slot, pj, qty, m_q, m_opp, need)
        write_event_nb(ev, cnt, ts, EventKind.ORDER_REJECTED, reason, side, level, pj, qty, pos)
        record_error_nb(st, slots, errs, now, p, ev, cnt, ts)
        return np.nan
    st[S_ORDERS_SUBMITTED] += 1.0
    return pj


@kernel
def retry_rests_nb(slots, side, idx, price, qty, bar):
    """A retry at ``price`` was accepted: the entry rests (``bar``: the bar it counts as decided at)."""
    slot = slots[side, idx]
    slot[SL_ORD_ON] = 1.0
    slot[SL_ORD_PRICE] = price
    slot[SL_ORD_QTY] = qty
    slot[SL_ORD_BAR] = bar


@kernel
def _retry_nb(st, slots, errs, side, idx, p0, qty, o, k, ts, p, br, ev, cnt):
    """Post-only retries of a rejected entry at the open: the retry kernels against the simulated book."""
    now = float(ts)
    j = 1
    while True:
        pj = _retry_price_nb(st, slots, errs, side, idx, p0, qty, j, now, ts, p, br, ev, cnt)
        if pj != pj:
            return
        crosses = pj >= o if side == Side.LONG else pj <= o
        if not crosses:
            retry_rests_nb(slots, side, idx, pj, qty, k - 1)  # arrived at this open: not new at the next one
            return
        if _post_only_reject_nb(st, slots, errs, side, idx, pj, qty, j, now, ts, p, ev, cnt):
            return
        j += 1


@kernel
def _post_only_check_nb(st, slots, errs, k, o, ts, p, br, fills, ev, cnt):
    """New entries (decided at the previous close) that would cross the open: reject/retry or take."""
    slip = p[P_SLIPPAGE_BPS] * 1e-4
    maker_only = p[P_MAKER_ONLY] != 0.0
    retries = retries_enabled_nb(p)
    for side in range(2):
        for idx in range(slots.shape[1]):
            s = slots[side, idx]
            if s[SL_ORD_ON] == 0.0 or s[SL_ORD_BAR] != k - 1:
                continue
            price = s[SL_ORD_PRICE]
            crosses = price >= o if side == Side.LONG else price <= o
            if not crosses:
                continue
            if not maker_only:
                # Taker at the open moved by slippage, but never beyond the order's own limit.
                buy = side == Side.LONG
                fill_px = min(price, o * (1.0 + slip)) if buy else max(price, o * (1.0 - slip))
                _fill_slot_nb(
                    st,
                    slots,
                    errs,
                    side,
                    idx,
                    RANK_ENTRY,
                    fill_px,
                    Liquidity.TAKER,
                    ts,
                    p,
                    br,
                    fills,
                    ev,
                    cnt,
                )
                continue
            qty = s[SL_ORD_QTY]
            if _post_only_reject_nb(st, slots, errs, side, idx, price, qty, 0, float(ts), ts, p, ev, cnt):
                return
            if retries:
                _retry_nb(st, slots, errs, side, idx, price, qty, o, k, ts, p, br, ev, cnt)
                if st[S_CB_ACTIVE] != 0.0:
                    return


@kernel
def gap_fills_nb(st, slots, errs, o, ts, p, br, fills, ev, cnt):
    """Fill every order the open is already beyond (limits at their price, stops at the open)."""
    touch = p[P_FILL_ON_TOUCH] != 0.0
    slip = p[P_SLIPPAGE_BPS] * 1e-4
    n = slots.shape[1]
    while True:
        best_key = -1
        best_side = 0
        best_idx = 0
        best_rank = 0
        for side in range(2):
            for idx in range(n):
                s = slots[side, idx]
                for rank in range(3):
                    active, px, buy = order_trigger_nb(s, side, rank)
                    if not active:
                        continue
                    if rank == RANK_SL:
                        hit = o <= px if not buy else o >= px
                    elif buy:
                        hit = o <= px if touch else o < px
                    else:
                        hit = o >= px if touch else o > px
                    if hit:
                        key = rank * 2 * n + side * n + idx
                        if best_key < 0 or key < best_key:
                            best_key = key
                            best_side = side
                            best_idx = idx
                            best_rank = rank
        if best_key < 0:
            return
        if best_rank == RANK_SL:
            fill_px = o * (1.0 - slip) if best_side == Side.LONG else o * (1.0 + slip)
            liq = Liquidity.TAKER
        else:
            s = slots[best_side, best_idx]
            fill_px = s[SL_ORD_PRICE] if best_rank == RANK_ENTRY else s[SL_TP]
            liq = Liquidity.MAKER
        _fill_slot_nb(
            st, slots, errs, best_side, best_idx, best_rank, fill_px, liq, ts, p, br, fills, ev, cnt
        )


@kernel
def _walk_segment_nb(st, slots, errs, a, b, ts, p, br, fills, ev, cnt):
    """Walk the price from ``a`` to ``b``, filling the order hit nearest the current point each time.

    The margin check runs at each next trigger before it fills (at ``b`` when none is left) and after
    each fill; returns True when the account was liquidated on the way.
    """
    if b == a:
        return False
    touch = p[P_FILL_ON_TOUCH] != 0.0
    slip = p[P_SLIPPAGE_BPS] * 1e-4
    down = b < a
    n = slots.shape[1]
    cur = a
    while True:
        best_key = -1
        best_px = 0.0
        best_side = 0
        best_idx = 0
        best_rank = 0
        for side in range(2):
            for idx in range(n):
                s = slots[side, idx]
                for rank in range(3):
                    active, px, buy = order_trigger_nb(s, side, rank)
                    if not active:
                        continue
                    if down:
                        # Down moves hit buy limits and sell stops.
                        if rank == RANK_SL:
                            hit = (not buy) and b <= px <= cur
                        else:
                            hit = buy and (b <= px if touch else b < px) and px <= cur
                    else:
                        # Up moves hit sell limits and buy stops.
                        if rank == RANK_SL:
                            hit = buy and cur <= px <= b
                        else:
                            hit = (not buy) and cur <= px and (px <= b if touch else px < b)
                    if not hit:
                        continue
                    key = rank * 2 * n + side * n + idx
                    nearer = px > best_px if down else px < best_px
                    if best_key < 0 or nearer or (px == best_px and key < best_key):
                        best_key = key
                        best_px = px
                        best_side = side
                        best_idx = idx
                        best_rank = rank
        # The liquidation price is met first when the path crosses it before the next trigger.
        if margin_check_nb(st, slots, cur, b if best_key < 0 else best_px, ts, p, br, fills, ev, cnt):
            return True
        if best_key < 0:
            return False
        if best_rank == RANK_SL:
            fill_px = best_px * (1.0 - slip) if best_side == Side.LONG else best_px * (1.0 + slip)
            liq = Liquidity.TAKER
        else:
            fill_px = best_px
            liq = Liquidity.MAKER
        _fill_slot_nb(
            st, slots, errs, best_side, best_idx, best_rank, fill_px, liq, ts, p, br, fills, ev, cnt
        )
        cur = best_px
        if margin_check_nb(st, slots, cur, cur, ts, p, br, fills, ev, cnt):
            return True


@hot_kernel
def bar_cannot_fill_nb(st, lo, h):
    """True when the bar's range reaches no active order's trigger (nothing fills, nothing crosses)."""
    return lo > st[S_DOWN_MAX] and h < st[S_UP_MIN]


@hot_kernel
def bar_margin_safe_nb(st, br, lo, h):
    """Sufficient test that no path point of a bar without fills can be liquidated.

    Equity is linear in price and maintenance margin rises with price (brackets are continuous), so
    equity's minimum over ``[lo, h]`` above the margin at ``h`` clears every point in between.
    """
    lq = st[S_LONG_QTY]
    sq = st[S_SHORT_QTY]
    if lq <= 0.0 and sq <= 0.0:
        return True
    w = margin_wallet_nb(st)
    eq_lo = w + lq * (lo - st[S_LONG_AVG]) + sq * (st[S_SHORT_AVG] - lo)
    eq_hi = w + lq * (h - st[S_LONG_AVG]) + sq * (st[S_SHORT_AVG] - h)
    return min(eq_lo, eq_hi) > account_maint_margin_nb(st, br, h)


@kernel
def path_points_nb(o, h, lo, rule):
    """The two intrabar extremes in path order for ``rule`` (nearer / farther first, high / low first)."""
    if rule == PATH_HIGH_FIRST:
        return h, lo
    if rule == PATH_LOW_FIRST:
        return lo, h
    high_nearer = h - o <= o - lo
    if high_nearer == (rule == PATH_NEARER_FIRST):
        return h, lo
    return lo, h


@kernel
def _points_margin_check_nb(st, slots, o, h, lo, c, ts, p, br, fills, ev, cnt):
    """Margin check at ``o, x1, x2, c`` for a bar without fills; returns liquidated."""
    x1, x2 = path_points_nb(o, h, lo, int(p[P_INTRABAR_PATH]))
    if margin_check_nb(st, slots, o, o, ts, p, br, fills, ev, cnt):
        return True
    if margin_check_nb(st, slots, o, x1, ts, p, br, fills, ev, cnt):
        return True
    if margin_check_nb(st, slots, x1, x2, ts, p, br, fills, ev, cnt):
        return True
    return margin_check_nb(st, slots, x2, c, ts, p, br, fills, ev, cnt)


@kernel
def _walk_bar_nb(st, slots, errs, cur, o, h, lo, c, rule, ts, p, br, fills, ev, cnt):
    """Segments ``cur -> o -> x1 -> x2 -> c`` of one (detail) bar; returns liquidated."""
    x1, x2 = path_points_nb(o, h, lo, rule)
    if _walk_segment_nb(st, slots, errs, cur, o, ts, p, br, fills, ev, cnt):
        return True
    if _walk_segment_nb(st, slots, errs, o, x1, ts, p, br, fills, ev, cnt):
        return True
    if _walk_segment_nb(st, slots, errs, x1, x2, ts, p, br, fills, ev, cnt):
        return True
    return _walk_segment_nb(st, slots, errs, x2, c, ts, p, br, fills, ev, cnt)


@kernel
def _path_nb(st, slots, errs, k, o, h, lo, c, ts, p, br, fills, ev, cnt):
    """Simulate bar k's trading; returns True if the account was liquidated (the run stops)."""
    _post_only_check_nb(st, slots, errs, k, o, ts, p, br, fills, ev, cnt)
    gap_fills_nb(st, slots, errs, o, ts, p, br, fills, ev, cnt)
    if margin_check_nb(st, slots, o, o, ts, p, br, fills, ev, cnt):
        return True
    if _walk_bar_nb(st, slots, errs, o, o, h, lo, c, int(p[P_INTRABAR_PATH]), ts, p, br, fills, ev, cnt):
        return True
    refresh_triggers_nb(st, slots)
    return False


@hot_kernel
def detail_range_nb(o, c, dh, dl, j0, j1):
    """(low, high) over bar k's open and close and its detail bars ``j0..j1-1``."""
    lo = min(o, c)
    hi = max(o, c)
    for j in range(j0, j1):
        lo = min(lo, dl[j])
        hi = max(hi, dh[j])
    return lo, hi


@kernel
def _detail_path_nb(st, slots, errs, k, o, c, ts, dts, do, dh, dl, dc, j0, j1, p, br, fills, ev, cnt):
    """Bar k's trading walked through its detail bars ``j0..j1-1``; returns True if liquidated.

    The open ``o`` as in ``path_nb`` (post-only check, gap fills, margin check, at ``ts``), then each
    detail bar's ``o_j, x1_j, x2_j, c_j`` from the previous path point (fills at ``dts[j]``), then the
    bar's close ``c``.
    """
    rule = int(p[P_INTRABAR_PATH])
    _post_only_check_nb(st, slots, errs, k, o, ts, p, br, fills, ev, cnt)
    gap_fills_nb(st, slots, errs, o, ts, p, br, fills, ev, cnt)
    if margin_check_nb(st, slots, o, o, ts, p, br, fills, ev, cnt):
        return True
    cur = o
    for j in range(j0, j1):
        if _walk_bar_nb(
            st, slots, errs, cur, do[j], dh[j], dl[j], dc[j], rule, dts[j], p, br, fills, ev, cnt
        ):
            return True
        cur = dc[j]
    if _walk_segment_nb(st, slots, errs, cur, c, dts[j1 - 1], p, br, fills, ev, cnt):
        return True
    refresh_triggers_nb(st, slots)
    return False


# --- Entry points on the engine/contexts.py groups (``Sim``, ``Records``, ``Detail``).
#
# The kernels above are real calls inside the path walk (each segment, each fill, each margin check),
# so they take plain arrays: numba passes a group as all of its arrays' fields, and handing every one
# of them ``Sim`` and ``Records`` whole (the rings, funding and equity buffers they never read) cost
# the bar loop ~5 % CPU (measured: ``run_bars_nb`` alone on ``gridctl bench``'s 500,000 bars, best of
# 8, alternating with the positional version). The entry points below are ``hot_kernel``s (LLVM
# inlines them into every caller) or, for those only the bar step calls (``path_nb``,
# ``detail_path_nb``, ``points_margin_check_nb``), ``inline_kernel``s (numba pastes them into their one
# caller): either way the groups cost nothing there.


@hot_kernel
def fill_slot_nb(sim, rec, side, idx, rank, price, liquidity, ts):
    """Book a fill of rung ``idx`` of ``side``: its entry (opens the lot with TP/SL) or its lot's TP/SL
    (``_fill_slot_nb``). The live session books every exchange fill with it."""
    _fill_slot_nb(
        sim.st, sim.slots, sim.errs, side, idx, rank, price, liquidity, ts, sim.p, sim.br, rec.fills, rec.ev,
        rec.cnt,
    )  # fmt: skip


@hot_kernel
def post_only_reject_nb(sim, rec, side, idx, price, qty, attempt, now, ts):
    """Entry of rung ``idx`` rejected as post-only (``_post_only_reject_nb``); True when the error
    tripped the breaker. The simulated venue and the live bridge both run it."""
    return _post_only_reject_nb(
        sim.st, sim.slots, sim.errs, side, idx, price, qty, attempt, now, ts, sim.p, rec.ev, rec.cnt
    )


@hot_kernel
def retry_price_nb(sim, rec, side, idx, p0, qty, j, now, ts):
    """Price of post-only retry ``j`` of the entry first tried at ``p0``; NaN when the retries stop
    (``_retry_price_nb``). The simulated venue and the live bridge both run it."""
    return _retry_price_nb(
        sim.st, sim.slots, sim.errs, side, idx, p0, qty, j, now, ts, sim.p, sim.br, rec.ev, rec.cnt
    )


@inline_kernel
def points_margin_check_nb(sim, rec, o, h, lo, c, ts):
    """Margin check at ``o, x1, x2, c`` for a bar without fills; returns liquidated."""
    return _points_margin_check_nb(
        sim.st, sim.slots, o, h, lo, c, ts, sim.p, sim.br, rec.fills, rec.ev, rec.cnt
    )


@inline_kernel
def path_nb(sim, rec, k, o, h, lo, c, ts):
    """Simulate bar k's trading on its own OHLC (``_path_nb``); returns True if liquidated."""
    return _path_nb(
        sim.st, sim.slots, sim.errs, k, o, h, lo, c, ts, sim.p, sim.br, rec.fills, rec.ev, rec.cnt
    )


@inline_kernel
def detail_path_nb(sim, rec, detail, k, o, c, ts, j0, j1):
    """Bar k's trading walked through its detail bars ``j0..j1-1`` (``_detail_path_nb``); returns True
    if liquidated."""
    return _detail_path_nb(
        sim.st, sim.slots, sim.errs, k, o, c, ts, detail.ts, detail.op, detail.hi, detail.lo, detail.cl, j0,
        j1, sim.p, sim.br, rec.fills, rec.ev, rec.cnt,
    )  # fmt: skip
